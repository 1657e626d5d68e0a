"""The risk rules: configuration and the decision, as pure functions of facts gathered in SQL
(``cardless.ledger.risk.facts``). No I/O here, so the oracle (which decides) and the gateway (which shows
the configuration and the decisions) share one definition.

Every rule that fires adds a :class:`Reason`: a hard action (``hold`` or ``refund``) and/or points of
the anomaly score. The decision is ``refund`` if any reason says refund or the score reaches
``refund_score``; ``hold`` if any reason says hold or the score reaches ``hold_score``; else ``allow``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cardless.ledger.risk.models import Decision

__all__ = ["Facts", "Reason", "RiskRules", "VelocityLimit", "Verdict", "burst_z", "evaluate"]

Action = Literal["hold", "refund"]


class VelocityLimit(BaseModel):
    """At most ``max_orders`` paid orders within the last ``seconds`` (the order under check counts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_orders: int = Field(ge=0, le=1_000_000)
    seconds: int = Field(ge=1, le=90 * 86_400)


class RiskRules(BaseModel):
    """One merchant's rule settings. Defaults suit a shop selling game top-ups to consumers: a few orders
    per wallet or game account per hour, held (not refunded) when exceeded, so a human can look."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wallet_velocity: tuple[VelocityLimit, ...] = (
        VelocityLimit(max_orders=4, seconds=600),
        VelocityLimit(max_orders=20, seconds=86_400),
    )
    account_velocity: tuple[VelocityLimit, ...] = (
        VelocityLimit(max_orders=4, seconds=600),
        VelocityLimit(max_orders=20, seconds=86_400),
    )
    sku_velocity: tuple[VelocityLimit, ...] = ()
    """Per SKU, all buyers together (a run on one SKU)."""
    velocity_action: Action = "hold"
    max_amount: dict[str, int] = Field(default_factory=dict)
    """Token address (any case) -> largest amount of one order in base units; unlisted: unlimited."""
    amount_action: Action = "refund"
    new_wallet_seconds: int = Field(default=86_400, ge=0, le=365 * 86_400)
    """A wallet whose first paid order is younger than this is new."""
    new_wallet_max_orders: int = Field(default=3, ge=0, le=10_000)
    """Orders a new wallet may pay while it is new (held beyond)."""
    new_wallet_max_amount: dict[str, int] = Field(default_factory=dict)
    """Token address -> largest order of a new wallet."""
    burst_window_seconds: int = Field(default=900, ge=60, le=86_400)
    baseline_seconds: int = Field(default=14 * 86_400, ge=3_600, le=90 * 86_400)
    burst_min_orders: int = Field(default=3, ge=2, le=1_000)
    burst_z: float = Field(default=4.0, ge=0.5, le=100.0)
    burst_points: int = Field(default=35, ge=0, le=1_000)
    new_network_points: int = Field(default=30, ge=0, le=1_000)
    """A known wallet or account seen from a network it never used before, within the burst window."""
    new_agent_points: int = Field(default=25, ge=0, le=1_000)
    blocklist_action: Action = "refund"
    screening_action: Action = "refund"
    hold_score: int = Field(default=50, ge=1, le=10_000)
    refund_score: int = Field(default=0, ge=0, le=10_000)
    """0: the score alone never refunds (it holds)."""

    @field_validator("max_amount", "new_wallet_max_amount")
    @classmethod
    def _amounts(cls, value: dict[str, int]) -> dict[str, int]:
        out = {}
        for token, amount in value.items():
            if not (token.startswith("0x") and len(token) == 42):
                raise ValueError(f"{token!r} is not a token address")
            if not 0 <= amount < 2**256:
                raise ValueError("amounts are uint256 base units")
            out[token.lower()] = amount
        return out


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the database says about one paid order at its payment time (``facts.gather``)."""

    token: str
    amount: int
    wallet_counts: tuple[int, ...]
    """Per ``wallet_velocity`` window, the wallet's paid orders in it (this one included)."""
    account_counts: tuple[int, ...]
    sku_counts: tuple[int, ...]
    wallet_age_seconds: float | None
    """Since the wallet's first paid order (None: this is its first)."""
    wallet_orders_while_new: int
    wallet_blocked: bool
    account_blocked: bool
    screened: bool
    wallet_burst: int
    wallet_baseline: int
    account_burst: int
    account_baseline: int
    has_history: bool
    """The wallet or the account had signals before the burst window (so "new network" means something)."""
    new_network: bool
    new_agent: bool


@dataclasses.dataclass(frozen=True)
class Reason:
    rule: str
    detail: str
    action: Action | None = None
    points: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "detail": self.detail, "action": self.action, "points": self.points}


