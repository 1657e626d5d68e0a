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
import http.client
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from eth_abi import decode, encode
from eth_hash.auto import keccak as keccak_256
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
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


@functools.lru_cache(maxsize=4_096)
def _checksummed_word(hex40: str) -> str:
    """EIP-55 of 40 lowercase hex digits (an address read from an ABI word): what ``to_checksum_address``
    gives, without its input checks and conversions, which cost three times the keccak."""
    digest = keccak_256(hex40.encode("ascii")).hex()
    upper = [c.upper() if d in "89abcdef" else c for c, d in zip(hex40, digest[:40], strict=True)]
    return "0x" + "".join(upper)


def _normalise(kind: str, value: Any) -> Any:
    """What web3 returns for an ``eth_abi`` value of ``kind``: checksummed addresses, arrays as lists."""
    if kind == "address":
        return _checksummed(value)
    if kind.endswith("]") and isinstance(value, tuple | list):
        return [_normalise(kind[: kind.rindex("[")], v) for v in value]
    return value


_WordReader = Callable[[bytes], Any]
"""One 32-byte ABI word -> its value as ``_normalise`` gives it; ``_BAD`` for a word ``eth_abi`` would
refuse (the caller then decodes with ``eth_abi``, which raises its own error)."""

_BAD: Any = object()
_ZERO12 = bytes(12)


def _read_address(word: bytes) -> Any:
    if word[:12] != _ZERO12:
        return _BAD
    return _checksummed_word(word[12:].hex())


def _read_bool(word: bytes) -> Any:
    if word[:31] != _ZERO32[:31] or word[31] > 1:
        return _BAD
    return word[31] == 1


_ZERO32 = bytes(32)


def _uint_reader(bits: int) -> _WordReader:
    pad = 32 - bits // 8

    def read(word: bytes) -> Any:
        if pad and word[:pad] != _ZERO32[:pad]:
            return _BAD
        return int.from_bytes(word, "big")

    return read


def _bytes_reader(size: int) -> _WordReader:
    def read(word: bytes) -> Any:
        if word[size:] != _ZERO32[size:]:
            return _BAD
        return word[:size]

    return read


def _word_reader(kind: str) -> _WordReader | None:
    """A fixed-offset reader for a one-word static ``kind`` (address, bool, uintN, bytesN), or None."""
    if kind == "address":
        return _read_address
    if kind == "bool":
        return _read_bool
    if match := re.fullmatch(r"uint(\d+)", kind):
        bits = int(match.group(1))
        return _uint_reader(bits) if bits % 8 == 0 and 8 <= bits <= 256 else None
    if match := re.fullmatch(r"bytes(\d+)", kind):
        size = int(match.group(1))
        return _bytes_reader(size) if 1 <= size <= 32 else None
    return None


@dataclasses.dataclass(frozen=True)
class _Event:
    name: str
    indexed: tuple[tuple[str, str], ...]
    data: tuple[tuple[str, str], ...]
    # (name, reader) of the indexed and the data values, in order, when every one is a one-word static
    # type: such a log is read at fixed offsets (``EventDecoder._by_offsets``)
    words: tuple[tuple[str, _WordReader], ...] | None = None


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
            indexed = tuple((n, k) for n, k, x in named if x)
            data = tuple((n, k) for n, k, x in named if not x)
            readers = [(n, _word_reader(k)) for n, k in indexed + data]
            words = (
                tuple((n, r) for n, r in readers if r is not None)
                if all(r is not None for _, r in readers)
                else None
            )
            self._events[topic] = _Event(str(item["name"]), indexed, data, words)

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
        if event.words is not None:
            fast = self._by_offsets(event, topics, entry.get("data") or b"")
            if fast is not None:
                return event.name, fast
        args: dict[str, Any] = {}
        for (name, kind), topic in zip(event.indexed, topics[1:], strict=True):
            args[name] = _normalise(kind, decode([kind], bytes(HexBytes(topic)))[0])
        values = decode([k for _, k in event.data], bytes(HexBytes(entry.get("data") or b"")))
        for (name, kind), value in zip(event.data, values, strict=True):
            args[name] = _normalise(kind, value)
        return event.name, args

    @staticmethod
    def _by_offsets(event: _Event, topics: Sequence[Any], data: Any) -> dict[str, Any] | None:
        """The arguments of a log whose values are all one-word static types, read word by word with the
        checks ``eth_abi`` makes (padding, a bool's 0 or 1). None when a topic is not 32 bytes, the data is
        not exactly one word per value, or a word fails a check: ``eth_abi`` then decodes the log and
        raises, or accepts, exactly as it did before this path existed (``decode``)."""
        assert event.words is not None
        words = [topic if type(topic) is bytes else bytes(HexBytes(topic)) for topic in topics[1:]]
        data = data if type(data) is bytes else bytes(HexBytes(data))
        if len(data) != 32 * (len(event.words) - len(words)) or any(len(w) != 32 for w in words):
            return None
        words.extend(data[i : i + 32] for i in range(0, len(data), 32))
        args: dict[str, Any] = {}
        for (name, read), word in zip(event.words, words, strict=True):
            value = read(word)
            if value is _BAD:
                return None
            args[name] = value
        return args


