"""Deadline refunds: an order is refunded before its deadline only while no provider can have charged
for it; an unknown outcome is never refunded on a guess."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import Order, OrderEvent, OrderState
from cardless.ledger.store import release
from cardless.ledger.transitions import transition
from cardless.protocol import RefundReason
from oracles.deadlines import purge_unpaid_quotes, refund_near_deadline, refundable_before_deadline
from oracles.outcomes import Outcomes
from tests.oracles._ledger import (
    CIPHER,
    T0,
    FakeAdapter,
    adapters,
    add_order,
    backdate,
    get,
    lease,
    refused,
    worker,
)
from tests.support.orders import order_row
from tests.support.postgres import BACKENDS

# Every test on SQLite and on PostgreSQL (the database several workers share in production).
LEDGER_BACKENDS = BACKENDS

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
async def test_a_resubmission_after_not_found_and_a_failover_are_both_refundable(
    ledger: sessionmaker[Session], anyio_backend: str
) -> None:
    """Back in ``risk_checked`` after "not found" past the grace at the current provider: the attempt never
    reached it (the evidence resubmission relies on), so inside the margin, where it cannot be resubmitted,
    it is refunded (issue 8; v1 left it to the buyer's reclaim). Back in it after a *not charged* failover:
    nothing was charged anywhere."""
    requeued = add_order(ledger, state=S.UNKNOWN, deadline=NEAR)
    backdate(ledger, requeued, timedelta(minutes=1))
    failed_over = add_order(ledger, deadline=NEAR)
    alpha = FakeAdapter("alpha", on_submit=lambda r: refused(r.order_key, "alpha"))
    work = Outcomes(ledger, adapters(alpha, FakeAdapter("beta")), CIPHER, owner="me")
    for order_id, step in ((requeued, work.query), (failed_over, work.submit)):
        lease(ledger, order_id, "me")
        await step(order_id)
    assert get(ledger, requeued).state == get(ledger, failed_over).state == S.RISK_CHECKED.value
    assert refundable_before_deadline(get(ledger, requeued), T0, MARGIN)
    assert refundable_before_deadline(get(ledger, failed_over), T0, MARGIN)


def test_an_order_another_worker_is_submitting_is_left_alone(ledger: sessionmaker[Session]) -> None:
    order_id = add_order(ledger, deadline=NEAR)
    lease(ledger, order_id, "worker-b")
    assert refund_near_deadline(ledger, T0, MARGIN) == 0
    assert get(ledger, order_id).state == S.RISK_CHECKED.value


# ---------------------------------------------------------------------------------- purging unpaid quotes

RETENTION = 3_600


def _quoted(ledger: sessionmaker[Session], expiry: int, *, then: Sequence[OrderState] = ()) -> str:
    """A quoted order whose quote expires at ``expiry`` (chain time), then moved through ``then``."""
    with ledger.begin() as session:
        row = order_row(quote_expiry=expiry, fulfilment_deadline=expiry + 3_600)
        session.add(row)
        session.flush()
        for step in then:
            fields = {"paid_tx": "0x" + "ab" * 32, "paid_block": 7} if step is S.PAID else {}
            transition(session, row, step, f"test: {step}", **fields)
        return row.id


def test_unpaid_quotes_are_deleted_with_their_timeline_only_well_after_expiry(
    ledger: sessionmaker[Session],
) -> None:
    old_quoted = _quoted(ledger, T0 - RETENTION - 1)
    old_expired = _quoted(ledger, T0 - RETENTION - 1, then=[S.EXPIRED])
    recent_expired = _quoted(ledger, T0 - RETENTION, then=[S.EXPIRED])  # not *more* than the retention
    paid_in_expiry_block = _quoted(ledger, T0 - 2 * RETENTION, then=[S.EXPIRED, S.PAID])
    assert purge_unpaid_quotes(ledger, T0, RETENTION) == 2
    with ledger() as session:
        left = set(session.execute(select(Order.id)).scalars())
        timelines = set(session.execute(select(OrderEvent.order_id)).scalars())
    assert left == {recent_expired, paid_in_expiry_block}
    assert timelines == {recent_expired, paid_in_expiry_block}
    assert old_quoted not in left and old_expired not in left
    assert purge_unpaid_quotes(ledger, T0, RETENTION) == 0


def test_purging_goes_in_batches(ledger: sessionmaker[Session]) -> None:
    for _ in range(5):
        _quoted(ledger, T0 - RETENTION - 10, then=[S.EXPIRED])
    assert [purge_unpaid_quotes(ledger, T0, RETENTION, batch=2) for _ in range(4)] == [2, 2, 1, 0]


@pytest.mark.anyio
async def test_the_worker_never_calls_a_provider_for_an_order_it_could_not_settle_in_time(
    ledger: sessionmaker[Session],
) -> None:
    """A top-up that may complete after the deadline can never be settled (the escrow refuses a proof with
    ``fulfilledAt > fulfilmentDeadline``): inside the margin the order is refunded, and no provider is
    called even between the periodic deadline jobs."""
    near = add_order(ledger, deadline=NEAR)
    far = add_order(ledger, deadline=T0 + MARGIN + 1)
    provider = FakeAdapter("alpha")
    w = worker(ledger, provider, "worker-a", deadline_margin=MARGIN)

    assert w.start_provider_calls(S.RISK_CHECKED, chain_now=T0) == 2  # one refunded, one submitted
    await w.drain()

    assert provider.submits == {far: 1}
    row = get(ledger, near)
    assert row.state == S.FAILED_FINAL.value and row.refund_reason == int(RefundReason.DEADLINE_APPROACHING)
    assert get(ledger, far).state == S.SUCCEEDED.value


@pytest.mark.anyio
async def test_orders_too_late_to_submit_never_crowd_out_the_others(ledger: sessionmaker[Session]) -> None:
    """Orders back in ``risk_checked`` near their deadline after an attempt (not refundable, not to be
    submitted) are the oldest; a worker claims from a window of a few due rows, so they are left out in
    SQL, or they would fill the window every tick and the order behind them would never be called."""
    alpha = FakeAdapter("alpha")  # "not found" by our key: queued for resubmission under it
    requeue = Outcomes(ledger, adapters(alpha, FakeAdapter("beta")), CIPHER, owner="me")
    late = []
    for _ in range(5):
        order_id = add_order(ledger, state=S.UNKNOWN, deadline=NEAR)
        backdate(ledger, order_id, timedelta(minutes=1))
        lease(ledger, order_id, "me")
        await requeue.query(order_id)
        with ledger.begin() as session:
            release(session, [order_id], "me")
        assert get(ledger, order_id).state == S.RISK_CHECKED.value
        late.append(order_id)
    far = add_order(ledger, deadline=T0 + 3_600)
    w = worker(ledger, alpha, "worker-a", deadline_margin=MARGIN, submit_concurrency=1)  # a window of 4

    # 5 refunded (the provider's "not found" past the grace cleared their attempt), 1 submitted
    assert w.start_provider_calls(S.RISK_CHECKED, chain_now=T0) == 6
    await w.drain()
    assert alpha.submits == {far: 1}
    for order_id in late:
        row = get(ledger, order_id)
        assert row.state == S.FAILED_FINAL.value and row.refund_reason == int(
            RefundReason.DEADLINE_APPROACHING
        )


@pytest.mark.anyio
async def test_an_order_sent_back_by_not_found_inside_the_margin_is_refunded(
    ledger: sessionmaker[Session],
) -> None:
    """v1 (issue 8, noticed in steps 1-4): a provider's "not found" past the grace period sent the order back
    to ``risk_checked``; inside the deadline margin it was then neither resubmitted nor refunded and waited
    for the buyer's reclaim (deadline + settlement grace). The "not found" proves the attempt never reached
    the provider, the same evidence resubmission relies on, so the order is refunded at once. An order whose
    attempt has an unknown outcome is still left to the provider's answer."""
    alpha = FakeAdapter("alpha")
    requeue = Outcomes(ledger, adapters(alpha, FakeAdapter("beta")), CIPHER, owner="me")
    not_found = add_order(ledger, state=S.UNKNOWN, deadline=NEAR)
    backdate(ledger, not_found, timedelta(minutes=1))
    lease(ledger, not_found, "me")
    await requeue.query(not_found)
    with ledger.begin() as session:
        release(session, [not_found], "me")
    still_unknown = add_order(ledger, state=S.UNKNOWN, deadline=NEAR)

    assert refund_near_deadline(ledger, T0, MARGIN) == 1

    row = get(ledger, not_found)
    assert row.state == S.FAILED_FINAL.value and row.refund_reason == int(RefundReason.DEADLINE_APPROACHING)
    assert get(ledger, still_unknown).state == S.UNKNOWN.value
    assert not alpha.submits
