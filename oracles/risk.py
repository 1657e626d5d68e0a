"""Risk checks run on every paid order before a provider is called.

Deliberately simple and explicit: a per-order amount ceiling per token and a per-buyer velocity limit.
A rejected order is refunded (reason RISK_REJECTED); nothing is sent to a provider.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from eth_utils import to_checksum_address
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger.models import Order, OrderState, utcnow
from cardless.ledger.store import candidates
from cardless.ledger.transitions import transition
from cardless.protocol import RefundReason
from oracles.failpoints import failpoint

__all__ = ["RiskPolicy", "risk_check_paid"]


@dataclasses.dataclass(frozen=True)
class RiskPolicy:
    max_amount: dict[str, int] = dataclasses.field(default_factory=dict)
    """Token address -> largest amount (base units) one order may carry; tokens not listed are unlimited."""
    max_orders_per_buyer: int = 1_000
    window: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        # Orders carry checksummed addresses: normalise the keys, or a lower-case entry would never apply.
        object.__setattr__(
            self, "max_amount", {to_checksum_address(k): v for k, v in self.max_amount.items()}
        )

    def check(self, session: Session, order: Order) -> str | None:
        """None if the order may proceed, else the reason it may not."""
        ceiling = self.max_amount.get(to_checksum_address(order.token))
        if ceiling is not None and order.amount > ceiling:
            return f"amount {order.amount} above the per-order ceiling {ceiling} for {order.token}"
        since = utcnow() - self.window
        recent = session.execute(
            select(func.count())
            .select_from(Order)
            .where(
                Order.buyer == order.buyer,
                Order.paid_at >= since,
                Order.state != OrderState.QUOTED.value,
            )
        ).scalar_one()
        if recent > self.max_orders_per_buyer:
            limit = self.max_orders_per_buyer
            return f"buyer {order.buyer} paid {recent} orders within {self.window}, limit {limit}"
        return None


def risk_check_paid(sessions: sessionmaker[Session], policy: RiskPolicy) -> int:
    """Stage: pass or reject every paid order (one transaction); returns how many were decided."""
    changed = 0
    with sessions.begin() as session:
        for row in candidates(session, [OrderState.PAID], now=utcnow()):
            verdict = policy.check(session, row)
            if verdict is None:
                transition(session, row, OrderState.RISK_CHECKED, "risk checks passed")
            else:
                transition(
                    session,
                    row,
                    OrderState.FAILED_FINAL,
                    f"risk: {verdict}",
                    refund_reason=int(RefundReason.RISK_REJECTED),
                )
            changed += 1
    if changed:
        failpoint("fulfilment.after_risk_commit")
    return changed
