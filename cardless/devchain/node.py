"""The embedded development chain served over HTTP JSON-RPC on loopback.

:class:`DevNode` runs the in-process py-evm chain of :mod:`cardless.devchain.chain` behind a small threaded
HTTP server, so wallets, ``web3.HTTPProvider`` clients and the oracle talk to it exactly as they talk
to anvil or a Hardhat node. Requests (single or batch) go to eth-tester under one lock, because
eth-tester is not thread-safe.

The Ethereum methods (``eth_``, ``net_``, ``web3_``) are answered by :class:`~cardless.devchain.rpc.EthRpc`
in the shapes of the execution-apis specification, on chain id 31337. What the node adds around them
(see ../shared/TOOLCHAIN.md):

- A transaction-hash index (:class:`IndexedPyEVMBackend`): eth-tester finds a receipt by scanning
  blocks backwards from the head, so lookups slow down as the chain grows. The index maps each mined
  transaction to its block and position, so a lookup costs the same at block 10 and at block 100,000.
- Dev methods with anvil's shapes: ``evm_snapshot``/``evm_revert``, ``evm_increaseTime``,
  ``evm_setNextBlockTimestamp``, ``evm_mine`` (optionally at a timestamp), ``anvil_mine``/``hardhat_mine``.
  Blocks land at exactly the requested time (eth-tester's ``time_travel`` mines one second early).
- JSON-RPC 2.0 framing: batches (at most 1,000 requests, as geth), notifications, -32700/-32600/-32601;
  a body over 8 MiB is refused with HTTP 413 and JSON nested deeper than ``loads_bounded`` allows with
  -32600; error messages quote at most 240 characters of an argument. A fault of the node
  itself is logged and answered -32603 ``internal error``, never with the exception's text.

Departures from a real node, by design of eth-tester: every transaction is mined at once in its own
block, so there is no mempool (a future nonce is refused with ``nonce too high`` rather than queued,
and ``pending`` is the latest state at the next block's number and time); ``safe`` and ``finalized``
are the latest block; after a jump in time, blocks follow one second apart rather than with the wall
clock. The dev accounts' keys are public, so the server binds only to loopback.
"""

from __future__ import annotations

import collections
import dataclasses
import http.server
import ipaddress
import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Self

from eth.constants import ZERO_ADDRESS
from eth.exceptions import Revert as EVMRevert
from eth.vm.spoof import SpoofTransaction
from eth_account import Account
from eth_tester import EthereumTester
from eth_tester.backends.pyevm.serializers import serialize_transaction, serialize_transaction_receipt
from eth_tester.exceptions import (
    BlockNotFound,
    SnapshotNotFound,
    TransactionFailed,
    TransactionNotFound,
)
from eth_tester.exceptions import ValidationError as TesterValidationError
from eth_utils import encode_hex
from web3 import EthereumTesterProvider, Web3
from web3.types import RPCEndpoint, RPCResponse

from cardless.devchain.chain import DevChain, DevPyEVMBackend, dev_api_endpoints
from cardless.devchain.rpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    EthRpc,
    RpcError,
    quantity,
    raw_transaction_param,
    revert_message,
)
from cardless.protocol.jsonlimits import JsonLimitError, loads_bounded

if TYPE_CHECKING:
    from cardless.devchain.heads import HeadsServer

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DevNode", "IndexedPyEVMBackend"]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8545
DEV_ACCOUNT_COUNT: Final = 10  # eth-tester funds the keys 1..10 with 1,000,000 ETH each

_log = logging.getLogger(__name__)

_FEE_FIELDS: Final = ("gas_price", "max_fee_per_gas", "max_priority_fee_per_gas")
_MAX_BODY_BYTES: Final = 8 * 1024 * 1024
_MAX_BATCH: Final = 1_000
"""Requests in one batch (geth's default BatchRequestLimit): each runs under the node's one lock."""
_LOOPBACK_ORIGIN: Final = re.compile(r"https?://(?:127\.0\.0\.1|localhost|\[::1\])(?::[0-9]{1,5})?")
"""Browser origins allowed to read the JSON-RPC answers (CORS): pages served from this machine only."""


@dataclasses.dataclass(eq=False)
class _Submission:
    """A decoded transaction waiting to be mined, and then its hash or the error that refused it."""

    tx: Any
    result: bytes | RpcError | None = None


class _RevertedCall(TransactionFailed):  # type: ignore[misc]  # eth-tester ships no type hints
    """An ``eth_call`` that reverted; ``data`` holds the exact revert bytes."""

    def __init__(self, message: str, data: bytes) -> None:
        super().__init__(message)
        self.data = data


