"""The escrow's ABI as the audit reads it: events by topic, functions by selector, decoded with eth-abi.

Built from the committed build output (``cardless.protocol.artifacts``), so a new event of a new
protocol version is decoded by name as soon as the artifact carries it; the audit's rules decide what
a name means.
"""

from __future__ import annotations

import dataclasses
from functools import cache, lru_cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import to_checksum_address
from eth_utils.abi import (
    event_abi_to_log_topic,
    function_abi_to_4byte_selector,
    get_abi_input_names,
    get_abi_input_types,
)

from cardless.protocol.artifacts import load_artifact

__all__ = ["Call", "EscrowAbi", "Event", "checksum", "escrow_abi", "hexstr", "normalise"]


@lru_cache(maxsize=1 << 16)
def checksum(address: str | bytes) -> str:
    """EIP-55 form, cached: a history names the same few buyers, merchants, tokens and signers over and
    over, and each conversion costs a keccak."""
    return str(to_checksum_address(address))


def hexstr(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def normalise(abi_type: str, value: Any) -> Any:
    """Addresses checksummed, everything else as eth-abi returns it (bytes, int, bool, tuples)."""
    if abi_type == "address":
        return checksum(value)
    if abi_type == "address[]":
        return tuple(checksum(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One decoded escrow log, with where it sits on the chain."""

    name: str
    args: dict[str, Any]
    block: int
    tx: str
    tx_index: int
    log_index: int

    @property
    def position(self) -> tuple[int, int, int]:
        return (self.block, self.tx_index, self.log_index)


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """Decoded calldata of an escrow function."""

    name: str
    args: dict[str, Any]


class EscrowAbi:
    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self.events: dict[bytes, tuple[str, list[tuple[str, str, bool]]]] = {}
        self.functions: dict[bytes, tuple[str, list[Any], list[str]]] = {}
        self.names: set[str] = set()
        self.event_names: set[str] = set()
        for item in abi:
            if item.get("type") == "event" and not item.get("anonymous"):
                inputs = [(i["name"], i["type"], bool(i.get("indexed"))) for i in item["inputs"]]
                self.events[event_abi_to_log_topic(item)] = (item["name"], inputs)  # type: ignore[arg-type]
                self.event_names.add(item["name"])
            elif item.get("type") == "function":
                selector = function_abi_to_4byte_selector(item)  # type: ignore[arg-type]
                types = get_abi_input_types(item)  # type: ignore[arg-type]
                self.functions[selector] = (item["name"], get_abi_input_names(item), types)  # type: ignore[arg-type]
                self.names.add(item["name"])

    def topic(self, name: str) -> str:
        for topic, (event_name, _) in self.events.items():
            if event_name == name:
                return hexstr(topic)
        raise KeyError(name)

    def decode_log(self, log: dict[str, Any]) -> Event | None:
        """The log decoded, or None for a topic this ABI does not know (or data that does not decode)."""
        topics = [bytes.fromhex(t[2:]) for t in log.get("topics", [])]
        if not topics or topics[0] not in self.events:
            return None
        name, inputs = self.events[topics[0]]
        indexed = [(n, t) for n, t, i in inputs if i]
        plain = [(n, t) for n, t, i in inputs if not i]
        if len(indexed) != len(topics) - 1:
            return None
        try:
            data = abi_decode([t for _, t in plain], bytes.fromhex(str(log["data"])[2:]))
            args = {n: normalise(t, v) for (n, t), v in zip(plain, data, strict=True)}
            for (n, t), topic in zip(indexed, topics[1:], strict=True):
                args[n] = normalise(t, abi_decode([t], topic)[0])
        except (DecodingError, ValueError, OverflowError):
            return None
        return Event(
            name=name,
            args=args,
            block=int(log["blockNumber"], 16),
            tx=str(log["transactionHash"]),
            tx_index=int(log["transactionIndex"], 16),
            log_index=int(log["logIndex"], 16),
        )

    def decode_call(self, data: bytes) -> Call | None:
        if len(data) < 4 or data[:4] not in self.functions:
            return None
        name, names, types = self.functions[data[:4]]
        try:
            values = abi_decode(types, data[4:])
        except (DecodingError, ValueError, OverflowError):
            return None
        return Call(name, dict(zip(names, values, strict=True)))

    def selector(self, name: str) -> bytes:
        for selector, (function_name, _, _) in self.functions.items():
            if function_name == name:
                return selector
        raise KeyError(name)


@cache
def escrow_abi() -> EscrowAbi:
    return EscrowAbi(load_artifact("CardlessEscrow").abi)
