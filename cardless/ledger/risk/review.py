"""The review queue: paid orders the risk engine held, and the two ways a reviewer closes a hold —
approve (the order goes on to its top-up) or refund. A hold nobody closes is refunded by the oracle's
deadline job before the fulfilment deadline (``oracles.deadlines.refund_near_deadline``), like any paid
order no provider was called for."""

from __future__ import annotations

import dataclasses
from datetime import datetime

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
    order, decision = _held(session, order_id, merchant)
    now = utcnow()
    order.risk_hold_at = None
    decision.review_action, decision.reviewer, decision.reviewed_at = "approve", reviewer, now
    transition(
        session,
        order,
        OrderState.RISK_CHECKED,
        f"risk hold approved by {reviewer}" + (f": {note}" if note else ""),
        at=now,
    )
    return order


def refund(
    session: Session, order_id: str, *, reviewer: str, merchant: str | None = None, note: str = ""
) -> Order:
    """Refund a held order (reason RISK_REJECTED); the caller commits, the oracle signs the refund."""
    order, decision = _held(session, order_id, merchant)
    now = utcnow()
    order.risk_hold_at = None
    decision.review_action, decision.reviewer, decision.reviewed_at = "refund", reviewer, now
    transition(
        session,
        order,
        OrderState.FAILED_FINAL,
        f"risk hold refunded by {reviewer}" + (f": {note}" if note else ""),
        at=now,
        refund_reason=int(RefundReason.RISK_REJECTED),
    )
    return order