class IndexedPyEVMBackend(DevPyEVMBackend):
    """eth-tester's py-evm backend with a transaction-hash index.

    The index maps a transaction hash to ``(block number, position)`` and is filled on every mined
    block (transactions, ``time_travel``, withdrawals). Entries of blocks dropped by a snapshot revert
    are pruned; a lookup also re-checks the canonical block, so a stale entry is never served.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._tx_location: dict[bytes, tuple[int, int]] = {}
        self._block_txs: dict[int, list[bytes]] = {}
        self.on_block: Callable[[Any], None] | None = None
        """Called with every block once it is mined and indexed (``newHeads``), under the node's lock."""
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------ keeping the index

    def index_block(self, block: Any) -> None:
        hashes = [tx.hash for tx in block.transactions]
        self._block_txs[block.number] = hashes
        for position, tx_hash in enumerate(hashes):
            self._tx_location[tx_hash] = (block.number, position)
        if self.on_block is not None:
            self.on_block(block)

    def _prune_from(self, first_dropped: int) -> None:
        for number in [n for n in self._block_txs if n >= first_dropped]:
            for tx_hash in self._block_txs.pop(number):
                if self._tx_location.get(tx_hash, (None, 0))[0] == number:
                    del self._tx_location[tx_hash]

    def reset_to_genesis(self, *args: Any, **kwargs: Any) -> None:
        super().reset_to_genesis(*args, **kwargs)
        self._tx_location.clear()
        self._block_txs.clear()

    def mine_blocks(self, num_blocks: int = 1, coinbase: bytes = ZERO_ADDRESS) -> tuple[bytes, ...]:
        block_hashes: tuple[bytes, ...] = super().mine_blocks(num_blocks, coinbase)
        for block_hash in block_hashes:
            self.index_block(self.chain.get_block_by_hash(block_hash))
        return block_hashes

    def apply_withdrawals(self, withdrawals_list: list[dict[str, Any]]) -> None:
        super().apply_withdrawals(withdrawals_list)
        head = self.chain.get_block().number  # the pending block; the mined one is below it
        self.index_block(self.chain.get_canonical_block_by_number(head - 1))

    def revert_to_snapshot(self, snapshot: Any) -> None:
        super().revert_to_snapshot(snapshot)
        self._prune_from(self.chain.get_block().number)

    # ------------------------------------------------------------------ time

    def set_next_block_timestamp(self, timestamp: int) -> None:
        """Give the next block ``timestamp``, which must be after the latest block's."""
        head = self.chain.get_block()
        latest = self.chain.get_canonical_block_header_by_number(head.number - 1).timestamp
        if timestamp <= latest:
            raise TesterValidationError(f"timestamp: {timestamp} is not after the latest block's {latest}")
        self.chain.header = self.chain.header.copy(timestamp=timestamp)

    def time_travel(self, to_timestamp: int) -> int:
        """Mine an empty block at exactly ``to_timestamp``.

        eth-tester sets the pending header to ``to_timestamp - 1`` expecting mining to add a second,
        which py-evm no longer does, so its block lands one second early.
        """
        self.set_next_block_timestamp(to_timestamp)
        self.mine_blocks()
        return to_timestamp

    # ------------------------------------------------------------------ lookups

    def _find_transaction(self, transaction_hash: bytes) -> tuple[Any, Any, int]:
        pending = self.chain.get_block()
        for position, tx in enumerate(pending.transactions):
            if tx.hash == transaction_hash:
                return pending, tx, position
        location = self._tx_location.get(transaction_hash)
        if location is not None:
            number, position = location
            if number < pending.number:
                block = self.chain.get_canonical_block_by_number(number)
                if (
                    position < len(block.transactions)
                    and block.transactions[position].hash == transaction_hash
                ):
                    return block, block.transactions[position], position
        raise TransactionNotFound(
            f"No transaction found for transaction hash: {encode_hex(transaction_hash)}"
        )

    def get_transaction_by_hash(self, transaction_hash: bytes) -> Any:
        block, transaction, position = self._find_transaction(transaction_hash)
        is_pending = block.number == self.chain.get_block().number
        return serialize_transaction(block, transaction, position, is_pending)

    def get_transaction_receipt(self, transaction_hash: bytes) -> Any:
        block, transaction, position = self._find_transaction(transaction_hash)
        is_pending = block.number == self.chain.get_block().number
        receipts = block.get_receipts(self.chain.chaindb)
        return serialize_transaction_receipt(
            block, receipts, transaction, position, is_pending, self.chain.get_vm()
        )

    # ------------------------------------------------------------------ calls

    def call(self, transaction: dict[str, Any], block_number: Any = "latest") -> bytes:
        """As eth-tester's ``call``, with two differences that match geth and anvil.

        A revert keeps its exact bytes (:class:`_RevertedCall`): eth-tester decodes an
        ``Error(string)`` to its text and turns other reverts into the ``repr`` of the bytes, so a
        reason could not be told apart from a VM error message. And a call that names no fee runs at
        gas price zero against a zero base fee, so the sender needs no ETH (eth-tester charges 1 gwei).
        """
        if "gas" not in transaction:
            transaction = {**transaction, "gas": self._max_available_gas()}
        unsigned = self._get_normalized_and_unsigned_evm_transaction(transaction, block_number)
        header = self._header_for(block_number)
        overrides: dict[str, Any] = {"from_": transaction["from"]}
        if not any(key in transaction for key in _FEE_FIELDS):
            overrides.update(gas_price=0, max_fee_per_gas=0, max_priority_fee_per_gas=0)
            header = header.copy(base_fee_per_gas=0)
        state = self.chain.get_vm(at_header=header).state
        snapshot = state.snapshot()
        try:
            computation = state.apply_transaction(SpoofTransaction(unsigned, **overrides))
        finally:
            state.revert(snapshot)
        if computation.is_error:
            error = computation.error
            if isinstance(error, EVMRevert):
                data = bytes(error.args[0]) if error.args else b""
                raise _RevertedCall(revert_message(data), data)
            raise TransactionFailed(str(error))
        return bytes(computation.output)

    def _header_for(self, block_number: Any) -> Any:
        head = self.chain.get_block()
        if block_number in ("latest", "safe", "finalized"):
            return self.chain.get_canonical_block_header_by_number(max(0, head.number - 1))
        if block_number == "earliest":
            return self.chain.get_canonical_block_header_by_number(0)
        if block_number == "pending":
            return head.header
        if isinstance(block_number, int) and 0 <= block_number < head.number:
            return self.chain.get_canonical_block_header_by_number(block_number)
        raise BlockNotFound(f"No block found for block number: {block_number}")


