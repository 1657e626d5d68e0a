"""The fulfilment state machine: the only place an order's state changes.

Every change goes through :func:`transition`, which checks the move is allowed, applies the fields
that go with it and appends the timeline entry, all in the caller's database transaction. The caller
commits *before* any external effect that depends on the new state (the outbox rule): a crash after
the commit and before the effect is recovered from the persisted state, never by guessing.

The analytics rollups follow the order here too: the change of its share (payment time, amount, seconds
to fulfil, refund reason) is staged with ``cardless.ledger.rollups.record`` and written at commit.

The states merchants hear about (paid, succeeded = fulfilled, settled, refunded, reclaimed) also stage
their webhook event here (``cardless.ledger.outbox.record_order_event``), so the event commits or rolls
back with the state change itself.

::

    quoted ──► paid ──► risk_checked ──► submitting ──► succeeded ──► proof_pending ──► settled
      │         │            │              │   ▲  │
      ▼         │            │              ▼   │  ▼
    expired     │            │           unknown ─┘ failed_final ──► refund_pending ──► refunded
                └────────────┴───────────────────────────┘
    any open state after the deadline ──► reclaimed (someone called reclaim on chain)
    paid, risk_checked ──► quoted: the payment was reorganised out before any provider was called
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, event, insert, update
from sqlalchemy.orm import Session

from cardless.ledger._exceptions import LedgerError
from cardless.ledger._per_transaction import per_transaction
from cardless.ledger.models import Order, OrderEvent, OrderState, ProviderAttempt, utcnow
from cardless.ledger.outbox import has_staged_order_events, record_order_event, write_staged_order_events
from cardless.ledger.rollups import SHARE_FIELDS, share
from cardless.ledger.rollups import record as record_rollups

__all__ = ["ALLOWED", "IllegalTransition", "stage_event", "transition"]

S = OrderState

ALLOWED: dict[OrderState, frozenset[OrderState]] = {
    S.QUOTED: frozenset({S.PAID, S.EXPIRED}),
    S.EXPIRED: frozenset({S.PAID}),  # a payment can land in the same block the quote expires
    # paid -> failed_final: rejected by the risk checks; risk_checked -> failed_final: the deadline
    # approaches before a provider was called. Both are then refunded like any failed order.
    # paid/risk_checked -> quoted: a reorganisation took the payment away before a provider was called
    # (oracles.reorgs); if the payment is mined again, the watcher applies it again.
    S.PAID: frozenset(
        {S.RISK_CHECKED, S.FAILED_FINAL, S.REFUND_PENDING, S.RECLAIMED, S.SETTLED, S.REFUNDED, S.QUOTED}
    ),
    S.RISK_CHECKED: frozenset(
        {S.SUBMITTING, S.FAILED_FINAL, S.REFUND_PENDING, S.RECLAIMED, S.REFUNDED, S.QUOTED}
    ),
    # submitting -> submitting: failover to the next provider (only when provably not charged)
    # submitting -> risk_checked: the circuit breaker refused the call, so the provider was never called
    S.SUBMITTING: frozenset(
        {S.SUCCEEDED, S.UNKNOWN, S.FAILED_FINAL, S.SUBMITTING, S.RISK_CHECKED, S.RECLAIMED}
    ),
    S.UNKNOWN: frozenset({S.SUCCEEDED, S.FAILED_FINAL, S.SUBMITTING, S.RECLAIMED}),
    S.SUCCEEDED: frozenset({S.PROOF_PENDING, S.RECLAIMED, S.SETTLED}),
    # proof_pending -> failed_final: the proof can never settle (the top-up completed after the deadline,
    # or the settlement window closed first), so the order is refunded like any failed one.
    S.PROOF_PENDING: frozenset({S.SETTLED, S.FAILED_FINAL, S.RECLAIMED}),
    S.FAILED_FINAL: frozenset({S.REFUND_PENDING, S.RECLAIMED, S.REFUNDED}),
    S.REFUND_PENDING: frozenset({S.REFUNDED, S.RECLAIMED}),
    S.SETTLED: frozenset(),
    S.REFUNDED: frozenset(),
    S.RECLAIMED: frozenset(),
}


class IllegalTransition(LedgerError):  # noqa: N818 - names the event, like web3's ContractLogicError
    def __init__(self, order_id: str, from_state: str, to_state: str) -> None:
        super().__init__(f"order {order_id}: {from_state} -> {to_state} is not allowed")
        self.order_id = order_id
        self.from_state = from_state
        self.to_state = to_state


def transition(
    session: Session,
    order: Order,
    to: OrderState,
    reason: str,
    *,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
    **fields: Any,
) -> None:
    """Move ``order`` to ``to`` with ``reason``, setting ``fields`` on it. Does not commit."""
    current = OrderState(order.state)
    if to not in ALLOWED[current]:
        raise IllegalTransition(order.id, current, to)
    # The share is what the rollups count; a move that sets none of its fields leaves it as it was, so
    # it is neither computed twice nor compared (2 % of the oracle's CPU at saturation).
    before = share(order) if not SHARE_FIELDS.isdisjoint(fields) else None
    for name, value in fields.items():
        if not hasattr(Order, name):
            raise AttributeError(f"Order has no field {name!r}")
        setattr(order, name, value)
    now = at or utcnow()
    order.state = to.value
    order.updated_at = now
    # closed_at marks when the order stopped needing work; a late payment re-opens an expired quote.
    order.closed_at = now if to in (S.SETTLED, S.REFUNDED, S.RECLAIMED, S.EXPIRED) else None
    staged = _staged(session)
    staged.events.append(
        {
            "order_id": order.id,
            "at": now,
            "from_state": current.value,
            "to_state": to.value,
            "reason": reason,
            "detail": detail,
        }
    )
    _record_attempt(staged, order, current, to, detail, now)
    record_order_event(session, order, to, now)
    if not SHARE_FIELDS.isdisjoint(fields):
        record_rollups(session, before, share(order))


def stage_event(
    session: Session,
    order_id: str,
    *,
    at: datetime,
    from_state: str | None,
    to_state: str,
    reason: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Stage a timeline entry that is not a state change (a hold for review, say) behind the order's
    staged changes, so the timeline keeps the order in which they happened. Does not commit."""
    _staged(session).events.append(
        {
            "order_id": order_id,
            "at": at,
            "from_state": from_state,
            "to_state": to_state,
            "reason": reason,
            "detail": detail,
        }
    )


