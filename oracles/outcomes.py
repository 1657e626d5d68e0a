"""Provider outcomes: submit an order to its provider or query it by our key, and record the normalised
result (DESIGN.md "Oracle", "Adapters").

- ``succeeded``: the receipt is stored and hashed; the order goes on to its fulfilment proof.
- ``processing`` / ``unknown`` (timeout, reset, 5xx, unparseable reply): the order is ``unknown`` and
  is queried by our key with back-off; it is never resubmitted under a new key.
- ``failed, not charged``: fail over to the next provider of the SKU, unless the account itself was
  rejected or no provider is left; then refund.
- ``reversed``: refund.
- "not found" (``unseen``): the request may still be in flight; only once ``not_found_grace`` has passed
  since our last attempt is the order resubmitted, under the *same* key.
- the circuit breaker refused the call (the provider was never called): fail over, unless an earlier
  attempt at this provider may have charged; then wait.

The decisions are pure functions (:func:`failover_target`, :func:`refund_reason`, :func:`resubmit_due`,
:func:`unknown_backoff`, :func:`provider_attempts`); :class:`Outcomes` applies them to the ledger. The
caller holds the order's work lease (``cardless.ledger.store.claim``) for the whole call.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from adapters import ProviderAdapter, TopupRequest, TopupResult, TopupStatus
from adapters._base import Refusal
from adapters._exceptions import AdapterError, ConfigError, ProviderUnavailable, RefundError, RerouteError
from cardless import protocol
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.models import Order, OrderEvent, OrderState, utcnow
from cardless.ledger.store import release
from cardless.ledger.transitions import transition
from cardless.protocol import RefundReason
from oracles.failpoints import failpoint

__all__ = [
    "CallOutcome",
    "OutcomePolicy",
    "Outcomes",
    "failover_target",
    "last_attempt_end",
    "provider_attempts",
    "refund_reason",
    "resubmit_due",
    "unknown_backoff",
]

log = logging.getLogger(__name__)
S = OrderState
_OPEN_CALL = (S.SUBMITTING.value, S.UNKNOWN.value)


@dataclasses.dataclass(frozen=True)
class OutcomePolicy:
    query_backoff: timedelta = timedelta(seconds=1)
    query_backoff_max: timedelta = timedelta(seconds=30)
    not_found_grace: timedelta = timedelta(seconds=10)
    """How long after our last submit a "not found" still means "maybe in flight"."""


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every one the ledger stores is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------------- decisions (pure)


def provider_attempts(events: Sequence[OrderEvent], provider: str) -> list[int]:
    """Indexes of the timeline events that were real submit attempts to ``provider`` (the move to
    ``submitting`` that names the provider; bookkeeping moves through ``submitting`` name none)."""
    return [
        i
        for i, event in enumerate(events)
        if event.to_state == S.SUBMITTING.value and (event.detail or {}).get("provider") == provider
    ]


NOT_FOUND_REQUEUE = "queued for resubmission under the same key"
"""Timeline reason of the move back to ``risk_checked`` after the provider, asked past the not-found grace,
had no record of our key: that attempt reached the provider never, so it charged nothing."""


def _not_called(provider: str) -> str:
    return f"{provider} unavailable, not called"


def attempts_that_may_have_charged(events: Sequence[OrderEvent], provider: str) -> list[int]:
    """The submit attempts at ``provider`` (timeline indexes) not cleared before the next attempt by a
    "not found" past the grace (``NOT_FOUND_REQUEUE``) or a breaker that refused to call: those are the
    attempts that may have charged the buyer's top-up."""
    attempts = provider_attempts(events, provider)
    open_attempts = []
    for n, index in enumerate(attempts):
        end = attempts[n + 1] if n + 1 < len(attempts) else len(events)
        cleared = any(
            e.to_state == S.RISK_CHECKED.value
            and (e.reason == NOT_FOUND_REQUEUE or e.reason.startswith(_not_called(provider)))
            for e in events[index + 1 : end]
        )
        if not cleared:
            open_attempts.append(index)
    return open_attempts


def last_attempt_end(events: Sequence[OrderEvent], provider: str) -> datetime | None:
    """When our last submit attempt at ``provider`` ended: the "unknown" that followed it (a timeout ends
    when the client gave up, not when it started), or the attempt itself if a crash left no outcome."""
    attempts = provider_attempts(events, provider)
    if not attempts:
        return None
    last = attempts[-1]
    ended = [e for e in events[last + 1 :] if e.to_state == S.UNKNOWN.value]
    return aware((ended[0] if ended else events[last]).at)