class _LockedEthereumTesterProvider(EthereumTesterProvider):
    """The in-process provider, serialised with the HTTP server on the node's lock."""

    def __init__(self, tester: EthereumTester, lock: threading.RLock) -> None:
        super().__init__(tester, api_endpoints=dev_api_endpoints())
        self._lock = lock

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self._lock:
            return super().make_request(method, params)


class DevNode:
    """An in-process py-evm chain served over JSON-RPC at ``http://host:port`` (loopback only).

    ``port=0`` picks a free port; read :attr:`url` after :meth:`start`. The node is also usable in
    process: :attr:`chain` is a :class:`~cardless.devchain.chain.DevChain` whose ``w3`` shares the lock, and
    :meth:`handle` answers a decoded JSON-RPC request without HTTP. Hold :attr:`lock` when driving
    ``chain.tester`` directly while the server runs.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        if not _is_loopback(host):
            raise ValueError(f"host: {host!r} is not a loopback address; the dev accounts' keys are public")
        self.host = host
        self.port = port
        self.lock = threading.RLock()
        backend = IndexedPyEVMBackend()
        self.backend = backend
        tester = EthereumTester(backend)
        # Built here rather than by cardless.devchain.chain.start_devchain, which takes no backend.
        accounts = [Account.from_key(i.to_bytes(32, "big")) for i in range(1, DEV_ACCOUNT_COUNT + 1)]
        w3 = Web3(_LockedEthereumTesterProvider(tester, self.lock))
        known = set(w3.eth.accounts)
        missing = [a.address for a in accounts if a.address not in known]
        if missing:
            raise RuntimeError(f"eth-tester no longer funds the default keys: {missing}")
        self.chain = DevChain(w3=w3, tester=tester, accounts=accounts)
        self.rpc = EthRpc(tester, backend.account_keys)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._heads: HeadsServer | None = None
        self._submissions: collections.deque[_Submission] = collections.deque()
        self._handlers: dict[str, Callable[[list[Any]], Any]] = {
            "evm_snapshot": lambda _: hex(self.chain.tester.take_snapshot()),
            "evm_revert": self._revert,
            "evm_increaseTime": self._increase_time,
            "evm_setNextBlockTimestamp": self._set_next_timestamp,
            "evm_mine": self._evm_mine,
            "anvil_mine": self._mine_many,
            "hardhat_mine": self._mine_many,
        }

    # ------------------------------------------------------------------ lifecycle

    @property
    def chain_id(self) -> int:
        return int(self.backend.chain.chain_id)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the node is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._server.server_address[1]}"

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the node is already started")
        self._server = _Server((self.host, self.port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="devnode", daemon=True
        )
        self._thread.start()
        _log.info("dev chain %d serving JSON-RPC at %s", self.chain_id, self.url)
        return self

    def serve_heads(self, port: int = 0) -> str:
        """Announce every block to ``eth_subscribe newHeads`` subscribers over WebSocket on ``port`` of
        the node's host (0: a free one); the ``ws://`` URL (:mod:`cardless.devchain.heads`)."""
        if self._heads is None:
            from cardless.devchain.heads import HeadsServer

            self._heads = HeadsServer(self.host, port)
            self.backend.on_block = self._heads.announce
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self._heads.port}"

    def stop(self) -> None:
        heads, self._heads = self._heads, None
        if heads is not None:
            self.backend.on_block = None
            heads.close()
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ JSON-RPC

    def handle(self, payload: Any) -> Any:
        """Answer a decoded JSON-RPC request or batch; None when nothing is owed (only notifications)."""
        if isinstance(payload, list):
            if not payload:
                return _error_response(None, RpcError(INVALID_REQUEST, "empty batch"))
            if len(payload) > _MAX_BATCH:
                message = f"batch of {len(payload)} requests; the limit is {_MAX_BATCH}"
                return _error_response(None, RpcError(INVALID_REQUEST, message))
            responses = [r for r in (self._handle_one(item) for item in payload) if r is not None]
            return responses or None
        return self._handle_one(payload)

    def handle_bytes(self, body: bytes) -> bytes | None:
        try:
            payload = loads_bounded(body)
        except JsonLimitError as exc:
            response: Any = _error_response(None, RpcError(INVALID_REQUEST, str(exc)))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            response = _error_response(None, RpcError(PARSE_ERROR, f"parse error: {exc}"))
        else:
            response = self.handle(payload)
        return None if response is None else json.dumps(response).encode()

    def _handle_one(self, request: Any) -> dict[str, Any] | None:
        if not isinstance(request, dict):
            return _error_response(None, RpcError(INVALID_REQUEST, "a request must be a JSON object"))
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params", [])
        if not isinstance(method, str):
            # Not a request at all, so not a notification either: answered, with a null id if it has none
            # (JSON-RPC 2.0 section 5).
            return _error_response(request_id, RpcError(INVALID_REQUEST, "method: missing or not a string"))
        try:
            if params is None:
                params = []
            if not isinstance(params, list):
                raise RpcError(INVALID_PARAMS, "params: only positional (array) params are supported")
            if method == "eth_sendRawTransaction":
                result = self._send_raw_transaction(params)  # takes the lock itself, to mine
            else:
                with self.lock:
                    result = self._dispatch(method, params)
        except RpcError as exc:
            error = exc
        except Exception as exc:
            error = _error_from_exception(method, exc)
        else:
            if "id" not in request:
                return None
            return {"jsonrpc": "2.0", "id": request_id, "result": result}
        if "id" not in request:
            return None
        return _error_response(request_id, error)

    def _dispatch(self, method: str, params: list[Any]) -> Any:
        handler = self._handlers.get(method) or self.rpc.methods.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available")
        return handler(params)

    def _send_raw_transaction(self, params: list[Any]) -> str:
        """Group commit: the transaction is decoded and its signature recovered outside the lock, queued,
        and mined before the answer. Whoever holds the lock next mines everything queued by then in one
        block, so transactions sent while a block is being mined share the next one: under load a block
        per batch, alone a block per transaction (:mod:`cardless.devchain.mining`)."""
        submission = _Submission(self.rpc.decode_raw(raw_transaction_param(params)))
        self._submissions.append(submission)
        with self.lock:
            if submission.result is None:
                batch: list[_Submission] = []
                while self._submissions:
                    batch.append(self._submissions.popleft())
                try:
                    results = self.rpc.mine([queued.tx for queued in batch])
                except Exception:
                    for queued in batch:  # the other senders learn nothing of the fault; it is logged once
                        queued.result = RpcError(INTERNAL_ERROR, "internal error")
                    raise
                for queued, mined in zip(batch, results, strict=True):
                    queued.result = mined
        outcome = submission.result
        if isinstance(outcome, RpcError):
            raise outcome
        assert outcome is not None
        return encode_hex(outcome)

    # ------------------------------------------------------------------ dev methods (anvil's shapes)

    def _revert(self, params: list[Any]) -> bool:
        if not params:
            raise RpcError(INVALID_PARAMS, "params: expected [snapshotId]")
        try:
            self.chain.tester.revert_to_snapshot(quantity(params[0], "snapshotId"))
        except SnapshotNotFound:
            return False
        return True

    def _pending_timestamp(self) -> int:
        return int(self.chain.tester.get_block_by_number("pending")["timestamp"])

    def _set_next_timestamp(self, params: list[Any]) -> None:
        if not params:
            raise RpcError(INVALID_PARAMS, "params: expected [timestamp]")
        self.backend.set_next_block_timestamp(quantity(params[0], "timestamp"))

    def _increase_time(self, params: list[Any]) -> str:
        """Move the next block's time ``seconds`` ahead; returns the seconds added (as anvil)."""
        if not params:
            raise RpcError(INVALID_PARAMS, "params: expected [seconds]")
        seconds = quantity(params[0], "seconds")
        if seconds < 0:
            raise RpcError(INVALID_PARAMS, "seconds: time only moves forward")
        if seconds:
            self.backend.set_next_block_timestamp(self._pending_timestamp() + seconds)
        return hex(seconds)

    def _mine_at(self, timestamp: int) -> None:
        self.backend.set_next_block_timestamp(timestamp)
        self.chain.tester.mine_blocks(1)

    def _evm_mine(self, params: list[Any]) -> str:
        """``evm_mine``, ``evm_mine [timestamp]`` or anvil's ``evm_mine [{timestamp, blocks}]``."""
        options = params[0] if params else None
        if options is None:
            self.chain.tester.mine_blocks(1)
        elif isinstance(options, dict):
            blocks = quantity(options.get("blocks", 1), "blocks")
            if "timestamp" in options:
                self._mine_at(quantity(options["timestamp"], "timestamp"))
                blocks -= 1
            if blocks > 0:
                self.chain.tester.mine_blocks(blocks)
        else:
            self._mine_at(quantity(options, "timestamp"))
        return "0x0"

    def _mine_many(self, params: list[Any]) -> None:
        """``anvil_mine [blocks, interval]``: ``blocks`` empty blocks, ``interval`` seconds apart."""
        blocks = quantity(params[0], "blocks") if params and params[0] is not None else 1
        interval = quantity(params[1], "interval") if len(params) > 1 and params[1] is not None else None
        if blocks < 1:
            raise RpcError(INVALID_PARAMS, "blocks: must be at least 1")
        if interval is None:
            self.chain.tester.mine_blocks(blocks)
            return
        if interval < 1:
            raise RpcError(INVALID_PARAMS, "interval: must be at least 1 second")
        for _ in range(blocks):
            latest = int(self.chain.tester.get_block_by_number("latest")["timestamp"])
            self._mine_at(latest + interval)


