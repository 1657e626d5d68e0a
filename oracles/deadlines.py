"""Deadlines: expire quotes nobody paid, purge them well after, and refund paid orders whose fulfilment
deadline approaches before any provider could have charged for them.

An order is refunded here only when no submit attempt at its current provider may have charged:
attempts at earlier providers ended in a *not charged* failover (``oracles.outcomes``); at the current
one an attempt is cleared by the provider's "not found" past the grace period (the evidence that also
allows resubmitting under the same key) or by a breaker that refused to call. An attempt with an
unknown outcome is never refunded on a guess; the provider is asked until it answers, and the buyer can
still reclaim on chain after the settlement window. (v1 also left the "not found" orders alone: inside
the margin they could be neither resubmitted nor refunded, and waited for the buyer's reclaim.)
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger.models import ChainTxOrder, Order, OrderEvent, OrderState, utcnow
from cardless.ledger.store import candidates
from cardless.ledger.transitions import transition
from cardless.protocol import RefundReason
from oracles.outcomes import attempts_that_may_have_charged

__all__ = ["expire_quotes", "purge_unpaid_quotes", "refund_near_deadline", "refundable_before_deadline"]

S = OrderState


def refundable_before_deadline(row: Order, chain_now: int, margin: int) -> bool:
    """True when ``row``'s deadline is within ``margin`` seconds of ``chain_now`` and no provider can
    have charged for it (see the module docstring)."""
    if row.state not in (S.PAID.value, S.RISK_CHECKED.value) or row.fulfilment_deadline > chain_now + margin:
        return False
    return not attempts_that_may_have_charged(row.events, row.providers[row.provider_index])


def expire_quotes(sessions: sessionmaker[Session], chain_now: int, grace: int) -> int:
    cutoff = chain_now - grace
    changed = 0
    with sessions.begin() as session:
        # Only the expired rows are locked: the watcher marks the others paid meanwhile.
        for row in candidates(session, [S.QUOTED], now=utcnow(), where=[Order.quote_expiry < cutoff]):
            if row.quote_expiry < cutoff:
                transition(session, row, S.EXPIRED, "quote expired unpaid")
                changed += 1
    return changed


def purge_unpaid_quotes(
    sessions: sessionmaker[Session], chain_now: int, retention: int, *, batch: int = 500
) -> int:
    """Delete orders that were quoted and never paid, with their timelines, once their quote expired
    more than ``retention`` seconds ago (chain time); returns how many. At most ``batch`` per call.

    Every quote is a stored row, so an unpaid one must not stay forever. An ``expired`` order can still
    become ``paid`` when the payment landed in its expiry block and the watcher reads it late, so only a
    row whose expiry is ``retention`` behind the chain's clock, still in ``quoted``/``expired`` and with
    no payment recorded is deleted. The rows are locked first (PostgreSQL), so a watcher marking one paid
    meanwhile either waits and then finds nothing, or wins and the row no longer qualifies."""
    unpaid = (
        Order.state.in_([S.QUOTED.value, S.EXPIRED.value]),
        Order.paid_tx.is_(None),
        Order.quote_expiry < chain_now - retention,
    )
    with sessions.begin() as session:
        ids = list(
            session.execute(
                select(Order.id).where(*unpaid).order_by(Order.quote_expiry).limit(batch).with_for_update()
            ).scalars()
        )
        if not ids:
            return 0
        session.execute(delete(OrderEvent).where(OrderEvent.order_id.in_(ids)))
        session.execute(delete(ChainTxOrder).where(ChainTxOrder.order_id.in_(ids)))  # none expected
        session.execute(delete(Order).where(Order.id.in_(ids), *unpaid))
    return len(ids)


def refund_near_deadline(sessions: sessionmaker[Session], chain_now: int, margin: int) -> int:
    """Stage: move every refundable order near its deadline to ``failed_final`` (reason
    DEADLINE_APPROACHING). Orders another worker holds a lease on are being submitted: left alone."""
    changed = 0
    near = [Order.fulfilment_deadline <= chain_now + margin]
    with sessions.begin() as session:
        # Only orders near their deadline are locked (and their timelines read): locking every paid
        # order here hid them all from the other workers' provider calls while this ran.
        for row in candidates(session, [S.PAID, S.RISK_CHECKED], now=utcnow(), where=near):
            if refundable_before_deadline(row, chain_now, margin):
                transition(
                    session,
                    row,
                    S.FAILED_FINAL,
                    "deadline approaching before a provider was called",
                    refund_reason=int(RefundReason.DEADLINE_APPROACHING),
                )
                changed += 1
    return changed
