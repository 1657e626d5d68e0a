"""The review queue: paid orders the risk engine held, and the two ways a reviewer closes a hold —
approve (the order goes on to its top-up) or refund. A hold nobody closes is refunded by the oracle's
deadline job before the fulfilment deadline (``oracles.deadlines.refund_near_deadline``), like any paid
order no provider was called for."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cardless.ledger._exceptions import LedgerError
from cardless.ledger.models import Order, OrderState, utcnow
from cardless.ledger.risk.models import Decision, RiskDecision
from cardless.ledger.transitions import transition
from cardless.protocol import RefundReason

__all__ = ["HeldOrder", "NotHeld", "approve", "held_orders", "refund"]


class NotHeld(LedgerError):  # noqa: N818 - names the condition, like IllegalTransition
    """The order is not (or no longer) held for review by this caller."""


@dataclasses.dataclass(frozen=True)
class HeldOrder:
    order: Order
    decision: RiskDecision


def held_orders(
    session: Session, *, merchant: str | None = None, limit: int = 100, held_after: datetime | None = None
) -> list[HeldOrder]:
    """Held paid orders, oldest hold first (the nearest to its deadline), ``merchant``: only its orders,
    each with the decision that held it. The next page: pass the last one's ``risk_hold_at`` as
    ``held_after``."""
    query = select(Order).where(Order.risk_hold_at.is_not(None), Order.state == OrderState.PAID.value)
    if merchant is not None:
        query = query.where(Order.merchant == merchant)
    if held_after is not None:
        query = query.where(Order.risk_hold_at > held_after)
    orders = list(session.execute(query.order_by(Order.risk_hold_at, Order.id).limit(limit)).scalars())
    if not orders:
        return []
    decisions: dict[str, RiskDecision] = {}
    for row in session.execute(
        select(RiskDecision)
        .where(
            RiskDecision.order_id.in_([o.id for o in orders]), RiskDecision.decision == Decision.HOLD.value
        )
        .order_by(RiskDecision.id)
    ).scalars():
        decisions[row.order_id] = row  # the latest hold of each
    return [HeldOrder(o, decisions[o.id]) for o in orders if o.id in decisions]


def _held(session: Session, order_id: str, merchant: str | None) -> tuple[Order, RiskDecision]:
    order = session.get(Order, order_id, with_for_update=True)
    if order is None or (merchant is not None and order.merchant != merchant):
        raise NotHeld(f"no order {order_id} held for review")
    if order.risk_hold_at is None or order.state != OrderState.PAID.value:
        raise NotHeld(f"order {order_id} is not held for review (state {order.state})")
    decision = session.execute(
        select(RiskDecision)
        .where(RiskDecision.order_id == order_id, RiskDecision.decision == Decision.HOLD.value)
        .order_by(RiskDecision.id.desc())
        .limit(1)
    ).scalar_one()
    return order, decision


def approve(
    session: Session, order_id: str, *, reviewer: str, merchant: str | None = None, note: str = ""
) -> Order:
    """Release a held order to its top-up (the caller commits)."""
    return _review(session, order_id, "approve", reviewer, merchant, note, OrderState.RISK_CHECKED, None)


def refund(
    session: Session, order_id: str, *, reviewer: str, merchant: str | None = None, note: str = ""
) -> Order:
    """Refund a held order (reason RISK_REJECTED); the caller commits, the oracle signs the refund."""
    reason = int(RefundReason.RISK_REJECTED)
    return _review(session, order_id, "refund", reviewer, merchant, note, OrderState.FAILED_FINAL, reason)


def _review(
    session: Session,
    order_id: str,
    action: str,
    reviewer: str,
    merchant: str | None,
    note: str,
    to: OrderState,
    refund_reason: int | None,
) -> Order:
    """Record the reviewer's action on the hold decision and move the order on, in the caller's
    transaction."""
    order, decision = _held(session, order_id, merchant)
    now = utcnow()
    order.risk_hold_at = None
    decision.review_action, decision.reviewer, decision.reviewed_at = action, reviewer, now
    verb = "approved" if action == "approve" else "refunded"
    detail = f"risk hold {verb} by {reviewer}" + (f": {note}" if note else "")
    fields: dict[str, Any] = {} if refund_reason is None else {"refund_reason": refund_reason}
    transition(session, order, to, detail, at=now, **fields)
    return order
