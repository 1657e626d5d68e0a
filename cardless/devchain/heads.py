"""``eth_subscribe newHeads`` for the dev node, over WebSocket on a port of its own.

The oracle wakes at once when a block is mined if its node announces blocks (``oracles.worker.
follow_heads``); otherwise it polls every 100 ms and reads the latest block once per tick for the
chain's time. anvil and geth serve WebSocket on the JSON-RPC port; the dev node's JSON-RPC is
``http.server``, so the subscription has a loopback port of its own (``DevNode.serve_heads``), given to
the oracle as ``CARDLESS_CHAIN_WS_URL``. Only ``eth_subscribe ["newHeads"]`` and ``eth_unsubscribe`` are
served; any other request is answered with an error, as a node without the method would.

A block is announced after it is mined and indexed: :meth:`HeadsServer.announce` only queues it (the
node's lock is held while mining), a thread of its own sends. A missed or late announcement changes
nothing but latency: subscribers read the chain itself.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from cardless.protocol.jsonlimits import loads_bounded

__all__ = ["HeadsServer", "header_json"]

_log = logging.getLogger(__name__)
_MAX_MESSAGE = 64 * 1024


def _hex(value: int) -> str:
    return hex(value)


def header_json(block: Any) -> dict[str, Any]:
    """A py-evm block's header as ``newHeads`` announces it (geth's field names, hex quantities)."""
    header = block.header
    fields: dict[str, Any] = {
        "number": _hex(header.block_number),
        "hash": "0x" + header.hash.hex(),
        "parentHash": "0x" + header.parent_hash.hex(),
        "timestamp": _hex(header.timestamp),
        "gasLimit": _hex(header.gas_limit),
        "gasUsed": _hex(header.gas_used),
        "miner": "0x" + header.coinbase.hex(),
        "stateRoot": "0x" + header.state_root.hex(),
        "transactionsRoot": "0x" + header.transaction_root.hex(),
        "receiptsRoot": "0x" + header.receipt_root.hex(),
        "logsBloom": "0x" + header.bloom.to_bytes(256, "big").hex(),
        "difficulty": _hex(header.difficulty),
        "extraData": "0x" + header.extra_data.hex(),
    }
    base_fee = getattr(header, "base_fee_per_gas", None)
    if base_fee is not None:
        fields["baseFeePerGas"] = _hex(base_fee)
    return fields


class HeadsServer:
    """A WebSocket server announcing each block to its ``newHeads`` subscribers."""

    def __init__(self, host: str, port: int = 0) -> None:
        self._subscribers: dict[ServerConnection, str] = {}
        self._lock = threading.Lock()
        self._next_id = 1
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._server: Server = serve(self._serve, host, port, max_size=_MAX_MESSAGE, compression=None)
        self.port = int(self._server.socket.getsockname()[1])
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="devnode-heads", daemon=True),
            threading.Thread(target=self._publish, name="devnode-heads-publish", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def announce(self, block: Any) -> None:
        """Queue ``block`` for the subscribers (cheap: called under the node's lock while mining)."""
        if self._subscribers:
            self._queue.put(header_json(block))

    def close(self) -> None:
        self._queue.put(None)
        self._server.shutdown()
        for thread in self._threads:
            thread.join(5)

    def _serve(self, connection: ServerConnection) -> None:
        try:
            for message in connection:
                reply = self._answer(connection, message)
                connection.send(json.dumps(reply))
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._subscribers.pop(connection, None)

    def _answer(self, connection: ServerConnection, message: str | bytes) -> dict[str, Any]:
        try:
            request = loads_bounded(message)
        except ValueError:  # not JSON, or nested past the limit (a JsonLimitError)
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
        if not isinstance(request, dict):
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "not a request"}}
        request_id, method, params = request.get("id"), request.get("method"), request.get("params")
        if method == "eth_subscribe" and params == ["newHeads"]:
            with self._lock:
                subscription = _hex(self._next_id)
                self._next_id += 1
                self._subscribers[connection] = subscription
            return {"jsonrpc": "2.0", "id": request_id, "result": subscription}
        if method == "eth_unsubscribe" and isinstance(params, list) and len(params) == 1:
            with self._lock:
                found = self._subscribers.get(connection) == params[0]
                if found:
                    del self._subscribers[connection]
            return {"jsonrpc": "2.0", "id": request_id, "result": found}
        error = {"code": -32601, "message": "only eth_subscribe newHeads and eth_unsubscribe are served here"}
        return {"jsonrpc": "2.0", "id": request_id, "error": error}

    def _publish(self) -> None:
        while (header := self._queue.get()) is not None:
            with self._lock:
                subscribers = list(self._subscribers.items())
            for connection, subscription in subscribers:
                note = {
                    "jsonrpc": "2.0",
                    "method": "eth_subscription",
                    "params": {"subscription": subscription, "result": header},
                }
                try:
                    connection.send(json.dumps(note))
                except ConnectionClosed:
                    with self._lock:
                        self._subscribers.pop(connection, None)
                except Exception:  # one subscriber's broken socket must not stop the others'
                    _log.exception("newHeads: could not announce a block")
