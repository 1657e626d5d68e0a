"""The risk stage in the oracle: every paid order is allowed (-> risk_checked), held (stays paid, out of
the stage, in the review queue) or refunded (-> failed_final, RISK_REJECTED), with the decision stored;
a hold nobody closes is refunded by the deadline job before the deadline; reviewers approve or refund."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import Order, OrderState
from cardless.ledger.models import utcnow
from cardless.ledger.risk import RiskDecision, RiskEngine, RiskRules, VelocityLimit, review
from cardless.protocol import RefundReason
from oracles.deadlines import refund_near_deadline
from oracles.risk import RiskPolicy, risk_check_paid
from tests.oracles._ledger import CIPHER, T0, add_order, get

S = OrderState
ONE_A_WINDOW = RiskPolicy(
    engine=RiskEngine(
        defaults=RiskRules(
            wallet_velocity=(VelocityLimit(max_orders=1, seconds=3_600),), burst_min_orders=1000
        ),
        cipher=CIPHER,
    )
)


def paid_orders(ledger: sessionmaker[Session], n: int, *, amount: int | None = None) -> list[str]:
    ids = [add_order(ledger, state=S.PAID, deadline=T0 + 3_600) for _ in range(n)]
    with ledger.begin() as s:
        for i, order_id in enumerate(ids):
            row = s.get(Order, order_id)
            assert row is not None
            row.paid_at = utcnow() - timedelta(minutes=10 - i)
            if amount is not None:
                row.amount = amount
    return ids


def decisions(ledger: sessionmaker[Session], order_id: str) -> list[RiskDecision]:
    with ledger() as s:
        return list(s.execute(select(RiskDecision).where(RiskDecision.order_id == order_id)).scalars())


def test_the_stage_allows_holds_and_refunds_and_stores_each_decision(ledger: sessionmaker[Session]) -> None:
    first, second = paid_orders(ledger, 2)
    assert risk_check_paid(ledger, ONE_A_WINDOW) == 2
    assert get(ledger, first).state == S.RISK_CHECKED.value
    held = get(ledger, second)
    assert held.state == S.PAID.value and held.risk_hold_at is not None
    (row,) = decisions(ledger, second)
    assert row.decision == "hold" and row.reasons[0]["rule"] == "wallet_velocity"
    assert decisions(ledger, first)[0].decision == "allow"
    assert held.events[-1].reason.startswith("risk: held for review: wallet_velocity")
    assert (held.events[-1].from_state, held.events[-1].to_state) == (S.PAID.value, S.PAID.value)
    # The account hash was filled in from the ciphertext (the quote did not record it here).
    assert held.account_hash == CIPHER.account_hash("player-1")
    assert risk_check_paid(ledger, ONE_A_WINDOW) == 0  # a held order is not decided again

    (big,) = paid_orders(ledger, 1, amount=10**18)
    eth = "0x" + "00" * 20
    refusing = RiskPolicy(engine=RiskEngine(defaults=RiskRules(max_amount={eth: 10**17})))
    assert risk_check_paid(ledger, refusing) == 1
    rejected = get(ledger, big)
    assert rejected.state == S.FAILED_FINAL.value
    assert rejected.refund_reason == int(RefundReason.RISK_REJECTED)
    assert decisions(ledger, big)[0].reasons[0]["rule"] == "amount"


def test_review_approve_releases_and_refund_rejects_a_held_order(ledger: sessionmaker[Session]) -> None:
    ids = paid_orders(ledger, 3)
    risk_check_paid(ledger, ONE_A_WINDOW)
    with ledger() as s:
        queue = review.held_orders(s)
        assert [h.order.id for h in queue] == ids[1:]
        assert review.held_orders(s, merchant="0x" + "99" * 20) == []
        assert [h.order.id for h in review.held_orders(s, held_after=queue[0].order.risk_hold_at)] == ids[2:]
    with ledger.begin() as s:
        with pytest.raises(review.NotHeld):
            review.approve(s, ids[0], reviewer="operator")  # allowed, never held
        with pytest.raises(review.NotHeld):
            review.approve(s, ids[1], reviewer="key", merchant="0x" + "99" * 20)  # another merchant's
        review.approve(s, ids[1], reviewer="operator", note="known buyer")
        review.refund(s, ids[2], reviewer="merchant key abc")
    approved, refunded = get(ledger, ids[1]), get(ledger, ids[2])
    assert approved.state == S.RISK_CHECKED.value and approved.risk_hold_at is None
    assert refunded.state == S.FAILED_FINAL.value and refunded.refund_reason == int(
        RefundReason.RISK_REJECTED
    )
    assert decisions(ledger, ids[1])[0].review_action == "approve"
    assert decisions(ledger, ids[2])[0].reviewer == "merchant key abc"
    with ledger.begin() as s, pytest.raises(review.NotHeld):
        review.refund(s, ids[2], reviewer="operator")  # closed already
    with ledger() as s:
        assert review.held_orders(s) == []


def test_a_hold_nobody_closes_is_refunded_before_its_deadline(ledger: sessionmaker[Session]) -> None:
    allowed, held = paid_orders(ledger, 2)
    risk_check_paid(ledger, ONE_A_WINDOW)
    assert refund_near_deadline(ledger, T0, margin=300) == 0  # deadline T0 + 3600: not yet
    # Both: the allowed one was never submitted either (no provider ran in this test).
    assert refund_near_deadline(ledger, T0 + 3_600 - 299, margin=300) == 2
    assert get(ledger, allowed).state == S.FAILED_FINAL.value
    row = get(ledger, held)
    assert row.state == S.FAILED_FINAL.value and row.refund_reason == int(RefundReason.DEADLINE_APPROACHING)
    with ledger() as s:
        assert review.held_orders(s) == []


def test_the_stage_writes_one_decision_row_per_order_as_decide_would(ledger: sessionmaker[Session]) -> None:
    """The stage writes its decisions in one statement, outside the unit of work: each order still gets
    exactly one row with its merchant, verdict, score and reasons, and a rolled-back stage writes none."""
    ids = paid_orders(ledger, 3)
    with ledger() as s:  # the stage's verdicts, rolled back: nothing is kept
        rows = [s.get(Order, order_id) for order_id in ids]
        ONE_A_WINDOW.engine.decide_many(s, rows)  # type: ignore[arg-type]
        s.rollback()
    assert [decisions(ledger, order_id) for order_id in ids] == [[], [], []]
    with ledger() as s:  # what deciding them one by one would store
        expected = []
        for order_id in ids:
            row = s.get(Order, order_id)
            assert row is not None
            _, kept = ONE_A_WINDOW.engine.decide(s, row)
            expected.append((kept.merchant, kept.decision, kept.score, kept.reasons))
        s.rollback()
    assert risk_check_paid(ledger, ONE_A_WINDOW) == 3
    written = [decisions(ledger, order_id) for order_id in ids]
    assert [len(rows) for rows in written] == [1, 1, 1]
    assert [(r.merchant, r.decision, r.score, r.reasons) for (r,) in written] == expected
    assert all(r.decided_at is not None and r.review_action is None for (r,) in written)
    assert [r.decision for (r,) in written] == ["allow", "hold", "hold"]
