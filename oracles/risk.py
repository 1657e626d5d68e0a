"""The risk stage: every paid order is decided before any provider is called (``cardless.ledger.risk``).

- allow: ``paid -> risk_checked``;
- hold: the order stays ``paid`` with ``risk_hold_at`` set, out of this stage, until a reviewer approves
  or refunds it (``cardless.ledger.risk.review``); nobody acting, the deadline job refunds it before its
  fulfilment deadline (``oracles.deadlines.refund_near_deadline``), since no provider was called;
- refund: ``paid -> failed_final`` with reason RISK_REJECTED; nothing is sent to a provider.

Each decision is stored with its reasons and score (``risk_decisions``) in the transaction that acts
on it.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger.models import Order, OrderState, utcnow
from cardless.ledger.risk import Decision, RiskEngine
from cardless.ledger.risk.rules import Verdict
from cardless.ledger.risk.signals import purge_signals
from cardless.ledger.store import candidates
from cardless.ledger.transitions import stage_event, transition
from cardless.protocol import RefundReason
from oracles.failpoints import failpoint

__all__ = ["RiskPolicy", "purge_request_signals", "risk_check_paid"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RiskPolicy:
    """The operator's risk settings for this oracle: the engine (default rules, screening list) and how
    long request signals are kept."""

    engine: RiskEngine = dataclasses.field(default_factory=RiskEngine)
    signal_retention: timedelta = timedelta(days=30)


def _summary(reasons: tuple[object, ...]) -> str:
    return "; ".join(f"{r.rule}: {r.detail}" for r in reasons)  # type: ignore[attr-defined]


def decide(session: Session, engine: RiskEngine, row: Order) -> Decision:
    """Decide one paid order and act on it in ``session`` (the caller commits)."""
    verdict, _ = engine.decide(session, row)
    return act(session, row, verdict)


def act(session: Session, row: Order, verdict: Verdict) -> Decision:
    """Act on ``verdict`` for ``row`` in ``session``: allow, hold or refund (the caller commits)."""
    why = _summary(verdict.reasons)
    if verdict.decision is Decision.ALLOW:
        transition(session, row, OrderState.RISK_CHECKED, f"risk checks passed (score {verdict.score})")
    elif verdict.decision is Decision.HOLD:
        now = utcnow()
        row.risk_hold_at = row.updated_at = now
        # The state does not change (transition() is not called), but the timeline says why it waits.
        stage_event(
            session,
            row.id,
            at=now,
            from_state=row.state,
            to_state=row.state,
            reason=f"risk: held for review: {why}",
            detail={"score": verdict.score},
        )
        log.info("order %s held for review (score %d): %s", row.id, verdict.score, why)
    else:
        transition(
            session,
            row,
            OrderState.FAILED_FINAL,
            f"risk: {why}",
            detail={"score": verdict.score},
            refund_reason=int(RefundReason.RISK_REJECTED),
        )
    return verdict.decision


def risk_check_paid(sessions: sessionmaker[Session], policy: RiskPolicy) -> int:
    """Stage: decide every paid order not already held (one transaction); returns how many."""
    changed = 0
    with sessions.begin() as session:
        rows = candidates(session, [OrderState.PAID], now=utcnow(), where=[Order.risk_hold_at.is_(None)])
        # Every order's facts in one read, then the verdicts: a read between two decisions flushed the
        # decision before it (a tenth of the oracle's CPU per order, docs/benchmarks.md).
        for row, (verdict, _) in zip(rows, policy.engine.decide_many(session, rows), strict=True):
            act(session, row, verdict)
            changed += 1
    if changed:
        failpoint("fulfilment.after_risk_commit")
    return changed


def purge_request_signals(sessions: sessionmaker[Session], policy: RiskPolicy) -> int:
    """Periodic job: delete request signals older than the retention period."""
    with sessions.begin() as session:
        return purge_signals(session, policy.signal_retention)