def failover_target(providers: Sequence[str], index: int, refusal: Refusal | None) -> int | None:
    """The index of the provider to fail over to after a *not charged* refusal, or None to refund.

    An invalid account is refused by every provider alike, so it is refunded at once."""
    if refusal is Refusal.INVALID_ACCOUNT or index + 1 >= len(providers):
        return None
    return index + 1


def refund_reason(refusal: Refusal | None) -> RefundReason:
    return (
        {
            Refusal.INVALID_ACCOUNT: RefundReason.INVALID_ACCOUNT,
            Refusal.OUT_OF_STOCK: RefundReason.OUT_OF_STOCK,
        }.get(refusal, RefundReason.PROVIDER_REJECTED)
        if refusal
        else RefundReason.PROVIDER_REJECTED
    )


def resubmit_due(result: TopupResult, last_attempt: datetime | None, now: datetime, grace: timedelta) -> bool:
    """True when a query's "not found" proves the request is no longer in flight: then resubmitting under
    the same key (the provider is idempotent by it) is safe, and the only way forward."""
    return result.unseen and last_attempt is not None and now - last_attempt > grace


def unknown_backoff(unknowns_so_far: int, policy: OutcomePolicy) -> timedelta:
    delay: timedelta = policy.query_backoff * (2 ** min(unknowns_so_far, 8))
    return min(delay, policy.query_backoff_max)


# ---------------------------------------------------------------------- applying them


@dataclasses.dataclass(frozen=True)
class CallOutcome:
    """What one provider call came to, recorded later (by ``Outcomes.record_all``, with others): a
    normalised ``result``, or the provider ``unavailable`` (the breaker refused, never called), a refusal
    (``refused``: why, with or without a result), an ``unknown`` outcome, or a "not found" past the grace
    (``requeue``).
    """

    order_id: str
    provider: str
    result: TopupResult | None = None
    unavailable: str | None = None
    refused: str | None = None
    unknown: str | None = None
    requeue: bool = False