def _dynamic(kind: str) -> bool:
    return kind in ("bytes", "string") or kind.endswith("[]") or kind.startswith("(")


def encode_call(fn_selector: bytes, types: Sequence[str], args: Sequence[Any]) -> bytes:
    return fn_selector + encode(list(types), list(args))


def quantity(value: Any, what: str = "the node") -> int:
    """A JSON-RPC quantity ("0x1a"; a dev node may answer a plain non-negative integer) of at most 256
    bits as an int. Anything else (a sign, spaces, a float, a bool, 65 hex digits or more) raises
    ``Web3RPCError`` naming ``what`` (the method or field that answered it), as web3's formatters refuse
    it: a node's block number or nonce is never taken on ``int()``'s looser terms."""
    if isinstance(value, str) and _QUANTITY.fullmatch(value):
        return int(value, 16)
    if type(value) is int and 0 <= value < 2**256:
        return value
    raise Web3RPCError(f"{what} answered {str(value)[:80]!r}: not a quantity")


_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")


def rpc_batch(w3: Web3, requests: Sequence[tuple[str, list[Any]]]) -> list[Any]:
    """The raw ``result`` of each JSON-RPC request, sent as one batch, in order. An error (of the batch or
    of any request) raises ``Web3RPCError``. Only reads go through here (a batch may be sent twice, below)."""
    if not requests:
        return []
    payload = [
        {"jsonrpc": "2.0", "id": index, "method": method, "params": params}
        for index, (method, params) in enumerate(requests)
    ]
    responses: Any = _post_plain(w3, payload)
    if responses is _NOT_PLAIN:
        responses = w3.provider.make_batch_request(list(requests))  # type: ignore[attr-defined]
    if not isinstance(responses, list):
        raise Web3RPCError(f"batch of {len(requests)} requests refused: {responses.get('error', responses)}")
    if len(responses) != len(requests):
        raise Web3RPCError(f"batch of {len(requests)} requests answered with {len(responses)} responses")
    if responses and isinstance(responses[0], dict) and isinstance(responses[0].get("id"), int):
        responses = sorted(responses, key=lambda r: r.get("id", 0) if isinstance(r, dict) else 0)
    out = []
    for (method, _), response in zip(requests, responses, strict=True):
        if not isinstance(response, dict) or "error" in response or "result" not in response:
            error = response.get("error", response) if isinstance(response, dict) else response
            raise Web3RPCError(f"{method} failed: {error}")
        out.append(response["result"])
    return out


_NOT_PLAIN: Any = object()
_MAX_RPC_REPLY = 256 * 1024 * 1024
"""The largest JSON-RPC reply read (a range's logs or a batch of receipts; a node's own caps are lower)."""


class _Connections(threading.local):
    """One kept-alive connection to the node per thread (the stages run on the loop's worker threads)."""

    def __init__(self) -> None:
        self.by_uri: dict[str, http.client.HTTPConnection] = {}


_CONNECTIONS = _Connections()
_MAX_NODES = 4
"""Nodes a thread keeps a connection to (an oracle talks to one)."""


