"""The oracle worker: drives every paid order to settled or refunded.

One :meth:`OracleWorker.tick` runs each stage once; every stage reads its work from the database, so
a worker that was killed anywhere resumes from what was committed:

1. watch the chain (``OrderPaid`` -> paid; ``OrderSettled``/``OrderRefunded``/``OrderReclaimed`` close);
2. risk-check paid orders;
3. submit to the provider: ``submitting`` is committed *before* the call; an order found in
   ``submitting`` that this process is not calling right now is an unknown outcome and is queried;
4. query unknown outcomes by our key (never resubmit under a new key; resubmit under the *same* key
   only after the provider says it has never seen it and a grace period has passed);
5. sign fulfilment proofs and post them in batches; sign and post refunds;
6. confirm transactions; refund orders whose deadline approaches before a provider was called.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from eth_account.signers.local import LocalAccount
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.contract import Contract

from adapters import ProviderAdapter, TopupRequest, TopupResult, TopupStatus
from adapters._base import Refusal
from adapters._exceptions import AdapterError, ConfigError, ProviderUnavailable, RefundError, RerouteError
from cardless import protocol
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.models import Order, OrderState, utcnow
from cardless.ledger.store import order_from_row
from cardless.ledger.transitions import transition
from cardless.protocol import ContractRevert, EscrowDomain, Fulfilment, RefundReason
from oracles.failpoints import failpoint
from oracles.risk import RiskPolicy
from oracles.txmanager import TxManager
from oracles.watcher import Watcher

__all__ = ["OracleWorker", "WorkerConfig"]

log = logging.getLogger(__name__)
S = OrderState


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    max_batch: int = 50
    submit_concurrency: int = 16
    query_backoff: timedelta = timedelta(seconds=1)
    query_backoff_max: timedelta = timedelta(seconds=30)
    not_found_grace: timedelta = timedelta(seconds=10)
    """How long after our last submit a "not found" still means "maybe in flight"."""
    deadline_margin: int = 300
    """Refund an order nobody has submitted yet when its deadline is this close (seconds)."""
    quote_expiry_grace: int = 60
    confirmations: int = 0


def _hex(value: bytes) -> str:
    return Web3.to_hex(value)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class OracleWorker:
    def __init__(
        self,
        *,
        w3: Web3,
        escrow: Contract,
        domain: EscrowDomain,
        sessions: sessionmaker[Session],
        adapters: Mapping[str, ProviderAdapter],
        proof_key: LocalAccount,
        tx: TxManager,
        cipher: AccountCipher,
        start_block: int,
        risk: RiskPolicy | None = None,
        config: WorkerConfig | None = None,
        callback_base: str | None = None,
    ) -> None:
        self.callback_base = callback_base.rstrip("/") if callback_base else None
        self.w3 = w3
        self.escrow = escrow
        self.domain = domain
        self.sessions = sessions
        self.adapters = dict(adapters)
        self.proof_key = proof_key
        self.tx = tx
        self.cipher = cipher
        self.risk = risk or RiskPolicy()
        self.config = config or WorkerConfig()
        self.watcher = Watcher(
            w3,
            escrow,
            sessions,
            self._on_event,
            start_block=start_block,
            confirmations=self.config.confirmations,
        )
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._provider_slots = asyncio.Semaphore(self.config.submit_concurrency)
        self._recovered = False

    # ------------------------------------------------------------------ loop

    async def tick(self, *, housekeeping: bool = True) -> int:
        """Run every pipeline stage once; returns how many things changed (0 means idle).

        ``housekeeping`` also runs the periodic jobs (re-query unknown outcomes, expire quotes and refund
        orders near their deadline). A running oracle leaves them to APScheduler (cardless.cli.system) and
        passes False; tests and one-shot callers get everything from one call.
        """
        if not self._recovered:
            self.tx.recover()
            self._recovered = True
        work = self.watcher.poll()
        if housekeeping:
            work += await self.expire_and_refund()
        work += self._risk_check()
        work += self._start_provider_calls(S.RISK_CHECKED)
        if housekeeping:
            work += await self.requery_due()
        work += self._sign_proofs()
        work += self._sign_refunds()
        work += self._post_transactions()
        confirmed = self.tx.confirm()
        work += len(confirmed)
        if confirmed:
            work += self.watcher.poll()
        return work

    async def requery_due(self) -> int:
        """Periodic job: query every unknown outcome whose back-off has elapsed, by our key. Orders left in
        ``submitting`` by a crash are unknown outcomes too: they are queried, never blindly resubmitted."""
        return self._start_provider_calls(S.SUBMITTING, S.UNKNOWN)

    async def expire_and_refund(self) -> int:
        """Periodic job: expire unpaid quotes; refund near-deadline orders no provider was called for."""
        return self._expire_quotes() + self._refund_near_deadline()

    async def run(self, stop: asyncio.Event, idle_sleep: float = 0.1, *, housekeeping: bool = True) -> None:
        while not stop.is_set():
            try:
                work = await self.tick(housekeeping=housekeeping)
            except Exception:
                log.exception("oracle tick failed; retrying")
                work = 0
            # Yield to provider tasks every tick; sleep longer when there was nothing to do.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=idle_sleep if work == 0 else 0.01)
        await self.drain()

    # ------------------------------------------------------------------ chain events

    def _on_event(self, session: Session, name: str, args: dict[str, Any], meta: dict[str, Any]) -> None:
        order_id = _hex(args["orderId"]) if "orderId" in args else None
        if order_id is None:
            return
        row = session.get(Order, order_id)
        if name == "OrderPaid":
            self._on_paid(session, row, order_id, args, meta)
            return
        if row is None:
            log.warning("%s for unknown order %s (tx %s)", name, order_id, meta["tx_hash"])
            return
        closing = {"OrderSettled": S.SETTLED, "OrderRefunded": S.REFUNDED, "OrderReclaimed": S.RECLAIMED}.get(
            name
        )
        if closing is None or row.state == closing.value:
            return
        if row.state in (S.QUOTED.value, S.EXPIRED.value):
            # The chain closed an order whose payment was never applied here (e.g. its OrderPaid did not
            # match the quote on record and the buyer reclaimed it). The chain is the truth: record the
            # payment first, so the closing move is a legal one and the watcher never stalls on it.
            transition(
                session, row, S.PAID, f"paid on chain (closed by {name} before the payment was applied)"
            )
        fields: dict[str, Any] = {}
        if closing is S.SETTLED:
            fields["settle_tx"] = meta["tx_hash"]
        elif closing is S.REFUNDED:
            fields["refund_tx"] = meta["tx_hash"]
        transition(session, row, closing, f"{name} in block {meta['block_number']}", detail=meta, **fields)

    def _on_paid(
        self, session: Session, row: Order | None, order_id: str, args: dict[str, Any], meta: dict[str, Any]
    ) -> None:
        if row is None:
            log.error(
                "OrderPaid for an order this gateway has no record of: %s (tx %s)", order_id, meta["tx_hash"]
            )
            return  # the buyer can reclaim after the deadline; an operator is alerted by the log
        if row.state not in (S.QUOTED.value, S.EXPIRED.value):
            return  # already applied (re-scan after a crash)
        paid = protocol.Order.from_event(args)
        if paid.digest != order_from_row(row).digest:
            log.error("OrderPaid %s does not match the quote on record", order_id)
            return
        block = self.w3.eth.get_block(meta["block_number"])
        transition(
            session,
            row,
            S.PAID,
            f"OrderPaid in block {meta['block_number']}",
            detail=meta,
            paid_tx=meta["tx_hash"],
            paid_block=meta["block_number"],
            paid_at=datetime.fromtimestamp(int(block["timestamp"]), UTC),
        )

    # ------------------------------------------------------------------ stages

    def _chain_now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def _rows(self, session: Session, *states: OrderState, limit: int = 500) -> list[Order]:
        query = (
            select(Order)
            .where(Order.state.in_([s.value for s in states]))
            .order_by(Order.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(session.execute(query).scalars())

    def _expire_quotes(self) -> int:
        cutoff = self._chain_now() - self.config.quote_expiry_grace
        changed = 0
        with self.sessions.begin() as session:
            for row in self._rows(session, S.QUOTED):
                if row.quote_expiry < cutoff:
                    transition(session, row, S.EXPIRED, "quote expired unpaid")
                    changed += 1
        return changed

    def _risk_check(self) -> int:
        changed = 0
        with self.sessions.begin() as session:
            for row in self._rows(session, S.PAID):
                verdict = self.risk.check(session, row)
                if verdict is None:
                    transition(session, row, S.RISK_CHECKED, "risk checks passed")
                else:
                    transition(
                        session,
                        row,
                        S.FAILED_FINAL,
                        f"risk: {verdict}",
                        refund_reason=int(RefundReason.RISK_REJECTED),
                    )
                changed += 1
        if changed:
            failpoint("fulfilment.after_risk_commit")
        return changed

    def _refund_near_deadline(self) -> int:
        limit = self._chain_now() + self.config.deadline_margin
        changed = 0
        with self.sessions.begin() as session:
            for row in self._rows(session, S.PAID, S.RISK_CHECKED):
                if row.fulfilment_deadline <= limit:
                    transition(
                        session,
                        row,
                        S.FAILED_FINAL,
                        "deadline approaching before a provider was called",
                        refund_reason=int(RefundReason.DEADLINE_APPROACHING),
                    )
                    changed += 1
        return changed

    # ---------------------------------------------------------------- provider

    def _start_provider_calls(self, *states: OrderState) -> int:
        """Start a provider call for every due order in ``states``. Calls run as tasks, so one slow provider
        (a 10 s timeout) never holds up proofs, refunds or other orders; ``_in_flight`` stops a later tick
        or job from starting a second call for the same order."""
        now = utcnow()
        with self.sessions() as session:
            jobs: list[tuple[str, str]] = []
            for row in self._rows(session, *states):
                if row.id in self._in_flight:
                    continue
                due = _aware(row.next_attempt_at)
                if due is not None and due > now:
                    continue
                jobs.append((row.id, "submit" if row.state == S.RISK_CHECKED.value else "query"))
        for order_id, kind in jobs:
            self._in_flight.add(order_id)
            task = asyncio.create_task(self._provider_step(order_id, kind), name=f"{kind}:{order_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(jobs)

    async def _provider_step(self, order_id: str, kind: str) -> None:
        async with self._provider_slots:
            try:
                if kind == "submit":
                    await self._submit(order_id)
                else:
                    await self._query(order_id)
            except Exception:
                log.exception("provider step %s for %s failed", kind, order_id)
            finally:
                self._in_flight.discard(order_id)

    async def drain(self) -> None:
        """Wait for provider calls already started (used at shutdown and by tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _submit(self, order_id: str) -> None:
        with self.sessions.begin() as session:
            row = session.get(Order, order_id)
            if row is None or row.state != S.RISK_CHECKED.value:
                return
            provider = row.providers[row.provider_index]
            account = self.cipher.decrypt(row.account_ciphertext, row.id)
            transition(
                session,
                row,
                S.SUBMITTING,
                f"submitting to {provider}",
                detail={
                    "provider": provider
                },  # marks a real attempt: this provider may have charged from now on
                attempts=row.attempts + 1,
                next_attempt_at=None,
            )
            callback = (
                f"{self.callback_base}/v1/providers/{provider}/callback" if self.callback_base else None
            )
            request = TopupRequest(order_key=row.id, sku=row.sku, account=account, callback_url=callback)
        # Intent is committed: from here a crash leaves `submitting`, which is queried on restart.
        failpoint("provider.before_submit")
        adapter = self.adapters[provider]
        try:
            result = await adapter.submit(request)
        except ProviderUnavailable as exc:
            self._record_unavailable(order_id, provider, exc)
            return
        except (RerouteError, RefundError) as exc:
            # The provider answered and recorded the order (refused or reversed): an external effect, too.
            failpoint("provider.after_submit")
            # A refusal (not charged) or a reversal: the result says which; a reroute without one is refused.
            if exc.result is not None:
                self._record_result(order_id, provider, exc.result)
            else:
                self._record_refusal(order_id, provider, None, str(exc))
            return
        except (ConfigError, AdapterError) as exc:
            self._record_unknown(order_id, provider, f"submit error: {exc}")
            return
        failpoint("provider.after_submit")
        self._record_result(order_id, provider, result)

    async def _query(self, order_id: str) -> None:
        with self.sessions() as session:
            row = session.get(Order, order_id)
            if row is None or row.state not in (S.SUBMITTING.value, S.UNKNOWN.value):
                return
            provider = row.providers[row.provider_index]
            last_submit = self._last_attempt_end(row)
        failpoint("provider.before_query")
        try:
            result = await self.adapters[provider].query(order_id)
        except AdapterError as exc:
            self._record_unknown(order_id, provider, f"query error: {exc}")
            return
        failpoint("provider.after_query")
        # The provider has no record under our key. Only once the grace period has passed since our last
        # attempt can it not be in flight any more; then resubmitting under the SAME key is safe (the
        # provider is idempotent by it), and it is the only way forward.
        if result.unseen and last_submit is not None and utcnow() - last_submit > self.config.not_found_grace:
            with self.sessions.begin() as session:
                row = session.get(Order, order_id)
                if row is not None and row.state in (S.SUBMITTING.value, S.UNKNOWN.value):
                    transition(
                        session,
                        row,
                        S.SUBMITTING,
                        "provider has no record of our key after the grace period: resubmitting under it",
                    )
                    transition(session, row, S.RISK_CHECKED, "queued for resubmission under the same key")
            return
        self._record_result(order_id, provider, result)

    @staticmethod
    def _attempts_at(row: Order, provider: str) -> list[int]:
        """Indexes of the timeline events that were real submit attempts to ``provider``."""
        return [
            i
            for i, event in enumerate(row.events)
            if event.to_state == S.SUBMITTING.value and (event.detail or {}).get("provider") == provider
        ]

    def _last_attempt_end(self, row: Order) -> datetime | None:
        """When our last submit attempt ended: the "unknown" that followed it (a timeout ends when the
        client gave up, not when it started), or the attempt itself if a crash left no outcome."""
        attempts = self._attempts_at(row, row.providers[row.provider_index])
        if not attempts:
            return None
        last = attempts[-1]
        ended = [e for e in row.events[last + 1 :] if e.to_state == S.UNKNOWN.value]
        return _aware((ended[0] if ended else row.events[last]).at)

    def _record_result(self, order_id: str, provider: str, result: TopupResult) -> None:
        if result.status is TopupStatus.SUCCEEDED:
            assert result.receipt is not None
            with self.sessions.begin() as session:
                row = session.get(Order, order_id)
                if row is None or row.state not in (S.SUBMITTING.value, S.UNKNOWN.value):
                    return
                receipt = {
                    "version": 1,
                    "order_id": row.id,
                    "provider": result.receipt.provider,
                    "provider_ref": result.receipt.provider_ref,
                    "sku": result.receipt.sku,
                    "credited": result.receipt.credited,
                    "account_commitment": row.account_commitment,
                    "completed_at": result.receipt.completed_at,
                }
                transition(
                    session,
                    row,
                    S.SUCCEEDED,
                    f"{provider} credited the account (ref {result.receipt.provider_ref})",
                    provider_ref=result.receipt.provider_ref,
                    receipt=receipt,
                    receipt_hash=_hex(protocol.receipt_hash(receipt)),
                    fulfilled_at=result.receipt.completed_at,
                    last_error=None,
                )
            return
        if result.status is TopupStatus.FAILED_NOT_CHARGED:
            self._record_refusal(order_id, provider, result, result.detail or str(result.refusal))
            return
        if result.status is TopupStatus.REVERSED:
            with self.sessions.begin() as session:
                row = session.get(Order, order_id)
                if row is not None and row.state in (S.SUBMITTING.value, S.UNKNOWN.value):
                    transition(
                        session,
                        row,
                        S.FAILED_FINAL,
                        f"{provider} reversed the top-up",
                        refund_reason=int(RefundReason.PROVIDER_REJECTED),
                    )
            return
        self._record_unknown(
            order_id, provider, f"{result.status.value}: {result.detail or result.provider_code}"
        )

    def _record_refusal(self, order_id: str, provider: str, result: TopupResult | None, why: str) -> None:
        refusal = result.refusal if result is not None else None
        with self.sessions.begin() as session:
            row = session.get(Order, order_id)
            if row is None or row.state not in (S.SUBMITTING.value, S.UNKNOWN.value):
                return
            if refusal is not Refusal.INVALID_ACCOUNT and row.provider_index + 1 < len(row.providers):
                next_provider = row.providers[row.provider_index + 1]
                transition(
                    session,
                    row,
                    S.SUBMITTING,
                    f"{provider} refused and did not charge ({why}); failing over to {next_provider}",
                    provider_index=row.provider_index + 1,
                )
                transition(session, row, S.RISK_CHECKED, f"queued for {next_provider}")
                return
            reason = (
                {
                    Refusal.INVALID_ACCOUNT: RefundReason.INVALID_ACCOUNT,
                    Refusal.OUT_OF_STOCK: RefundReason.OUT_OF_STOCK,
                }.get(refusal, RefundReason.PROVIDER_REJECTED)
                if refusal
                else RefundReason.PROVIDER_REJECTED
            )
            transition(
                session,
                row,
                S.FAILED_FINAL,
                f"{provider} refused, not charged: {why}",
                refund_reason=int(reason),
            )

    def _record_unavailable(self, order_id: str, provider: str, exc: Exception) -> None:
        with self.sessions.begin() as session:
            row = session.get(Order, order_id)
            if row is None or row.state != S.SUBMITTING.value:
                return
            # The breaker refused *this* attempt, but an earlier attempt at this provider (e.g. before a
            # "not found" that only guessed nothing arrived) may have charged: then never fail over.
            earlier_attempts = len(self._attempts_at(row, provider)) > 1
            if row.provider_index + 1 < len(row.providers) and not earlier_attempts:
                transition(
                    session,
                    row,
                    S.RISK_CHECKED,
                    f"{provider} unavailable, not called ({exc}); failing over",
                    provider_index=row.provider_index + 1,
                )
            else:
                transition(
                    session,
                    row,
                    S.RISK_CHECKED,
                    f"{provider} unavailable, not called ({exc}); waiting",
                    next_attempt_at=utcnow() + self.config.query_backoff_max,
                    last_error=str(exc),
                )

    def _record_unknown(self, order_id: str, provider: str, why: str) -> None:
        with self.sessions.begin() as session:
            row = session.get(Order, order_id)
            if row is None or row.state not in (S.SUBMITTING.value, S.UNKNOWN.value):
                return
            unknowns = sum(1 for e in row.events if e.to_state == S.UNKNOWN.value)
            delay = min(self.config.query_backoff * (2 ** min(unknowns, 8)), self.config.query_backoff_max)
            fields = {"next_attempt_at": utcnow() + delay, "last_error": why[:2000]}
            if row.state == S.UNKNOWN.value:
                for name, value in fields.items():
                    setattr(row, name, value)  # still unknown: only the schedule changes
                return
            transition(
                session,
                row,
                S.UNKNOWN,
                f"{provider}: outcome unknown ({why}); will query by our key",
                **fields,
            )

    # ---------------------------------------------------------------- proofs and refunds

    def _sign_proofs(self) -> int:
        changed = 0
        chain_now = self._chain_now()
        with self.sessions.begin() as session:
            for row in self._rows(session, S.SUCCEEDED):
                assert row.receipt_hash is not None and row.fulfilled_at is not None
                # The provider's clock may run ahead of the chain's; the proof may not claim the future.
                fulfilled_at = min(row.fulfilled_at, chain_now)
                fulfilment = Fulfilment(
                    order_id=bytes.fromhex(row.id[2:]),
                    receipt_hash=bytes.fromhex(row.receipt_hash[2:]),
                    fulfilled_at=fulfilled_at,
                )
                signature = protocol.sign(
                    self.proof_key.key, protocol.fulfilment_typed_data(self.domain, fulfilment)
                )
                transition(
                    session,
                    row,
                    S.PROOF_PENDING,
                    "fulfilment proof signed",
                    fulfilled_at=fulfilled_at,
                    proof_signature=_hex(signature),
                )
                changed += 1
        if changed:
            failpoint("proof.after_sign_commit")
        return changed

    def _sign_refunds(self) -> int:
        changed = 0
        with self.sessions.begin() as session:
            for row in self._rows(session, S.FAILED_FINAL):
                reason = row.refund_reason or int(RefundReason.PROVIDER_REJECTED)
                signature = protocol.sign(
                    self.proof_key.key,
                    protocol.refund_typed_data(self.domain, bytes.fromhex(row.id[2:]), reason),
                )
                transition(
                    session,
                    row,
                    S.REFUND_PENDING,
                    f"refund authorised (reason {RefundReason(reason).name})",
                    refund_reason=reason,
                    refund_signature=_hex(signature),
                )
                changed += 1
        if changed:
            failpoint("refund.after_sign_commit")
        return changed

    def _post_transactions(self) -> int:
        pending = self.tx.pending_order_ids()
        with self.sessions() as session:
            proofs = [r for r in self._rows(session, S.PROOF_PENDING) if r.id not in pending]
            refunds = [r for r in self._rows(session, S.REFUND_PENDING) if r.id not in pending]
        sent = 0
        for start in range(0, len(proofs), self.config.max_batch):
            sent += self._post_settlement(proofs[start : start + self.config.max_batch])
        for row in refunds:
            sent += self._post_refund(row)
        return sent

    def _post_settlement(self, rows: list[Order]) -> int:
        # Orders already closed on chain (e.g. the watcher has not caught up) are not sent again.
        rows = [r for r in rows if self._on_chain_paid(r)]
        if not rows:
            return 0
        orders = [order_from_row(r) for r in rows]
        fulfilments = [
            Fulfilment(
                order_id=bytes.fromhex(r.id[2:]),
                receipt_hash=bytes.fromhex((r.receipt_hash or "")[2:]),
                fulfilled_at=int(r.fulfilled_at or 0),
            )
            for r in rows
        ]
        if len(rows) == 1:
            call = self.escrow.functions.settle(
                orders[0].as_ref_tuple(),
                fulfilments[0].as_tuple(),
                self.proof_key.address,
                bytes.fromhex((rows[0].proof_signature or "")[2:]),
            )
            purpose = "settle"
        else:
            signature = protocol.sign(self.proof_key.key, protocol.batch_typed_data(self.domain, fulfilments))
            call = self.escrow.functions.settleBatch(
                [o.as_ref_tuple() for o in orders],
                [f.as_tuple() for f in fulfilments],
                self.proof_key.address,
                signature,
            )
            purpose = "settle_batch"
        try:
            record = self.tx.send(purpose, [r.id for r in rows], call)
        except ContractRevert as exc:
            log.error("%s of %d orders would revert: %s", purpose, len(rows), exc)
            return 0
        log.info("%s %s for %d orders", purpose, record.tx_hash, len(rows))
        return 1

    def _post_refund(self, row: Order) -> int:
        if not self._on_chain_paid(row):
            return 0
        order = order_from_row(row)
        call = self.escrow.functions.refund(
            order.as_tuple(),
            int(row.refund_reason or RefundReason.PROVIDER_REJECTED),
            self.proof_key.address,
            bytes.fromhex((row.refund_signature or "")[2:]),
        )
        try:
            self.tx.send("refund", [row.id], call)
        except ContractRevert as exc:
            log.error("refund of %s would revert: %s", row.id, exc)
            return 0
        return 1

    def _on_chain_paid(self, row: Order) -> bool:
        status = protocol.OrderStatus(self.escrow.functions.orderStatus(bytes.fromhex(row.id[2:])).call())
        return status is protocol.OrderStatus.PAID
