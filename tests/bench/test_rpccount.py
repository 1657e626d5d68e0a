"""``bench.rpccount``'s proxy passes every JSON-RPC request through unchanged (a batch stays one batch)
and counts calls by method and round trips by shape."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bench.rpccount import CountingProxy


@pytest.fixture
def upstream() -> Iterator[tuple[str, list[Any]]]:
    """A JSON-RPC server answering every call with its method's name (a transaction's: a hash)."""
    received: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(body)

            def answer(call: dict[str, Any]) -> dict[str, Any]:
                result = "0x" + "ab" * 32 if call["method"] == "eth_sendRawTransaction" else call["method"]
                return {"jsonrpc": "2.0", "id": call["id"], "result": result}

            data = json.dumps([answer(c) for c in body] if isinstance(body, list) else answer(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def _post(url: str, payload: Any) -> Any:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port))
    connection.request("POST", "/", json.dumps(payload), {"Content-Type": "application/json"})
    answer = json.loads(connection.getresponse().read())
    connection.close()
    return answer


def test_requests_pass_through_unchanged_and_are_counted(upstream: tuple[str, list[Any]]) -> None:
    url, received = upstream
    proxy = CountingProxy(url)
    try:
        start = time.time()
        single = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
        batch = [
            {"jsonrpc": "2.0", "id": 0, "method": "eth_getBlockByNumber", "params": ["latest", False]},
            {"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": ["0x1", False]},
        ]
        sent = {"jsonrpc": "2.0", "id": 7, "method": "eth_sendRawTransaction", "params": ["0x01"]}
        assert _post(proxy.url, single)["result"] == "eth_blockNumber"
        assert [r["result"] for r in _post(proxy.url, batch)] == ["eth_getBlockByNumber"] * 2
        assert _post(proxy.url, sent)["result"] == "0x" + "ab" * 32
        assert received == [single, batch, sent]  # a batch reaches the node as one batch

        methods, shapes = proxy.window(start, time.time())
        assert methods == {"eth_blockNumber": 1, "eth_getBlockByNumber": 2, "eth_sendRawTransaction": 1}
        assert shapes == {"eth_blockNumber": 1, "eth_getBlockByNumber x2": 1, "eth_sendRawTransaction": 1}
        assert proxy.window(time.time() + 1, time.time() + 2) == ({}, {})
        assert proxy.sent_txs == ["0x" + "ab" * 32]
        assert set(proxy.samples) == {"eth_blockNumber", "eth_getBlockByNumber x2", "eth_sendRawTransaction"}
    finally:
        proxy.close()
