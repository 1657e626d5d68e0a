"""Risk checks on a migrated SQLite file: the per-token amount ceiling and the per-buyer velocity limit.

The worker checks an order in state ``paid`` with ``paid_at`` set, so the order under check counts
towards its buyer's velocity: ``max_orders_per_buyer=n`` lets n paid orders through per window.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import Order, OrderState
from cardless.ledger.models import utcnow
from oracles.risk import RiskPolicy
from tests.support import orders as support_orders

S = OrderState
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
ETH = "0x0000000000000000000000000000000000000000"
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20


@pytest.fixture
def session(migrated_db: sessionmaker[Session]) -> Iterator[Session]:
    with migrated_db() as session:
        yield session


def add_order(
    session: Session,
    *,
    buyer: str = ALICE,
    token: str = USDC,
    amount: int = 10_000_000,
    state: OrderState = S.PAID,
    paid_at: datetime | None = None,
) -> Order:
    """The shared order factory with risk's defaults: a paid order is paid now unless told otherwise."""
    paid = paid_at if paid_at is not None or state is S.QUOTED else utcnow()
    return support_orders.add_order(
        session, state=state, buyer=buyer, token=token, amount=amount, paid_at=paid
    )


# ---------------------------------------------------------------------- amount ceiling


def test_amount_up_to_the_ceiling_passes_and_above_it_is_refused(session: Session) -> None:
    policy = RiskPolicy(max_amount={USDC: 500_000_000})
    assert policy.check(session, add_order(session, amount=500_000_000)) is None
    over = add_order(session, amount=500_000_001)
    verdict = policy.check(session, over)
    assert verdict is not None
    assert "500000001" in verdict and "500000000" in verdict and USDC in verdict


def test_the_ceiling_is_per_token_and_unlisted_tokens_are_unlimited(session: Session) -> None:
    policy = RiskPolicy(max_amount={USDC: 100})
    assert policy.check(session, add_order(session, token=ETH, amount=2**256 - 1)) is None
    assert RiskPolicy().check(session, add_order(session, amount=2**255)) is None
    assert policy.check(session, add_order(session, amount=101)) is not None


def test_the_ceiling_applies_whatever_the_address_case(session: Session) -> None:
    policy = RiskPolicy(max_amount={USDC.lower(): 100})
    assert policy.check(session, add_order(session, amount=101)) is not None


# ---------------------------------------------------------------------- velocity


def test_a_buyer_may_pay_up_to_the_limit_within_the_window(session: Session) -> None:
    policy = RiskPolicy(max_orders_per_buyer=3, window=timedelta(hours=1))
    for _ in range(3):
        assert policy.check(session, add_order(session)) is None
    fourth = add_order(session)
    verdict = policy.check(session, fourth)
    assert verdict is not None
    assert ALICE in verdict and "paid 4 orders" in verdict and "limit 3" in verdict


def test_velocity_counts_only_this_buyers_paid_orders_inside_the_window(session: Session) -> None:
    policy = RiskPolicy(max_orders_per_buyer=2, window=timedelta(hours=1))
    add_order(session, paid_at=utcnow() - timedelta(hours=2))  # outside the window
    add_order(session, paid_at=utcnow() - timedelta(hours=1, minutes=1))
    add_order(session, state=S.QUOTED)  # quoted, never paid
    add_order(session, buyer=BOB)
    add_order(session, buyer=BOB)
    add_order(session, buyer=BOB)
    assert policy.check(session, add_order(session)) is None
    assert policy.check(session, add_order(session, paid_at=utcnow() - timedelta(minutes=59))) is None
    assert policy.check(session, add_order(session)) is not None


def test_orders_that_closed_still_count_towards_velocity(session: Session) -> None:
    """A refunded (e.g. risk-rejected) order was still paid: retrying must not reset the count."""
    policy = RiskPolicy(max_orders_per_buyer=2)
    add_order(session, state=S.REFUNDED)
    add_order(session, state=S.SETTLED)
    assert policy.check(session, add_order(session)) is not None


def test_amount_is_checked_before_velocity(session: Session) -> None:
    policy = RiskPolicy(max_amount={USDC: 10}, max_orders_per_buyer=0)
    verdict = policy.check(session, add_order(session, amount=11))
    assert verdict is not None and "ceiling" in verdict
    verdict = policy.check(session, add_order(session, amount=10))
    assert verdict is not None and "limit 0" in verdict


def test_the_risk_stage_passes_or_rejects_every_paid_order(ledger: sessionmaker[Session]) -> None:
    """A rejected order goes to ``failed_final`` with RISK_REJECTED (a move the state table once refused,
    which stalled the stage on the first rejection)."""
    from cardless.protocol import RefundReason
    from oracles.risk import risk_check_paid
    from tests.oracles._ledger import add_order, get

    ok = add_order(ledger, state=S.PAID)
    too_big = add_order(ledger, state=S.PAID)
    with ledger.begin() as s:
        row = s.get(Order, too_big)
        assert row is not None
        row.amount = 10**18
    assert risk_check_paid(ledger, RiskPolicy(max_amount={ETH: 10**17})) == 2
    assert get(ledger, ok).state == S.RISK_CHECKED.value
    rejected = get(ledger, too_big)
    assert rejected.state == S.FAILED_FINAL.value and rejected.refund_reason == int(
        RefundReason.RISK_REJECTED
    )