def _post_plain(w3: Web3, payload: list[dict[str, Any]]) -> Any:
    """POST a JSON-RPC batch straight over ``http.client`` when the provider is a plain ``HTTPProvider``
    (no credentials in the URL): web3's session, middleware and batch machinery cost more CPU than the
    node's answer (a tenth of the oracle's time per order, docs/benchmarks.md). Any other provider:
    ``_NOT_PLAIN``, and the caller goes through web3. A kept-alive connection the node closed meanwhile
    is replaced and the batch sent once more (reads only: sending one twice changes nothing)."""
    provider = w3.provider
    if type(provider) is not HTTPProvider:
        return _NOT_PLAIN
    uri = str(provider.endpoint_uri)
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or parts.username or parts.password or not parts.hostname:
        return _NOT_PLAIN
    kwargs = getattr(provider, "_request_kwargs", None) or {}
    if set(kwargs) - {"timeout"}:
        return _NOT_PLAIN  # headers, proxies, certificates: web3's session knows what to do with them
    timeout = kwargs.get("timeout", 30)
    timeout = timeout[-1] if isinstance(timeout, tuple) else timeout
    body = json.dumps(payload, separators=(",", ":")).encode()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    for attempt in (1, 2):
        connection = _CONNECTIONS.by_uri.get(uri)
        reused = connection is not None
        if connection is None:
            if len(_CONNECTIONS.by_uri) >= _MAX_NODES:  # nodes come and go (tests): never hoard sockets
                for stale in _CONNECTIONS.by_uri.values():
                    stale.close()
                _CONNECTIONS.by_uri.clear()
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            connection = cls(parts.hostname, parts.port, timeout=float(timeout))
            _CONNECTIONS.by_uri[uri] = connection
        try:
            connection.request("POST", target, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read(_MAX_RPC_REPLY + 1)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            _CONNECTIONS.by_uri.pop(uri, None)
            if reused and attempt == 1:
                continue  # the node closed the idle connection: a new one, once
            raise Web3RPCError(
                f"JSON-RPC to {parts.hostname}:{parts.port}: {type(exc).__name__}: {exc}"
            ) from exc
        if len(data) > _MAX_RPC_REPLY:
            connection.close()
            _CONNECTIONS.by_uri.pop(uri, None)
            raise Web3RPCError(f"JSON-RPC reply larger than {_MAX_RPC_REPLY} bytes")
        if response.will_close:
            connection.close()
            _CONNECTIONS.by_uri.pop(uri, None)
        if response.status != 200:
            raise Web3RPCError(f"JSON-RPC answered HTTP {response.status}: {data[:200]!r}")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise Web3RPCError(f"JSON-RPC reply is not JSON: {data[:200]!r}") from exc
    raise AssertionError("unreachable")


def get_logs(w3: Web3, address: str, from_block: int, to_block: int) -> list[dict[str, Any]]:
    """``eth_getLogs`` of ``address`` over ``from_block..to_block`` as a raw JSON-RPC read, each entry in
    the shape web3's ``eth.get_logs`` gives (bytes as ``HexBytes``, numbers as ``int``, the address
    checksummed): web3's request and result formatters cost more than the node's answer. A node's error
    (a range too large, say) raises ``Web3RPCError`` with its message, as web3 does."""
    params = [{"address": address, "fromBlock": hex(from_block), "toBlock": hex(to_block)}]
    (raw,) = rpc_batch(w3, [("eth_getLogs", params)])
    if not isinstance(raw, list):
        raise Web3RPCError(f"eth_getLogs answered {str(raw)[:200]}")
    return [_log_entry(entry) for entry in raw]


def _log_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "address": _checksummed(str(entry["address"]).lower()),
        "topics": [HexBytes(topic) for topic in entry.get("topics") or ()],
        "data": HexBytes(entry.get("data") or "0x"),
        "blockNumber": quantity(entry["blockNumber"], "eth_getLogs blockNumber"),
        "blockHash": HexBytes(entry["blockHash"]),
        "transactionHash": HexBytes(entry["transactionHash"]),
        "transactionIndex": quantity(entry.get("transactionIndex", 0), "eth_getLogs transactionIndex"),
        "logIndex": quantity(entry["logIndex"], "eth_getLogs logIndex"),
        "removed": bool(entry.get("removed", False)),
    }


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

    @functools.cached_property
    def selector(self) -> bytes:
        """Computed once (a keccak): every settlement encodes a call."""
        return selector(f"{self.name}({','.join(self.types)})")

    def encode(self, *args: Any) -> bytes:
        return encode_call(self.selector, self.types, args)


@dataclasses.dataclass(frozen=True)
class RawCall:
    """A contract call already encoded: what ``TxManager.send`` estimates, signs and sends."""

    to: str
    data: bytes