class Outcomes:
    """Makes the provider call for one order and records what came of it."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        adapters: Mapping[str, ProviderAdapter],
        cipher: AccountCipher,
        *,
        owner: str,
        policy: OutcomePolicy | None = None,
        callback_base: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.adapters = adapters
        self.cipher = cipher
        self.owner = owner
        self.policy = policy or OutcomePolicy()
        self.callback_base = callback_base.rstrip("/") if callback_base else None

    def _locked(self, session: Session, order_id: str) -> Order | None:
        """The row, locked for this transaction on PostgreSQL (SQLite serialises writers anyway)."""
        query = (
            select(Order)
            .where(Order.id == order_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return session.execute(query).scalar_one_or_none()

    async def submit(self, order_id: str) -> None:
        """One submit on its own: intent committed, the call, its outcome committed. The worker does the
        same for many orders with one transaction per step (``begin_submit``, ``call_submit``,
        ``record_all``)."""
        with self.sessions.begin() as session:
            row = self._locked(session, order_id)
            request = self.begin_submit(session, row) if row is not None else None
        if request is None:
            return
        self.record_all([await self.call_submit(*request)])

    def begin_submit(
        self, session: Session, row: Order, *, claimed: bool = False
    ) -> tuple[str, str, TopupRequest] | None:
        """In the caller's transaction: move ``row`` to ``submitting`` (the intent) and return what to
        send, as (order id, provider, request); None when the order moved on or our lease lapsed. The
        caller commits before calling the provider. ``claimed``: the caller took the lease in this very
        transaction (``claim`` updates the row in SQL, not the loaded object)."""
        if row.state != S.RISK_CHECKED.value or (not claimed and row.lease_owner != self.owner):
            return None  # moved on, or our lease lapsed and another worker took the order over
        provider = row.providers[row.provider_index]
        account = self.cipher.decrypt(row.account_ciphertext, row.id)
        transition(
            session,
            row,
            S.SUBMITTING,
            f"submitting to {provider}",
            # marks a real attempt: this provider may have charged from now on
            detail={"provider": provider},
            attempts=row.attempts + 1,
            next_attempt_at=None,
        )
        callback = f"{self.callback_base}/v1/providers/{provider}/callback" if self.callback_base else None
        return (
            row.id,
            provider,
            TopupRequest(order_key=row.id, sku=row.sku, account=account, callback_url=callback),
        )

    async def call_submit(self, order_id: str, provider: str, request: TopupRequest) -> CallOutcome:
        """The provider call, its intent already committed: from here a crash leaves `submitting`, which is
        queried once the lease lapses. Returns what to record; records nothing."""
        failpoint("provider.before_submit")
        try:
            result = await self.adapters[provider].submit(request)
        except ProviderUnavailable as exc:
            return CallOutcome(order_id, provider, unavailable=str(exc))
        except (RerouteError, RefundError) as exc:
            # The provider answered and recorded the order (refused or reversed): an external effect, too.
            failpoint("provider.after_submit")
            # A refusal (not charged) or a reversal: the result says which; a reroute without one is refused.
            if exc.result is not None:
                return CallOutcome(order_id, provider, result=exc.result)
            return CallOutcome(order_id, provider, refused=str(exc))
        except (ConfigError, AdapterError) as exc:
            return CallOutcome(order_id, provider, unknown=f"submit error: {exc}")
        failpoint("provider.after_submit")
        return CallOutcome(order_id, provider, result=result)

    async def query(self, order_id: str) -> None:
        with self.sessions() as session:
            row = session.get(Order, order_id)
            asked = self.begin_query(row) if row is not None else None
        if asked is None:
            return
        self.record_all([await self.call_query(*asked)])

    def begin_query(self, row: Order, *, claimed: bool = False) -> tuple[str, str, datetime | None] | None:
        """What a query of ``row`` needs: (order id, provider, end of our last submit there); None when it
        has no open call or our lease lapsed."""
        if row.state not in _OPEN_CALL or (not claimed and row.lease_owner != self.owner):
            return None
        provider = row.providers[row.provider_index]
        return row.id, provider, last_attempt_end(row.events, provider)

    async def call_query(self, order_id: str, provider: str, last_submit: datetime | None) -> CallOutcome:
        failpoint("provider.before_query")
        try:
            result = await self.adapters[provider].query(order_id)
        except AdapterError as exc:
            return CallOutcome(order_id, provider, unknown=f"query error: {exc}")
        failpoint("provider.after_query")
        if resubmit_due(result, last_submit, utcnow(), self.policy.not_found_grace):
            return CallOutcome(order_id, provider, requeue=True)
        return CallOutcome(order_id, provider, result=result)

    def record_all(
        self, outcomes: Sequence[CallOutcome], *, release_owner: str | None = None
    ) -> list[CallOutcome]:
        """Record ``outcomes`` in one transaction (rows locked on PostgreSQL); with ``release_owner``, that
        owner's leases on their orders are released in it too. If the batch fails, each outcome is recorded
        in a transaction of its own, so one bad order holds up no other; returns those that could not be
        recorded (a single outcome that fails raises)."""
        if not outcomes:
            return []
        ids = list(dict.fromkeys(o.order_id for o in outcomes))
        try:
            with self.sessions.begin() as session:
                rows = {
                    r.id: r
                    for r in session.execute(
                        select(Order)
                        .where(Order.id.in_(ids))
                        .with_for_update()
                        .execution_options(populate_existing=True)
                    ).scalars()
                }
                for outcome in outcomes:
                    row = rows.get(outcome.order_id)
                    if row is not None:
                        self._apply(session, row, outcome)
                if release_owner is not None:
                    session.flush()
                    release(session, ids, release_owner)
            return []
        except Exception:
            if len(outcomes) == 1:
                raise
            log.exception(
                "recording %d provider outcomes together failed; recording them one by one", len(outcomes)
            )
        failed = []
        for outcome in outcomes:
            try:
                with self.sessions.begin() as session:
                    row = self._locked(session, outcome.order_id)
                    if row is not None:
                        self._apply(session, row, outcome)
                    if release_owner is not None:
                        session.flush()
                        release(session, [outcome.order_id], release_owner)
            except Exception:
                log.exception("could not record the provider outcome of %s", outcome.order_id)
                failed.append(outcome)
        return failed

    def _apply(self, session: Session, row: Order, outcome: CallOutcome) -> None:
        provider = outcome.provider
        if outcome.refused is not None:
            self._record_refusal(session, row, provider, outcome.result, outcome.refused)
        elif outcome.result is not None:
            self._record(session, row, provider, outcome.result)
        elif outcome.unavailable is not None:
            self._record_unavailable(session, row, provider, outcome.unavailable)
        elif outcome.unknown is not None:
            self._record_unknown(session, row, provider, outcome.unknown)
        elif outcome.requeue and row.state in _OPEN_CALL:
            transition(
                session,
                row,
                S.SUBMITTING,
                "provider has no record of our key after the grace period: resubmitting under it",
            )
            transition(session, row, S.RISK_CHECKED, NOT_FOUND_REQUEUE)

    def record(self, order_id: str, provider: str, result: TopupResult) -> None:
        """Record a normalised result of a submit or query."""
        self.record_all([CallOutcome(order_id, provider, result=result)])

    def record_refusal(self, order_id: str, provider: str, result: TopupResult | None, why: str) -> None:
        self.record_all([CallOutcome(order_id, provider, result=result, refused=why)])

    def record_unavailable(self, order_id: str, provider: str, exc: Exception) -> None:
        self.record_all([CallOutcome(order_id, provider, unavailable=str(exc))])

    def record_unknown(self, order_id: str, provider: str, why: str) -> None:
        self.record_all([CallOutcome(order_id, provider, unknown=why)])

    def _record(self, session: Session, row: Order, provider: str, result: TopupResult) -> None:
        if result.status is TopupStatus.SUCCEEDED:
            self._record_success(session, row, provider, result)
        elif result.status is TopupStatus.FAILED_NOT_CHARGED:
            self._record_refusal(session, row, provider, result, result.detail or str(result.refusal))
        elif result.status is TopupStatus.REVERSED:
            if row.state in _OPEN_CALL:
                transition(
                    session,
                    row,
                    S.FAILED_FINAL,
                    f"{provider} reversed the top-up",
                    refund_reason=int(RefundReason.PROVIDER_REJECTED),
                )
        else:
            self._record_unknown(
                session, row, provider, f"{result.status.value}: {result.detail or result.provider_code}"
            )

    def _record_success(self, session: Session, row: Order, provider: str, result: TopupResult) -> None:
        assert result.receipt is not None
        if row.state not in _OPEN_CALL:
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
            receipt_hash=Web3.to_hex(protocol.receipt_hash(receipt)),
            fulfilled_at=result.receipt.completed_at,
            last_error=None,
        )

    def _record_refusal(
        self, session: Session, row: Order, provider: str, result: TopupResult | None, why: str
    ) -> None:
        refusal = result.refusal if result is not None else None
        if row.state not in _OPEN_CALL:
            return
        target = failover_target(row.providers, row.provider_index, refusal)
        if target is not None:
            next_provider = row.providers[target]
            transition(
                session,
                row,
                S.SUBMITTING,
                f"{provider} refused and did not charge ({why}); failing over to {next_provider}",
                provider_index=target,
            )
            transition(session, row, S.RISK_CHECKED, f"queued for {next_provider}")
            return
        transition(
            session,
            row,
            S.FAILED_FINAL,
            f"{provider} refused, not charged: {why}",
            refund_reason=int(refund_reason(refusal)),
        )

    def _record_unavailable(self, session: Session, row: Order, provider: str, why: str) -> None:
        if row.state != S.SUBMITTING.value:
            return
        # The breaker refused *this* attempt, but an earlier attempt at this provider (e.g. before a
        # "not found" that only guessed nothing arrived) may have charged: then never fail over.
        earlier_attempts = len(provider_attempts(row.events, provider)) > 1
        if row.provider_index + 1 < len(row.providers) and not earlier_attempts:
            transition(
                session,
                row,
                S.RISK_CHECKED,
                f"{_not_called(provider)} ({why}); failing over",
                provider_index=row.provider_index + 1,
            )
        else:
            transition(
                session,
                row,
                S.RISK_CHECKED,
                f"{_not_called(provider)} ({why}); waiting",
                next_attempt_at=utcnow() + self.policy.query_backoff_max,
                last_error=why,
            )

    def _record_unknown(self, session: Session, row: Order, provider: str, why: str) -> None:
        if row.state not in _OPEN_CALL:
            return
        unknowns = sum(1 for e in row.events if e.to_state == S.UNKNOWN.value)
        fields: dict[str, Any] = {
            "next_attempt_at": utcnow() + unknown_backoff(unknowns, self.policy),
            "last_error": why[:2000],
        }
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