def _error_response(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.as_error()}


def _error_from_exception(method: Any, exc: Exception) -> RpcError:
    if isinstance(exc, TesterValidationError):  # the dev methods' own checks (timestamps)
        return RpcError(INVALID_PARAMS, str(exc))
    _log.exception("dev node: %s failed", method)  # a fault of the node: the client learns nothing of it
    return RpcError(INTERNAL_ERROR, "internal error")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog (socketserver's default is 5): 32 wallets connecting at once had their
    # connections reset (bench/loadgen.py).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], node: DevNode) -> None:
        self.node = node
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: web3's requests session reuses the connection
    timeout = 60  # an idle keep-alive connection frees its thread after this many seconds
    disable_nagle_algorithm = True  # headers and body go out as two writes; Nagle would hold the body

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(411, b"")
            return
        if length > _MAX_BODY_BYTES:
            self._send(413, b"")
            self.close_connection = True
            return
        body = self.rfile.read(length)
        response = self.server.node.handle_bytes(body)
        if response is None:
            self._send(204, b"")
        else:
            self._send(200, response, "application/json")

    def do_OPTIONS(self) -> None:  # CORS pre-flight from browser dapps
        self._send(204, b"")

    def do_GET(self) -> None:
        self._send(405, b'{"error":"JSON-RPC takes POST"}', "application/json")

    def _send(self, status: int, body: bytes, content_type: str | None = None) -> None:
        self.send_response(status)
        # The node signs for its unlocked dev accounts (eth_sendTransaction), so any web page could spend
        # them if every origin were allowed: only pages served from this machine may read the answers.
        origin = self.headers.get("Origin", "")
        if _LOOPBACK_ORIGIN.fullmatch(origin):
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "Content-Type")
        self.send_header("Vary", "Origin")
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)
