"""Risk control (issue 14): rules with per-merchant configuration, the decision engine, request signals
and the review queue. Pure rule logic is in ``rules``; the oracle runs ``RiskEngine.decide`` after a
payment and before any top-up; the gateway shows the configuration, the decisions and the queue."""

from cardless.ledger.risk.engine import RiskEngine, rules_for
from cardless.ledger.risk.models import (
    ALL_MERCHANTS,
    Decision,
    RequestSignal,
    RiskConfig,
    RiskDecision,
    RiskListEntry,
)
from cardless.ledger.risk.rules import Facts, Reason, RiskRules, VelocityLimit, Verdict, evaluate
from cardless.ledger.risk.screening import ScreeningList

__all__ = [
    "ALL_MERCHANTS",
    "Decision",
    "Facts",
    "Reason",
    "RequestSignal",
    "RiskConfig",
    "RiskDecision",
    "RiskEngine",
    "RiskListEntry",
    "RiskRules",
    "ScreeningList",
    "VelocityLimit",
    "Verdict",
    "evaluate",
    "rules_for",
]
