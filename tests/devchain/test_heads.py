"""The dev node's ``eth_subscribe newHeads`` over WebSocket (``cardless.devchain.heads``): what lets the
embedded system's oracle wake on each block instead of polling. The header announced is the block the
node then serves over JSON-RPC."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from cardless.devchain.node import DevNode


@pytest.fixture(scope="module")
def node() -> Iterator[DevNode]:
    with DevNode(port=0) as running:
        yield running


def rpc(node: DevNode, method: str, *params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    return httpx.post(node.url, json=body, timeout=10).json()["result"]


def ask(ws: ClientConnection, request_id: int, method: str, params: list[Any]) -> dict[str, Any]:
    ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
    reply: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return reply


def test_each_mined_block_is_announced_to_subscribers(node: DevNode) -> None:
    url = node.serve_heads()
    assert url.startswith("ws://127.0.0.1:") and node.serve_heads() == url  # one server per node
    with connect(url) as ws:
        subscribed = ask(ws, 7, "eth_subscribe", ["newHeads"])
        assert subscribed["id"] == 7
        subscription = subscribed["result"]
        rpc(node, "evm_mine")
        rpc(node, "evm_mine")
        heads = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
        latest = rpc(node, "eth_getBlockByNumber", "latest", False)
        for note in heads:
            assert note["method"] == "eth_subscription"
            assert note["params"]["subscription"] == subscription
        first, second = (note["params"]["result"] for note in heads)
        assert int(second["number"], 16) == int(first["number"], 16) + 1 == int(latest["number"], 16)
        for field in ("hash", "parentHash", "timestamp", "stateRoot", "baseFeePerGas", "gasLimit"):
            assert second[field] == latest[field], field
        assert second["parentHash"] == first["hash"]

        # Not a JSON-RPC endpoint: anything but the subscription is refused, and the socket stays open.
        refused = ask(ws, 8, "eth_blockNumber", [])
        assert refused["error"]["code"] == -32601
        assert ask(ws, 9, "eth_unsubscribe", [subscription]) == {"jsonrpc": "2.0", "id": 9, "result": True}
        rpc(node, "evm_mine")
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)  # unsubscribed: nothing more is announced


def test_hostile_messages_get_an_error_and_the_socket_stays_open(node: DevNode) -> None:
    """Nested past the JSON limit, not JSON, not an object, a huge method name, or past the 64 KiB frame
    limit: an error for each (the last closes that connection), and the server still serves."""
    url = node.serve_heads()
    with connect(url) as ws:
        ws.send("[" * 30_000 + "]" * 30_000)  # past the recursion limit of a recursive parser
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == -32700
        ws.send("not json")
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == -32700
        ws.send("[1, 2]")
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == -32600
        long = ask(ws, 1, "x" * 50_000, [])
        assert long["error"]["code"] == -32601 and len(long["error"]["message"]) < 200  # not echoed back
        assert ask(ws, 2, "eth_subscribe", ["newHeads"])["result"].startswith("0x")
    with connect(url) as ws:
        ws.send("x" * (65 * 1024))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    with connect(url) as ws:
        assert ask(ws, 3, "eth_subscribe", ["newHeads"])["result"].startswith("0x")
