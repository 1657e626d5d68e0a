"""The raw decoder and calls of the oracle's hot path (oracles.rawabi) give what web3's contract layer
gives: every event of the escrow's ABI, with random values, decoded both ways."""

from __future__ import annotations

import random
from typing import Any

import pytest
from eth_abi import encode
from eth_abi.exceptions import NonEmptyPaddingBytes
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3

from cardless.protocol.artifacts import load_artifact
from oracles.rawabi import EventDecoder, RawFunction, _canonical, selector

ESCROW = to_checksum_address("0x" + "55" * 20)


def _value(kind: str, rng: random.Random) -> Any:
    if kind.endswith("[]"):
        return [_value(kind[:-2], rng) for _ in range(rng.randint(0, 3))]
    if kind == "address":
        return to_checksum_address(rng.randbytes(20))
    if kind == "bool":
        return rng.random() < 0.5
    if kind.startswith("bytes"):
        return rng.randbytes(int(kind[5:]))
    if kind.startswith("uint"):
        return rng.getrandbits(int(kind[4:]))
    raise AssertionError(f"no generator for {kind}")


def _log(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    kinds = [_canonical(i) for i in event["inputs"]]
    values = [_value(k, rng) for k in kinds]
    topics = [keccak(text=f"{event['name']}({','.join(kinds)})")]
    indexed = [i["indexed"] for i in event["inputs"]]
    topics += [encode([k], [v]) for x, k, v in zip(indexed, kinds, values, strict=True) if x]
    data = encode(
        [k for i, k in zip(event["inputs"], kinds, strict=True) if not i["indexed"]],
        [v for i, v in zip(event["inputs"], values, strict=True) if not i["indexed"]],
    )
    return {
        "address": ESCROW,
        "blockHash": HexBytes(rng.randbytes(32)),
        "blockNumber": rng.randint(1, 10**6),
        "data": HexBytes(data),
        "logIndex": rng.randint(0, 99),
        "topics": [HexBytes(t) for t in topics],
        "transactionHash": HexBytes(rng.randbytes(32)),
        "transactionIndex": 0,
        "removed": False,
    }


def test_every_escrow_event_decodes_as_web3_decodes_it() -> None:
    abi = load_artifact("CardlessEscrow").abi
    escrow = Web3().eth.contract(address=ESCROW, abi=abi)
    decoder = EventDecoder(abi)
    rng = random.Random(12)
    events = [item for item in abi if item.get("type") == "event"]
    assert len(events) > 20
    for event in events:
        for _ in range(5):
            entry = _log(event, rng)
            expected = getattr(escrow.events, event["name"])().process_log(entry)
            got = decoder.decode(entry)
            assert got is not None, event["name"]
            assert got[0] == expected["event"]
            assert got[1] == dict(expected["args"]), event["name"]
            assert [type(v) for v in got[1].values()] == [type(v) for v in dict(expected["args"]).values()]
    # a log of another contract's event is not decoded
    other = _log({"name": "Transfer", "inputs": [{"name": "x", "type": "uint256", "indexed": False}]}, rng)
    assert decoder.decode(other) is None


def test_selectors_match_the_abi() -> None:
    escrow = Web3().eth.contract(address=ESCROW, abi=load_artifact("CardlessEscrow").abi)
    order_id = bytes(range(32))
    assert (
        escrow.encode_abi("orderStatus", [order_id])
        == "0x" + (selector("orderStatus(bytes32)") + encode(["bytes32"], [order_id])).hex()
    )


def test_the_settlement_calls_encode_as_web3_encodes_them() -> None:
    abi = load_artifact("CardlessEscrow").abi
    escrow = Web3().eth.contract(address=ESCROW, abi=abi)
    rng = random.Random(7)
    for name in ("settle", "settleBatch", "refund", "orderStatus", "oracleThreshold"):
        (item,) = [i for i in abi if i.get("type") == "function" and i["name"] == name]
        fn = RawFunction.of(abi, name)
        args = [_arg(i, rng) for i in item["inputs"]]
        assert "0x" + fn.encode(*args).hex() == escrow.encode_abi(name, args), name


def _arg(item: dict[str, Any], rng: random.Random) -> Any:
    kind = item["type"]
    if kind.startswith("tuple"):
        one = lambda: tuple(_arg(c, rng) for c in item["components"])  # noqa: E731
        return [one() for _ in range(rng.randint(1, 3))] if kind.endswith("[]") else one()
    if kind == "bytes[]":
        return [rng.randbytes(65) for _ in range(rng.randint(1, 3))]
    return _value(kind, rng)


def test_raw_reads_keep_one_connection_and_survive_the_node_closing_it() -> None:
    """``rpc_batch`` over ``http.client``: one kept-alive connection for many reads, a new one (the read
    sent once more) when the node closed the idle one, answers matched by id, errors raised."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import pytest
    from web3 import HTTPProvider
    from web3.exceptions import Web3RPCError

    from oracles.rawabi import rpc_batch

    peers: list[tuple[str, int]] = []

    class Node(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            peers.append(self.client_address)
            batch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            replies = [
                {"jsonrpc": "2.0", "id": r["id"], "error": {"code": -1, "message": "no"}}
                if r["method"] == "bad"
                else {"jsonrpc": "2.0", "id": r["id"], "result": r["params"][0]}
                for r in reversed(batch)  # out of order, as a batch may come back
            ]
            body = json.dumps(replies).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if len(peers) == 3:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Node)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        w3 = Web3(HTTPProvider(f"http://127.0.0.1:{server.server_address[1]}", request_kwargs={"timeout": 5}))
        for n in range(5):
            assert rpc_batch(w3, [("echo", [n]), ("echo", [n + 1])]) == [n, n + 1]
        with pytest.raises(Web3RPCError, match="bad failed"):
            rpc_batch(w3, [("echo", [1]), ("bad", [2])])
    finally:
        server.shutdown()
        server.server_close()
    assert len({port for _, port in peers[:3]}) == 1  # three reads, one connection
    assert peers[3][1] != peers[2][1]  # the node closed it: a new one


def _outcome(decoder: EventDecoder, entry: dict[str, Any]) -> Any:
    try:
        return ("ok", decoder.decode(entry))
    except Exception as exc:  # the refusal itself is compared: its type and its words
        return ("refused", type(exc), str(exc))


def test_fixed_offset_reads_refuse_and_accept_exactly_as_eth_abi() -> None:
    """A log of one-word static values is read at fixed offsets; every malformed variant (padding that is
    not zero, a bool of 2, data a byte short or a word long, a topic of 31 bytes) gets the answer the
    ``eth_abi`` path gives: the same values, or the same error naming the same bytes."""
    import dataclasses

    abi = load_artifact("CardlessEscrow").abi
    fast = EventDecoder(abi)
    slow = EventDecoder(abi)
    slow._events = {t: dataclasses.replace(e, words=None) for t, e in slow._events.items()}
    on_offsets = [e.name for e in fast._events.values() if e.words is not None]
    assert {"OrderPaid", "OrderSettled"} <= set(on_offsets)
    rng = random.Random(22)
    events = {item["name"]: item for item in abi if item.get("type") == "event"}
    for name in on_offsets:
        for _ in range(20):
            entry = _log(events[name], rng)
            good = _outcome(fast, entry)
            assert good[0] == "ok" and good == _outcome(slow, entry), name
            words = len(entry["data"]) // 32
            data = bytearray(entry["data"])
            variants: list[dict[str, Any]] = [
                {**entry, "data": HexBytes(data[:-1])},
                {**entry, "data": HexBytes(data + bytes(32))},
                {**entry, "data": HexBytes(data + b"\x01")},
            ]
            for word in range(words):
                for byte in (0, 11, 12, 30, 31):
                    bad = bytearray(data)
                    bad[32 * word + byte] ^= rng.randint(1, 255)
                    variants.append({**entry, "data": HexBytes(bad)})
            for index in range(1, len(entry["topics"])):
                topics = list(entry["topics"])
                topics[index] = HexBytes(bytes([rng.randint(1, 255)]) + bytes(topics[index])[1:])
                variants.append({**entry, "topics": topics})
                topics = list(entry["topics"])
                topics[index] = HexBytes(bytes(topics[index])[1:])
                variants.append({**entry, "topics": topics})
            refused = 0
            for variant in variants:
                got = _outcome(fast, variant)
                assert got == _outcome(slow, variant), (name, variant)
                refused += got[0] == "refused"
            assert refused > 0 or not fast._events[bytes(entry["topics"][0])].words, name


def test_an_order_paid_log_with_dirty_address_padding_is_refused_naming_the_bytes() -> None:
    abi = load_artifact("CardlessEscrow").abi
    (paid,) = [i for i in abi if i.get("type") == "event" and i["name"] == "OrderPaid"]
    entry = _log(paid, random.Random(3))
    data = bytearray(entry["data"])
    data[0] = 0x01  # the token word (the first data value, an address) with a non-zero padding byte
    with pytest.raises(NonEmptyPaddingBytes, match="Padding bytes were not empty"):
        EventDecoder(abi).decode({**entry, "data": HexBytes(data)})
