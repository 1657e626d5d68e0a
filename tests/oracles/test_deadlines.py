"""Deadline refunds: an order is refunded before its deadline only while no provider can have charged
for it; an unknown outcome is never refunded on a guess."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import OrderState
from cardless.protocol import RefundReason
from oracles.deadlines import refund_near_deadline, refundable_before_deadline
from oracles.outcomes import Outcomes
from tests.oracles._ledger import CIPHER, T0, FakeAdapter, adapters, add_order, backdate, get, lease, refused

S = OrderState
MARGIN = 300
NEAR = T0 + MARGIN - 1  # a deadline inside the margin at chain time T0


@pytest.mark.parametrize("state", [S.PAID, S.RISK_CHECKED])
def test_orders_not_yet_sent_to_a_provider_are_refunded_near_the_deadline(
    ledger: sessionmaker[Session], state: OrderState
) -> None:
    near = add_order(ledger, state=state, deadline=NEAR)
    far = add_order(ledger, state=state, deadline=T0 + MARGIN + 1)
    assert refund_near_deadline(ledger, T0, MARGIN) == 1
    row = get(ledger, near)
    assert row.state == S.FAILED_FINAL.value and row.refund_reason == int(RefundReason.DEADLINE_APPROACHING)
    assert get(ledger, far).state == state.value


@pytest.mark.parametrize("state", [S.SUBMITTING, S.UNKNOWN, S.SUCCEEDED, S.PROOF_PENDING])
def test_an_order_a_provider_was_called_for_is_never_refunded_at_the_deadline(
    ledger: sessionmaker[Session], state: OrderState
) -> None:
    order_id = add_order(ledger, state=state, deadline=T0)
    assert refund_near_deadline(ledger, T0, MARGIN) == 0
    assert get(ledger, order_id).state == state.value


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_resubmission_after_not_found_is_not_refunded_but_a_failover_is(
    ledger: sessionmaker[Session], anyio_backend: str
) -> None:
    """Back in ``risk_checked`` after "not found" at the current provider: that provider may still charge,
    so no deadline refund. Back in it after a *not charged* failover: nothing was charged anywhere."""
    requeued = add_order(ledger, state=S.UNKNOWN, deadline=NEAR)
    backdate(ledger, requeued, timedelta(minutes=1))
    failed_over = add_order(ledger, deadline=NEAR)
    alpha = FakeAdapter("alpha", on_submit=lambda r: refused(r.order_key, "alpha"))
    work = Outcomes(ledger, adapters(alpha, FakeAdapter("beta")), CIPHER, owner="me")
    for order_id, step in ((requeued, work.query), (failed_over, work.submit)):
        lease(ledger, order_id, "me")
        await step(order_id)
    assert get(ledger, requeued).state == get(ledger, failed_over).state == S.RISK_CHECKED.value
    assert not refundable_before_deadline(get(ledger, requeued), T0, MARGIN)
    assert refundable_before_deadline(get(ledger, failed_over), T0, MARGIN)


def test_an_order_another_worker_is_submitting_is_left_alone(ledger: sessionmaker[Session]) -> None:
    order_id = add_order(ledger, deadline=NEAR)
    lease(ledger, order_id, "worker-b")
    assert refund_near_deadline(ledger, T0, MARGIN) == 0
    assert get(ledger, order_id).state == S.RISK_CHECKED.value