@dataclasses.dataclass(frozen=True)
class Verdict:
    decision: Decision
    score: int
    reasons: tuple[Reason, ...]


def burst_z(count: int, baseline: int, window: int, baseline_seconds: int) -> float:
    """Poisson z-score of ``count`` orders in the burst window against the rate of the ``baseline``
    orders in the ``baseline_seconds`` before it; the expected count has a floor of one order in the
    baseline (a never-seen rate is low, not zero)."""
    span = max(baseline_seconds - window, window)
    expected = max(baseline, 1) * window / span
    return (count - expected) / math.sqrt(expected)


def _velocity(
    rule: str, limits: tuple[VelocityLimit, ...], counts: tuple[int, ...], action: Action
) -> list[Reason]:
    return [
        Reason(rule, f"{count} orders within {limit.seconds} s, limit {limit.max_orders}", action)
        for limit, count in zip(limits, counts, strict=True)
        if count > limit.max_orders
    ]


def evaluate(rules: RiskRules, facts: Facts) -> Verdict:
    reasons: list[Reason] = []
    token = facts.token.lower()
    if facts.wallet_blocked:
        reasons.append(
            Reason("blocklist_wallet", "the paying wallet is on a block list", rules.blocklist_action)
        )
    if facts.account_blocked:
        reasons.append(
            Reason("blocklist_account", "the game account is on a block list", rules.blocklist_action)
        )
    if facts.screened:
        reasons.append(
            Reason("screening", "the paying wallet is on the screening list", rules.screening_action)
        )
    ceiling = rules.max_amount.get(token)
    if ceiling is not None and facts.amount > ceiling:
        reasons.append(
            Reason("amount", f"amount {facts.amount} above the ceiling {ceiling}", rules.amount_action)
        )
    reasons += _velocity("wallet_velocity", rules.wallet_velocity, facts.wallet_counts, rules.velocity_action)
    reasons += _velocity(
        "account_velocity", rules.account_velocity, facts.account_counts, rules.velocity_action
    )
    reasons += _velocity("sku_velocity", rules.sku_velocity, facts.sku_counts, rules.velocity_action)
    new = facts.wallet_age_seconds is None or facts.wallet_age_seconds < rules.new_wallet_seconds
    if new:
        if facts.wallet_orders_while_new > rules.new_wallet_max_orders:
            reasons.append(
                Reason(
                    "new_wallet_orders",
                    f"new wallet: {facts.wallet_orders_while_new} orders, "
                    f"limit {rules.new_wallet_max_orders}",
                    "hold",
                )
            )
        new_ceiling = rules.new_wallet_max_amount.get(token)
        if new_ceiling is not None and facts.amount > new_ceiling:
            reasons.append(
                Reason("new_wallet_amount", f"new wallet: amount {facts.amount} above {new_ceiling}", "hold")
            )
    bursts = []
    for who, count, baseline in (
        ("wallet", facts.wallet_burst, facts.wallet_baseline),
        ("account", facts.account_burst, facts.account_baseline),
    ):
        if count < rules.burst_min_orders:
            continue
        z = burst_z(count, baseline, rules.burst_window_seconds, rules.baseline_seconds)
        if z >= rules.burst_z:
            bursts.append(who)
            reasons.append(
                Reason(
                    f"burst_{who}",
                    f"{count} orders in {rules.burst_window_seconds} s against {baseline} in the baseline "
                    f"(z={z:.1f})",
                    points=rules.burst_points,
                )
            )
    if facts.has_history and facts.new_network:
        reasons.append(
            Reason("new_network", "first order from this client network", points=rules.new_network_points)
        )
    if facts.has_history and facts.new_agent:
        reasons.append(
            Reason("new_agent", "first order from this client (user agent)", points=rules.new_agent_points)
        )
    score = sum(r.points for r in reasons)
    if any(r.action == "refund" for r in reasons) or (rules.refund_score and score >= rules.refund_score):
        decision = Decision.REFUND
    elif any(r.action == "hold" for r in reasons) or score >= rules.hold_score:
        decision = Decision.HOLD
    else:
        decision = Decision.ALLOW
    return Verdict(decision, score, tuple(reasons))
