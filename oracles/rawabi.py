"""The oracle's hot path without web3's contract layer: escrow events decoded and ``eth_call`` s encoded
with ``eth_abi`` directly, and read calls sent as one raw JSON-RPC batch.

web3's ``ContractEvent.process_log`` and ``ContractFunction.call`` re-walk the ABI, validate and
normalise every argument on every call: at saturation that was about a third of the oracle's CPU
(docs/benchmarks.md). The decoded values are the same as web3's (addresses checksummed, ``bytes32`` as
bytes, integers as int, arrays as lists); ``tests/oracles/test_rawabi.py`` checks it against web3 for
every event of the escrow's ABI.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eth_abi import decode, encode
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import Web3RPCError

__all__ = [
    "EventDecoder",
    "RawCall",
    "RawFunction",
    "call_batch",
    "encode_call",
    "quantity",
    "rpc_batch",
    "selector",
]


def _canonical(item: Mapping[str, Any]) -> str:
    """An ABI input's canonical type (tuples spelled out)."""
    kind = str(item["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical(c) for c in item["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def selector(signature: str) -> bytes:
    """The 4-byte selector of ``name(type,...)``."""
    return bytes(function_signature_to_4byte_selector(signature))


@functools.lru_cache(maxsize=4_096)
def _checksummed(address: str) -> str:
    """EIP-55 costs a keccak per call; an event's addresses (merchant, token, the escrow's wallets) repeat."""
    return to_checksum_address(address)


def _normalise(kind: str, value: Any) -> Any:
    """What web3 returns for an ``eth_abi`` value of ``kind``: checksummed addresses, arrays as lists."""
    if kind == "address":
        return _checksummed(value)
    if kind.endswith("]") and isinstance(value, tuple | list):
        return [_normalise(kind[: kind.rindex("[")], v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class _Event:
    name: str
    indexed: tuple[tuple[str, str], ...]
    data: tuple[tuple[str, str], ...]


class EventDecoder:
    """topic0 -> event, for the non-anonymous events of an ABI whose indexed inputs are static types (the
    escrow's all are). ``decode`` answers None for a log of another event; the caller falls back to web3
    for an event it does not handle (``handles``)."""

    def __init__(self, abi: Iterable[Mapping[str, Any]]) -> None:
        self._events: dict[bytes, _Event] = {}
        for item in abi:
            if item.get("type") != "event" or item.get("anonymous"):
                continue
            inputs = list(item.get("inputs", []))
            kinds = [_canonical(i) for i in inputs]
            if any(i.get("indexed") and _dynamic(k) for i, k in zip(inputs, kinds, strict=True)):
                continue  # an indexed dynamic value is only its hash in the topic: left to web3
            topic = bytes(keccak(text=f"{item['name']}({','.join(kinds)})"))
            named = [(str(i["name"]), k, bool(i.get("indexed"))) for i, k in zip(inputs, kinds, strict=True)]
            self._events[topic] = _Event(
                name=str(item["name"]),
                indexed=tuple((n, k) for n, k, indexed in named if indexed),
                data=tuple((n, k) for n, k, indexed in named if not indexed),
            )

    def handles(self, topic: bytes) -> bool:
        return bytes(topic) in self._events

    def decode(self, entry: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """(event name, arguments) of a log entry as ``eth_getLogs`` returns it, or None."""
        topics = entry.get("topics") or ()
        if not topics:
            return None
        event = self._events.get(bytes(HexBytes(topics[0])))
        if event is None or len(topics) != 1 + len(event.indexed):
            return None
        args: dict[str, Any] = {}
        for (name, kind), topic in zip(event.indexed, topics[1:], strict=True):
            args[name] = _normalise(kind, decode([kind], bytes(HexBytes(topic)))[0])
        values = decode([k for _, k in event.data], bytes(HexBytes(entry.get("data") or b"")))
        for (name, kind), value in zip(event.data, values, strict=True):
            args[name] = _normalise(kind, value)
        return event.name, args


def _dynamic(kind: str) -> bool:
    return kind in ("bytes", "string") or kind.endswith("[]") or kind.startswith("(")


def encode_call(fn_selector: bytes, types: Sequence[str], args: Sequence[Any]) -> bytes:
    return fn_selector + encode(list(types), list(args))


def quantity(value: Any) -> int:
    """A JSON-RPC quantity ("0x1a"; some dev nodes answer a plain integer) as an int."""
    return int(value, 16) if isinstance(value, str) else int(value)


def rpc_batch(w3: Web3, requests: Sequence[tuple[str, list[Any]]]) -> list[Any]:
    """The raw ``result`` of each JSON-RPC request, sent as one batch, in order. An error (of the batch or
    of any request) raises ``Web3RPCError``."""
    if not requests:
        return []
    responses: Any = w3.provider.make_batch_request(list(requests))  # type: ignore[attr-defined]
    if not isinstance(responses, list):
        raise Web3RPCError(f"batch of {len(requests)} requests refused: {responses.get('error', responses)}")
    if len(responses) != len(requests):
        raise Web3RPCError(f"batch of {len(requests)} requests answered with {len(responses)} responses")
    out = []
    for (method, _), response in zip(requests, responses, strict=True):
        if "error" in response or "result" not in response:
            raise Web3RPCError(f"{method} failed: {response.get('error', response)}")
        out.append(response["result"])
    return out


def call_batch(w3: Web3, to: str, calls: Sequence[bytes], block: str = "latest") -> list[bytes]:
    """``eth_call`` of each calldata in ``calls`` against ``to``, in one JSON-RPC batch; the raw return
    data of each, in order. A call the node answers with an error raises ``Web3RPCError``."""
    if not calls:
        return []
    requests = [("eth_call", [{"to": to, "data": "0x" + bytes(data).hex()}, block]) for data in calls]
    return [bytes(HexBytes(result)) for result in rpc_batch(w3, requests)]


@dataclasses.dataclass(frozen=True)
class RawFunction:
    """One function of an ABI, encoded with ``eth_abi`` (``encode``) instead of through web3's contract
    layer, which matches the function by its arguments and validates them again on every call."""

    name: str
    types: tuple[str, ...]

    @classmethod
    def of(cls, abi: Iterable[Mapping[str, Any]], name: str) -> RawFunction:
        found = [i for i in abi if i.get("type") == "function" and i.get("name") == name]
        if len(found) != 1:
            raise ValueError(f"the ABI has {len(found)} functions named {name!r}")
        return cls(name, tuple(_canonical(i) for i in found[0].get("inputs", [])))

    @property
    def selector(self) -> bytes:
        return selector(f"{self.name}({','.join(self.types)})")

    def encode(self, *args: Any) -> bytes:
        return encode_call(self.selector, self.types, args)


@dataclasses.dataclass(frozen=True)
class RawCall:
    """A contract call already encoded: what ``TxManager.send`` estimates, signs and sends."""

    to: str
    data: bytes
