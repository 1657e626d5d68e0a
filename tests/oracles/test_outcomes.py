"""Provider outcomes, decided without a running system: failover only when the provider provably did
not charge, unknown outcomes queried by our key, "not found" resubmitted under the same key only after
the grace period, and calls made only under this worker's lease."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from adapters import ProviderUnavailable, Refusal
from cardless.ledger import OrderState
from cardless.protocol import RefundReason
from oracles.outcomes import (
    OutcomePolicy,
    Outcomes,
    failover_target,
    refund_reason,
    resubmit_due,
    unknown_backoff,
)
from tests.oracles._ledger import (
    CIPHER,
    FakeAdapter,
    adapters,
    add_order,
    backdate,
    get,
    lease,
    refused,
    states_of,
    unknown,
)

pytestmark = pytest.mark.anyio
S = OrderState
ME = "worker-a"
GRACE = timedelta(seconds=10)


def outcomes(sessions: sessionmaker[Session], *fakes: FakeAdapter) -> Outcomes:
    return Outcomes(sessions, adapters(*fakes), CIPHER, owner=ME, policy=OutcomePolicy(not_found_grace=GRACE))


# ---------------------------------------------------------------------- pure decisions


@pytest.mark.parametrize(
    ("providers", "index", "refusal", "expected"),
    [
        (["a", "b"], 0, Refusal.OUT_OF_STOCK, 1),
        (["a", "b"], 0, Refusal.INSUFFICIENT_BALANCE, 1),
        (["a", "b"], 0, None, 1),
        (["a", "b"], 0, Refusal.INVALID_ACCOUNT, None),  # every provider would refuse the account
        (["a", "b"], 1, Refusal.OUT_OF_STOCK, None),  # nobody left
        (["a"], 0, Refusal.REJECTED, None),
    ],
)
def test_failover_target(
    providers: list[str], index: int, refusal: Refusal | None, expected: int | None
) -> None:
    assert failover_target(providers, index, refusal) == expected


def test_refund_reason_names_the_refusal() -> None:
    assert refund_reason(Refusal.INVALID_ACCOUNT) is RefundReason.INVALID_ACCOUNT
    assert refund_reason(Refusal.OUT_OF_STOCK) is RefundReason.OUT_OF_STOCK
    assert refund_reason(Refusal.REJECTED) is RefundReason.PROVIDER_REJECTED
    assert refund_reason(None) is RefundReason.PROVIDER_REJECTED


def test_resubmit_only_after_the_grace_period_and_only_on_not_found() -> None:
    from datetime import UTC, datetime

    now = datetime(2030, 1, 1, tzinfo=UTC)
    not_found = unknown("0x01", "a", unseen=True)
    assert not resubmit_due(not_found, now - GRACE, now, GRACE)  # still maybe in flight
    assert resubmit_due(not_found, now - GRACE - timedelta(seconds=1), now, GRACE)
    assert not resubmit_due(
        unknown("0x01", "a"), now - timedelta(hours=1), now, GRACE
    )  # a timeout proves nothing
    assert not resubmit_due(not_found, None, now, GRACE)  # never submitted: nothing to resubmit


def test_unknown_backoff_doubles_up_to_the_cap() -> None:
    policy = OutcomePolicy(query_backoff=timedelta(seconds=1), query_backoff_max=timedelta(seconds=30))
    assert [unknown_backoff(n, policy).total_seconds() for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


# ---------------------------------------------------------------------- recorded outcomes


async def test_a_not_charged_refusal_fails_over_and_the_next_provider_succeeds(
    ledger: sessionmaker[Session],
) -> None:
    alpha = FakeAdapter("alpha", on_submit=lambda r: refused(r.order_key, "alpha"))
    beta = FakeAdapter("beta")
    order_id = add_order(ledger)
    lease(ledger, order_id, ME)
    await outcomes(ledger, alpha, beta).submit(order_id)
    row = get(ledger, order_id)
    assert (row.state, row.provider_index) == (S.RISK_CHECKED.value, 1)
    assert "failing over to beta" in row.events[-2].reason

    await outcomes(ledger, alpha, beta).submit(order_id)
    row = get(ledger, order_id)
    assert row.state == S.SUCCEEDED.value and row.receipt_hash and row.receipt
    assert row.receipt["provider"] == "beta"
    assert (alpha.submits[order_id], beta.submits[order_id]) == (1, 1)
    assert beta.requests[0].account == "player-1" and beta.requests[0].order_key == order_id


async def test_an_unknown_outcome_is_never_failed_over(ledger: sessionmaker[Session]) -> None:
    alpha = FakeAdapter("alpha", on_submit=lambda r: unknown(r.order_key, "alpha"))
    beta = FakeAdapter("beta")
    order_id = add_order(ledger)
    lease(ledger, order_id, ME)
    await outcomes(ledger, alpha, beta).submit(order_id)
    row = get(ledger, order_id)
    assert (row.state, row.provider_index) == (S.UNKNOWN.value, 0)
    assert row.next_attempt_at is not None and "timeout" in (row.last_error or "")
    # Querying keeps asking alpha by our key; beta is never called.
    await outcomes(ledger, alpha, beta).query(order_id)
    assert alpha.queries[order_id] == 1 and not beta.submits and not beta.queries
    assert get(ledger, order_id).state == S.UNKNOWN.value


async def test_an_invalid_account_is_refunded_without_failover(ledger: sessionmaker[Session]) -> None:
    alpha = FakeAdapter("alpha", on_submit=lambda r: refused(r.order_key, "alpha", Refusal.INVALID_ACCOUNT))
    order_id = add_order(ledger)
    lease(ledger, order_id, ME)
    await outcomes(ledger, alpha, FakeAdapter("beta")).submit(order_id)
    row = get(ledger, order_id)
    assert row.state == S.FAILED_FINAL.value and row.refund_reason == int(RefundReason.INVALID_ACCOUNT)


async def test_the_last_provider_refusing_refunds(ledger: sessionmaker[Session]) -> None:
    beta = FakeAdapter("beta", on_submit=lambda r: refused(r.order_key, "beta"))
    order_id = add_order(ledger, provider_index=1)
    lease(ledger, order_id, ME)
    await outcomes(ledger, FakeAdapter("alpha"), beta).submit(order_id)
    row = get(ledger, order_id)
    assert row.state == S.FAILED_FINAL.value and row.refund_reason == int(RefundReason.OUT_OF_STOCK)


async def test_a_breaker_refusal_fails_over_only_before_any_attempt_at_that_provider(
    ledger: sessionmaker[Session],
) -> None:
    down = ProviderUnavailable("circuit open", provider="alpha")
    alpha = FakeAdapter("alpha", on_submit=down)
    first = add_order(ledger)
    lease(ledger, first, ME)
    await outcomes(ledger, alpha, FakeAdapter("beta")).submit(first)
    assert get(ledger, first).provider_index == 1  # never called: provably not charged

    # An order whose earlier attempt at alpha ended "unknown", then "not found" past the grace period, is
    # queued for resubmission; if the breaker now refuses, that earlier attempt may still have charged.
    second = add_order(ledger, state=S.UNKNOWN)
    backdate(ledger, second, GRACE * 2)
    lease(ledger, second, ME)
    await outcomes(ledger, FakeAdapter("alpha"), FakeAdapter("beta")).query(second)
    assert get(ledger, second).state == S.RISK_CHECKED.value
    await outcomes(ledger, alpha, FakeAdapter("beta")).submit(second)
    row = get(ledger, second)
    assert (row.state, row.provider_index) == (S.RISK_CHECKED.value, 0)
    assert "waiting" in row.events[-1].reason and row.next_attempt_at is not None


async def test_not_found_within_the_grace_period_stays_unknown(ledger: sessionmaker[Session]) -> None:
    alpha = FakeAdapter("alpha", on_query=lambda key: unknown(key, "alpha", unseen=True))
    order_id = add_order(ledger, state=S.UNKNOWN)
    lease(ledger, order_id, ME)
    await outcomes(ledger, alpha).query(order_id)
    assert get(ledger, order_id).state == S.UNKNOWN.value
    assert not alpha.submits


async def test_not_found_after_the_grace_period_resubmits_under_the_same_key(
    ledger: sessionmaker[Session],
) -> None:
    alpha = FakeAdapter("alpha", on_query=lambda key: unknown(key, "alpha", unseen=True))
    order_id = add_order(ledger, state=S.UNKNOWN)
    backdate(ledger, order_id, GRACE + timedelta(seconds=1))
    lease(ledger, order_id, ME)
    await outcomes(ledger, alpha).query(order_id)
    row = get(ledger, order_id)
    assert (row.state, row.provider_index) == (S.RISK_CHECKED.value, 0)  # same provider, no failover
    assert "resubmitting under it" in row.events[-2].reason

    await outcomes(ledger, alpha).submit(order_id)
    assert alpha.requests[-1].order_key == order_id  # the same idempotency key
    assert get(ledger, order_id).state == S.SUCCEEDED.value
    assert states_of(get(ledger, order_id).events).count(S.SUBMITTING.value) == 3  # two attempts + requeue


async def test_no_call_without_this_workers_lease(ledger: sessionmaker[Session]) -> None:
    alpha = FakeAdapter("alpha")
    unleased = add_order(ledger)
    theirs = add_order(ledger)
    lease(ledger, theirs, "worker-b")
    for order_id in (unleased, theirs):
        await outcomes(ledger, alpha).submit(order_id)
        await outcomes(ledger, alpha).query(order_id)
        assert get(ledger, order_id).state == S.RISK_CHECKED.value
    assert not alpha.submits and not alpha.queries
