"""The co-signer: a second oracle proof key, in a process of its own, that signs only what it has checked.

With the escrow's ``oracleThreshold`` at 2, a settlement or a refund needs this key's signature as well as
the oracle's. The co-signer is not a blind signer: for every order it is asked about it reads, itself,

- the chain: the order's ``OrderPaid`` event in the payment transaction the request names (emitted by
  *its own* deployment's escrow, under its confirmation depth), so ids, parties and amounts come from the
  chain and not from the request; and ``orderStatus`` is still ``Paid``;
- the clock: a fulfilment's ``fulfilledAt`` is not after the order's ``fulfilmentDeadline``, nor after the
  chain's time, and the settlement window (``fulfilmentDeadline + SETTLEMENT_GRACE``) is still open;
- the provider, through its own adapters (a status ``query`` by our order id, the provider's idempotency key;
  never a ``submit``): for a fulfilment, the named provider reports the top-up succeeded, and the receipt
  hash being signed is the hash of the receipt the co-signer rebuilds from that answer and the on-chain
  order (so the SKU, the credited amount, the account commitment and the completion time are the
  provider's); the SKU the provider credited is the one the buyer paid for (``skuHash``);
  for a refund, no configured provider reports a delivery that could still settle, and either every one
  answers "failed" / "reversed" / "no such order", or the order is past its deadline.

It keeps a journal (an SQLite file of its own, ``CoSignerJournal``) of every order it signed for, written
and committed *before* the signature leaves the process: it never signs a refund for an order it signed a
fulfilment for, nor the reverse, nor a second, different fulfilment for one order.

Requests are authenticated with an HMAC-SHA256 of the method, path, body, a timestamp and a nonce under a
secret shared with the oracle (``RequestAuth``): a request older than the tolerance, or a nonce seen before,
is refused, so a captured request cannot be replayed. The HTTP serving lives in the CLI layer
(``cardless.cli.cosigner_server``): the ``oracles`` package imports no web framework.

The wire format, the authentication and the errors are in ``oracles.cosigner_wire``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import TransactionNotFound
from web3.logs import DISCARD

from adapters import ProviderAdapter, TopupResult, TopupStatus
from cardless import protocol
from cardless.ledger.private_files import private_dir
from cardless.protocol import SETTLEMENT_GRACE, EscrowDomain, Order, OrderStatus
from oracles.cosigner_wire import CoSignerRefusedError, FulfilmentRequest, RefundRequest, Refusal
from oracles.proofs import fulfilments_message

__all__ = ["CoSignerJournal", "CoSignerService", "Signed"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- journal


class CoSignerJournal:
    """What the co-signer signed, one row per order, in an SQLite file of its own. A row is committed
    before the signature is returned; it is never updated or deleted."""

    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS signed ("
            " order_id TEXT PRIMARY KEY,"
            " kind TEXT NOT NULL CHECK (kind IN ('fulfilment', 'refund')),"
            " receipt_hash TEXT, fulfilled_at INTEGER, reason_code INTEGER,"
            " signed_at INTEGER NOT NULL)"
        )
        path.chmod(0o600)
        self.lock = threading.Lock()
        """Held from the conflict check to the committed record, so two requests cannot both pass."""

    def get(self, order_id: str) -> tuple[str, str | None, int | None] | None:
        row = self._db.execute(
            "SELECT kind, receipt_hash, fulfilled_at FROM signed WHERE order_id = ?", (order_id,)
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def record_fulfilments(self, requests: Sequence[FulfilmentRequest]) -> None:
        now = int(time.time())
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR IGNORE INTO signed (order_id, kind, receipt_hash, fulfilled_at, signed_at)"
                " VALUES (?, 'fulfilment', ?, ?, ?)",
                [
                    (r.order_hex, "0x" + r.fulfilment.receipt_hash.hex(), r.fulfilment.fulfilled_at, now)
                    for r in requests
                ],
            )

    def record_refund(self, request: RefundRequest) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR IGNORE INTO signed (order_id, kind, reason_code, signed_at)"
                " VALUES (?, 'refund', ?, ?)",
                (request.order_hex, request.reason_code, int(time.time())),
            )

    def rows(self) -> list[tuple[str, str]]:
        """Every (order id, kind) signed, oldest first (operators and tests)."""
        return [(r[0], r[1]) for r in self._db.execute("SELECT order_id, kind FROM signed ORDER BY rowid")]

    def close(self) -> None:
        self._db.close()


# ----------------------------------------------------------------------------------------------- service


@dataclasses.dataclass(frozen=True)
class Signed:
    signer: str
    signature: bytes


@dataclasses.dataclass(frozen=True)
class _ChainView:
    order: Order | None
    problem: str | None
    now: int


class CoSignerService:
    """Checks a request against the chain and the providers, journals it and signs it with ``key``."""

    def __init__(
        self,
        *,
        key: LocalAccount,
        domain: EscrowDomain,
        escrow: Contract,
        adapters: Mapping[str, ProviderAdapter],
        journal: CoSignerJournal,
        confirmations: int,
        query_timeout: float = 5.0,
        query_concurrency: int = 16,
    ) -> None:
        if escrow.address != domain.verifying_contract:
            raise ValueError("the escrow contract and the signing domain disagree")
        self.key = key
        self.domain = domain
        self.escrow = escrow
        self.w3: Web3 = escrow.w3
        self.adapters = dict(adapters)
        self.journal = journal
        self.confirmations = confirmations
        self.query_timeout = query_timeout
        """Each provider query's bound: the whole request must answer within the oracle's timeout (10 s)."""
        self._queries = asyncio.Semaphore(query_concurrency)
        """Provider queries in flight at once, whatever the batch size (200 orders must not be 200 calls)."""

    # -- the two calls -----------------------------------------------------------------------------

    async def sign_fulfilments(self, requests: Sequence[FulfilmentRequest]) -> Signed:
        """Sign a ``Fulfilment`` (one request) or a ``FulfilmentBatch`` (more), or raise
        ``CoSignerRefusedError`` naming every order that fails a check."""
        views = await asyncio.to_thread(
            self._chain_views, [(r.fulfilment.order_id, r.paid_tx) for r in requests]
        )
        checks = await asyncio.gather(
            *(self._check_fulfilment(r, v) for r, v in zip(requests, views, strict=True))
        )
        refusals = [c for c in checks if c is not None]
        if refusals:
            raise CoSignerRefusedError(refusals)
        with self.journal.lock:
            refusals = []
            for request in requests:
                signed = self.journal.get(request.order_hex)
                if signed is None:
                    continue
                kind, receipt_hash, fulfilled_at = signed
                if kind == "refund":
                    refusals.append(Refusal(request.order_hex, "a refund was already signed for this order"))
                elif (receipt_hash, fulfilled_at) != (
                    "0x" + request.fulfilment.receipt_hash.hex(),
                    request.fulfilment.fulfilled_at,
                ):
                    refusals.append(
                        Refusal(request.order_hex, "a different fulfilment was already signed for this order")
                    )
            if refusals:
                raise CoSignerRefusedError(refusals)
            self.journal.record_fulfilments(requests)
        message = fulfilments_message(self.domain, [r.fulfilment for r in requests])
        log.info("co-signed fulfilment of %s", ", ".join(r.order_hex for r in requests))
        return Signed(self.key.address, protocol.sign(self.key.key, message))

    async def sign_refund(self, request: RefundRequest) -> Signed:
        (view,) = await asyncio.to_thread(self._chain_views, [(request.order_id, request.paid_tx)])
        refusal = await self._check_refund(request, view)
        if refusal is not None:
            raise CoSignerRefusedError([refusal])
        with self.journal.lock:
            signed = self.journal.get(request.order_hex)
            if signed is not None and signed[0] == "fulfilment":
                raise CoSignerRefusedError(
                    [Refusal(request.order_hex, "a fulfilment was already signed for this order")]
                )
            self.journal.record_refund(request)
        message = protocol.refund_typed_data(self.domain, request.order_id, request.reason_code)
        log.info("co-signed refund of %s (reason %d)", request.order_hex, request.reason_code)
        return Signed(self.key.address, protocol.sign(self.key.key, message))

    # -- the chain ---------------------------------------------------------------------------------

    def _chain_views(self, wanted: Sequence[tuple[bytes, bytes]]) -> list[_ChainView]:
        """Each order's view of the chain. The receipts and statuses of a batch are read in one JSON-RPC
        batch (a batch of 50 read one by one took 100 round trips); a node that refuses batches, or a
        receipt that is missing, is read again one call at a time."""
        head = self.w3.eth.get_block("latest")
        now, head_number = int(head["timestamp"]), int(head["number"])
        prefetched: list[tuple[Any, int]] | None = None
        if len(wanted) > 1:
            try:
                with self.w3.batch_requests() as batch:
                    for order_id, paid_tx in wanted:
                        batch.add(self.w3.eth.get_transaction_receipt(Web3.to_hex(paid_tx)))
                        batch.add(self.escrow.functions.orderStatus(order_id))
                    results: list[Any] = list(batch.execute())
                prefetched = [(results[i], int(results[i + 1])) for i in range(0, len(results), 2)]
            except Exception as exc:  # any batch trouble: the one-by-one path below decides
                log.debug("batched chain reads failed (%s): reading one by one", exc)
        views = []
        for index, (order_id, paid_tx) in enumerate(wanted):
            known = prefetched[index] if prefetched is not None and prefetched[index][0] else None
            views.append(self._chain_view(order_id, paid_tx, now, head_number, known))
        return views

    def _chain_view(
        self, order_id: bytes, paid_tx: bytes, now: int, head: int, known: tuple[Any, int] | None = None
    ) -> _ChainView:
        if known is not None:
            receipt, status_code = known
        else:
            try:
                receipt = self.w3.eth.get_transaction_receipt(Web3.to_hex(paid_tx))
            except TransactionNotFound:
                return _ChainView(None, "the payment transaction is not on chain", now)
            status_code = None
        if receipt["status"] != 1:
            return _ChainView(None, "the payment transaction reverted", now)
        if int(receipt["blockNumber"]) > head - self.confirmations:
            return _ChainView(None, f"the payment has fewer than {self.confirmations} confirmations", now)
        # only our escrow's logs: another contract in the transaction may emit a look-alike OrderPaid
        ours = [
            log_
            for log_ in receipt["logs"]
            if Web3.to_checksum_address(log_["address"]) == self.escrow.address
        ]
        events = [
            e
            for e in self.escrow.events.OrderPaid().process_receipt({**receipt, "logs": ours}, errors=DISCARD)
            if bytes(e.args.orderId) == order_id
        ]
        if len(events) != 1:
            return _ChainView(None, "the payment transaction did not pay this order into this escrow", now)
        if status_code is None:
            status_code = int(self.escrow.functions.orderStatus(order_id).call())
        status = OrderStatus(status_code)
        if status is not OrderStatus.PAID:
            return _ChainView(None, f"the order is {status.name} on chain, not PAID", now)
        return _ChainView(Order.from_event(events[0].args), None, now)

    # -- the checks --------------------------------------------------------------------------------

    async def _query(self, adapter: ProviderAdapter, order_hex: str) -> TopupResult:
        """A status query by our order id (the provider's idempotency key): never a submit."""
        async with self._queries:
            return await asyncio.wait_for(adapter.query(order_hex), self.query_timeout)

    async def _check_fulfilment(self, request: FulfilmentRequest, view: _ChainView) -> Refusal | None:
        order_hex = request.order_hex
        if view.order is None:
            return Refusal(order_hex, view.problem or "not paid")
        order, fulfilment = view.order, request.fulfilment
        if fulfilment.fulfilled_at > order.fulfilment_deadline:
            return Refusal(order_hex, "fulfilledAt is after the order's fulfilment deadline")
        if fulfilment.fulfilled_at > view.now:
            return Refusal(order_hex, "fulfilledAt is in the future")
        if view.now > order.fulfilment_deadline + SETTLEMENT_GRACE:
            return Refusal(order_hex, "the settlement window has closed")
        adapter = self.adapters.get(request.provider)
        if adapter is None:
            return Refusal(order_hex, f"provider {request.provider!r} is not configured here")
        try:
            result = await self._query(adapter, order_hex)
        except Exception as exc:  # an adapter error is an answer we cannot use: refuse, the order waits
            log.warning("query of %s at %s failed: %r", order_hex, request.provider, exc)
            return Refusal(order_hex, f"provider {request.provider} could not be asked")
        if result.status is not TopupStatus.SUCCEEDED or result.receipt is None:
            return Refusal(
                order_hex, f"provider {request.provider} reports {result.status.value}, not delivered"
            )
        credited = result.receipt
        if keccak(text=credited.sku) != order.sku_hash:
            return Refusal(
                order_hex, f"provider {request.provider} credited another SKU than the one paid for"
            )
        if fulfilment.fulfilled_at > credited.completed_at:
            return Refusal(order_hex, "fulfilledAt is after the provider's completion time")
        receipt = {
            "version": 1,
            "order_id": order_hex,
            "provider": credited.provider,
            "provider_ref": credited.provider_ref,
            "sku": credited.sku,
            "credited": credited.credited,
            "account_commitment": "0x" + order.account_commitment.hex(),
            "completed_at": credited.completed_at,
        }
        if protocol.receipt_hash(receipt) != fulfilment.receipt_hash:
            return Refusal(
                order_hex, f"the receipt hash is not that of provider {request.provider}'s receipt"
            )
        return None

    async def _check_refund(self, request: RefundRequest, view: _ChainView) -> Refusal | None:
        order_hex = request.order_hex
        if view.order is None:
            return Refusal(order_hex, view.problem or "not paid")
        order = view.order
        if not self.adapters:
            return Refusal(order_hex, "no provider is configured here to ask")
        past_deadline = view.now > order.fulfilment_deadline
        window_closed = view.now > order.fulfilment_deadline + SETTLEMENT_GRACE
        for name, adapter in self.adapters.items():
            try:
                result = await self._query(adapter, order_hex)
            except Exception as exc:
                log.warning("query of %s at %s failed: %r", order_hex, name, exc)
                return Refusal(order_hex, f"provider {name} could not be asked")
            if result.status is TopupStatus.SUCCEEDED and result.receipt is not None:
                if result.receipt.completed_at <= order.fulfilment_deadline and not window_closed:
                    return Refusal(order_hex, f"provider {name} reports it delivered in time: settle it")
                continue  # delivered too late to ever settle: the chain's rule refunds the buyer
            definitive = result.status in (TopupStatus.FAILED_NOT_CHARGED, TopupStatus.REVERSED) or (
                result.status is TopupStatus.UNKNOWN and result.unseen
            )
            if not definitive and not past_deadline:
                return Refusal(
                    order_hex,
                    f"provider {name} reports {result.status.value} and the deadline has not passed",
                )
        return None
