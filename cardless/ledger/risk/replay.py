"""Replay labelled traffic through the risk engine in payment order, each order decided as of its own
payment time (the windows only see what was paid before it): how many injected fraud orders were held
or refunded, and how many normal orders were held (the false-hold rate)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from cardless.ledger.models import Order
from cardless.ledger.risk.engine import RiskEngine
from cardless.ledger.risk.models import Decision

__all__ = ["ReplayReport", "replay"]


@dataclasses.dataclass(frozen=True)
class ReplayReport:
    orders: int
    normal: int
    normal_held: int
    normal_refunded: int
    fraud: int
    fraud_stopped: int
    bursts: int
    bursts_fully_stopped: int
    seconds: float
    decisions: Mapping[str, Decision] = dataclasses.field(repr=False)

    @property
    def false_hold_rate(self) -> float:
        return (self.normal_held + self.normal_refunded) / self.normal if self.normal else 0.0

    @property
    def per_decision_ms(self) -> float:
        return 1_000 * self.seconds / self.orders if self.orders else 0.0

    def as_dict(self) -> dict[str, object]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "decisions"}
        return {**out, "false_hold_rate": self.false_hold_rate, "per_decision_ms": self.per_decision_ms}


def replay(session: Session, engine: RiskEngine, fraud: Mapping[str, int]) -> ReplayReport:
    """Decide every paid order of ``session``'s ledger in payment order; ``fraud``: order id -> burst."""
    started = time.perf_counter()
    decisions: dict[str, Decision] = {}
    orders = session.execute(
        select(Order).where(Order.paid_at.is_not(None)).order_by(Order.paid_at, Order.id)
    )
    for order in orders.scalars():
        verdict, _ = engine.decide(session, order)
        decisions[order.id] = verdict.decision
    seconds = time.perf_counter() - started
    normal = [d for i, d in decisions.items() if i not in fraud]
    stopped = {i for i in fraud if decisions.get(i, Decision.ALLOW) is not Decision.ALLOW}
    bursts: dict[int, bool] = {}
    for order_id, burst in fraud.items():
        bursts[burst] = bursts.get(burst, True) and order_id in stopped
    return ReplayReport(
        orders=len(decisions),
        normal=len(normal),
        normal_held=sum(d is Decision.HOLD for d in normal),
        normal_refunded=sum(d is Decision.REFUND for d in normal),
        fraud=len(fraud),
        fraud_stopped=len(stopped),
        bursts=len(bursts),
        bursts_fully_stopped=sum(bursts.values()),
        seconds=seconds,
        decisions=decisions,
    )
