"""The auditor's only door to the chain: raw JSON-RPC through a web3 provider, counted.

Everything the audit reads goes through :class:`ChainReader`, so the audit can report how many requests
it made, and tests can wrap it to present a tampered history. Answers stay raw (hex strings): the audit
decodes them itself with the escrow's ABI, so no web3 formatter or middleware sits between the node's
bytes and the verdict.

Logs are read in ranged ``eth_getLogs`` pages (:meth:`ChainReader.logs`): hosted nodes cap a request by
block range or by result count, so a refused range is halved and retried until one block is refused,
which is an error (a node that cannot return one block's logs cannot be audited through).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from web3 import Web3
from web3.types import RPCEndpoint

from cardless.audit._exceptions import RpcError

__all__ = ["DEFAULT_PAGE_BLOCKS", "ChainReader", "RpcStats"]

# Blocks per eth_getLogs request: what public endpoints accept (many cap at 2,000 or 10,000).
DEFAULT_PAGE_BLOCKS: Final = 2_000
# Requests per JSON-RPC batch: geth's default BatchRequestLimit is 1,000; stay well under.
_BATCH: Final = 200
# What nodes say when a range is too large (geth, Erigon, Alchemy, Infura, QuickNode, anvil, Ankr).
_RANGE_ERRORS: Final = (
    "too many",
    "range",
    "limit",
    "exceed",
    "query returned more than",
    "response size",
    "too large",
    "timeout",
    "timed out",
)
_TRANSIENT_RETRIES: Final = 3


@dataclasses.dataclass
class RpcStats:
    """Requests made: ``calls`` JSON-RPC calls, sent in ``http_requests`` round trips (batches count once)."""

    calls: int = 0
    http_requests: int = 0
    by_method: dict[str, int] = dataclasses.field(default_factory=dict)
    log_range_splits: int = 0

    def count(self, method: str, n: int = 1) -> None:
        self.calls += n
        self.by_method[method] = self.by_method.get(method, 0) + n


def _is_range_error(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _RANGE_ERRORS)


class ChainReader:
    """JSON-RPC reads for one escrow, with paging, batching and a request count."""

    def __init__(self, w3: Web3, *, page_blocks: int = DEFAULT_PAGE_BLOCKS, batch: bool = True) -> None:
        self.w3 = w3
        self.page_blocks = max(1, page_blocks)
        self.stats = RpcStats()
        self._batch = batch and hasattr(w3.provider, "make_batch_request")

    # ------------------------------------------------------------------ single requests

    def request(self, method: str, params: list[Any]) -> Any:
        """One call; a transport failure is retried a few times, an error answer raises RpcError."""
        for attempt in range(_TRANSIENT_RETRIES):
            self.stats.count(method)
            self.stats.http_requests += 1
            try:
                response = self.w3.provider.make_request(RPCEndpoint(method), params)
            except OSError as exc:  # connection reset, timeout: the node may be busy
                if attempt + 1 == _TRANSIENT_RETRIES:
                    raise RpcError(f"{method}: {exc}") from exc
                time.sleep(0.2 * (attempt + 1))
                continue
            if "error" in response:
                error = response["error"]
                message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
                raise RpcError(f"{method}: {message}")
            return response.get("result")
        raise AssertionError("unreachable")

    def many(self, method: str, params: Sequence[list[Any]]) -> list[Any]:
        """The same method for many parameter lists, in JSON-RPC batches where the provider has them."""
        if not params:
            return []
        if not self._batch:
            return [self.request(method, p) for p in params]
        out: list[Any] = []
        for start in range(0, len(params), _BATCH):
            chunk = params[start : start + _BATCH]
            self.stats.count(method, len(chunk))
            self.stats.http_requests += 1
            try:
                requests = [(RPCEndpoint(method), p) for p in chunk]
                responses = self.w3.provider.make_batch_request(requests)  # type: ignore[attr-defined]
            except OSError as exc:
                raise RpcError(f"{method} batch: {exc}") from exc
            if isinstance(responses, dict):  # the whole batch was refused: one by one
                out.extend(self.request(method, p) for p in chunk)
                continue
            by_id = sorted(responses, key=lambda r: int(r.get("id", 0)))
            for p, response in zip(chunk, by_id, strict=True):
                if "error" in response:
                    out.append(self.request(method, p))  # retried alone: its own error, or a transient one
                else:
                    out.append(response.get("result"))
        return out

    # ------------------------------------------------------------------ typed reads

    def chain_id(self) -> int:
        return int(self.request("eth_chainId", []), 16)

    def block_number(self, tag: str = "latest") -> int:
        if tag == "latest":
            return int(self.request("eth_blockNumber", []), 16)
        block = self.request("eth_getBlockByNumber", [tag, False])
        if block is None:
            raise RpcError(f"the node has no {tag!r} block")
        return int(block["number"], 16)

    def block_timestamps(self, numbers: Sequence[int]) -> dict[int, int]:
        wanted = sorted(set(numbers))
        blocks = self.many("eth_getBlockByNumber", [[hex(n), False] for n in wanted])
        out: dict[int, int] = {}
        for number, block in zip(wanted, blocks, strict=True):
            if block is None:
                raise RpcError(f"block {number} is missing")
            out[number] = int(block["timestamp"], 16)
        return out

    def transactions(self, hashes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Raw transactions by hash (``to`` and ``input`` are what the audit reads)."""
        wanted = list(dict.fromkeys(hashes))
        found = self.many("eth_getTransactionByHash", [[h] for h in wanted])
        out: dict[str, dict[str, Any]] = {}
        for tx_hash, tx in zip(wanted, found, strict=True):
            if tx is None:
                raise RpcError(f"transaction {tx_hash} is missing")
            out[tx_hash] = tx
        return out

    def call(self, to: str, data: bytes, block: int | str) -> bytes | None:
        """``eth_call``; None when it reverts (or the node refuses it)."""
        tag = hex(block) if isinstance(block, int) else block
        try:
            result = self.request("eth_call", [{"to": to, "data": "0x" + data.hex()}, tag])
        except RpcError:
            return None
        return bytes.fromhex(result[2:]) if isinstance(result, str) else None

    def eth_balance(self, address: str, block: int) -> int:
        return int(self.request("eth_getBalance", [address, hex(block)]), 16)

    def code(self, address: str, block: int | str = "latest") -> bytes:
        tag = hex(block) if isinstance(block, int) else block
        return bytes.fromhex(str(self.request("eth_getCode", [address, tag]))[2:])

    # ------------------------------------------------------------------ logs

    def get_logs(self, address: str, first: int, last: int, topics: list[Any] | None = None) -> list[Any]:
        """One ``eth_getLogs`` request (what :meth:`logs` pages over; tests override it to tamper)."""
        query: dict[str, Any] = {"address": address, "fromBlock": hex(first), "toBlock": hex(last)}
        if topics:
            query["topics"] = topics
        result = self.request("eth_getLogs", [query])
        return list(result or [])

    def logs(
        self,
        address: str,
        first: int,
        last: int,
        topics: list[Any] | None = None,
        on_page: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[int, int, list[Any]]]:
        """Pages ``(from, to, logs)`` covering ``first..last`` in order. A range the node refuses is halved
        (and the page size kept smaller afterwards); ``on_page(to)`` is called after each page."""
        start = first
        size = self.page_blocks
        while start <= last:
            end = min(last, start + size - 1)
            try:
                page = self.get_logs(address, start, end, topics)
            except RpcError as exc:
                if end == start or not _is_range_error(str(exc)):
                    raise
                size = max(1, (end - start + 1) // 2)
                self.stats.log_range_splits += 1
                continue
            yield start, end, page
            if on_page is not None:
                on_page(end)
            start = end + 1