@dataclasses.dataclass
class _Staged:
    """The rows a transaction's transitions add beside the orders' own: written after the session's next
    flush (which writes the orders) as one multi-row statement per table, instead of one ORM object and
    unit-of-work entry each, and one ``UPDATE`` (and so one autoflush) per answered provider call."""

    transaction: Any
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The provider calls opened in this transaction (answered in it, too, if they were)."""
    open: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """order id -> its call among ``attempts`` not answered yet."""
    answers: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """order id -> the answer to its open call written before (the first answer wins, as the
    ``answered_at IS NULL`` guard makes any later one match nothing)."""

    def empty(self) -> bool:
        return not (self.events or self.attempts or self.answers)


_STAGED = "cardless.ledger.transitions.staged"


def _staged(session: Session) -> _Staged:
    return per_transaction(session, _STAGED, _Staged)


_ANSWER = (
    update(ProviderAttempt.__table__)  # type: ignore[arg-type]
    .where(
        ProviderAttempt.__table__.c.order_id == bindparam("answer_order_id"),
        ProviderAttempt.__table__.c.answered_at.is_(None),
    )
    .values(outcome=bindparam("answer_outcome"), answered_at=bindparam("answer_at"))
)


def _write_staged(session: Session) -> None:
    """Write what the transitions staged, in the order that keeps their meaning: the answers to calls
    opened before, then the calls opened now (so an answer never closes a call opened after it)."""
    kept = session.info.pop(_STAGED, None)
    if not isinstance(kept, _Staged) or kept.transaction is not session.get_transaction() or kept.empty():
        write_staged_order_events(session)
        return
    connection = session.connection()
    if kept.events:
        connection.execute(insert(OrderEvent.__table__), kept.events)  # type: ignore[arg-type]
    if kept.answers:
        connection.execute(_ANSWER, list(kept.answers.values()))
    if kept.attempts:
        connection.execute(insert(ProviderAttempt.__table__), kept.attempts)  # type: ignore[arg-type]
    write_staged_order_events(session)


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: Any) -> None:
    _write_staged(session)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    # Normally the commit's flush writes them; a session with nothing else to flush writes them here.
    kept = session.info.get(_STAGED)
    if (isinstance(kept, _Staged) and not kept.empty()) or has_staged_order_events(session):
        session.flush()
        _write_staged(session)


@event.listens_for(Session, "after_rollback")
def _drop(session: Session) -> None:
    session.info.pop(_STAGED, None)


def _record_attempt(
    staged: _Staged,
    order: Order,
    current: OrderState,
    to: OrderState,
    detail: dict[str, Any] | None,
    now: datetime,
) -> None:
    """Mirror the provider calls into ``provider_attempts``: the first move out of ``submitting`` answers
    the open attempt (at most one: a new one starts only from ``risk_checked``); a move to ``submitting``
    naming a provider opens one. Bookkeeping moves through ``submitting`` name no provider and find no
    open attempt, so they change nothing."""
    if current is S.SUBMITTING:
        opened = staged.open.pop(order.id, None)
        if opened is not None:
            opened["outcome"], opened["answered_at"] = to.value, now
        else:
            staged.answers.setdefault(
                order.id, {"answer_order_id": order.id, "answer_outcome": to.value, "answer_at": now}
            )
    provider = (detail or {}).get("provider")
    if to is S.SUBMITTING and provider is not None:
        opened = staged.open[order.id] = {
            "order_id": order.id,
            "merchant": order.merchant,
            "provider": str(provider),
            "submitted_at": now,
            "outcome": None,
            "answered_at": None,
        }
        staged.attempts.append(opened)
