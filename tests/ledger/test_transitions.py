"""The fulfilment state machine on a migrated SQLite file.

Every allowed transition moves the order and appends its timeline entry (from, to, reason) in the
caller's transaction; every other one raises IllegalTransition and stages nothing; terminal states
set ``closed_at``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import Order, OrderEvent, OrderState, WebhookEvent
from cardless.ledger.models import TERMINAL_STATES, ProviderAttempt
from cardless.ledger.transitions import ALLOWED, IllegalTransition, transition
from tests.support.db import migrated, sqlite_url
from tests.support.orders import add_order

S = OrderState
ALLOWED_PAIRS = sorted((a, b) for a, targets in ALLOWED.items() for b in targets)
DISALLOWED_PAIRS = sorted(
    (a, b) for a, b in itertools.product(OrderState, OrderState) if b not in ALLOWED.get(a, frozenset())
)
CLOSING = {S.SETTLED, S.REFUNDED, S.RECLAIMED, S.EXPIRED}


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    """One database for the module; every test works on orders of its own."""
    with migrated(sqlite_url(tmp_path_factory.mktemp("fulfilment"))) as sessions:
        yield sessions


def new_order(sessions: sessionmaker[Session], state: OrderState) -> str:
    with sessions.begin() as session:
        return add_order(session, state=state).id


def timeline(sessions: sessionmaker[Session], order_id: str) -> list[tuple[str | None, str, str]]:
    with sessions() as session:
        events = session.execute(
            select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)
        ).scalars()
        return [(e.from_state, e.to_state, e.reason) for e in events]


def test_the_table_covers_every_state_and_terminal_states_lead_nowhere() -> None:
    assert set(ALLOWED) == set(OrderState)
    for state in (S.SETTLED, S.REFUNDED, S.RECLAIMED):
        assert ALLOWED[state] == frozenset()
    assert len(ALLOWED_PAIRS) + len(DISALLOWED_PAIRS) == len(OrderState) ** 2


@pytest.mark.parametrize(("from_state", "to_state"), ALLOWED_PAIRS, ids=lambda s: str(s))
def test_every_allowed_transition_moves_the_order_and_writes_its_timeline_entry(
    sessions: sessionmaker[Session], from_state: OrderState, to_state: OrderState
) -> None:
    order_id = new_order(sessions, from_state)
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    with sessions.begin() as session:
        order = session.get(Order, order_id)
        assert order is not None
        transition(session, order, to_state, f"because {to_state}", detail={"k": 1}, at=at, last_error="note")

    with sessions() as session:
        order = session.get(Order, order_id)
        assert order is not None
        assert order.state == to_state.value
        assert order.last_error == "note"
        assert order.updated_at.replace(tzinfo=UTC) == at
        if to_state in CLOSING:
            assert order.closed_at is not None and order.closed_at.replace(tzinfo=UTC) == at
        elif from_state not in CLOSING:
            assert order.closed_at is None
        (event,) = session.execute(select(OrderEvent).where(OrderEvent.order_id == order_id)).scalars()
        assert (event.from_state, event.to_state, event.reason, event.detail) == (
            from_state.value,
            to_state.value,
            f"because {to_state}",
            {"k": 1},
        )
        assert event.at.replace(tzinfo=UTC) == at


@pytest.mark.parametrize(("from_state", "to_state"), DISALLOWED_PAIRS, ids=lambda s: str(s))
def test_every_other_transition_raises_and_stages_nothing(
    sessions: sessionmaker[Session], from_state: OrderState, to_state: OrderState
) -> None:
    order_id = new_order(sessions, from_state)
    with sessions() as session:
        order = session.get(Order, order_id)
        assert order is not None
        with pytest.raises(IllegalTransition) as caught:
            transition(session, order, to_state, "not allowed", provider_ref="must-not-be-set")
        assert (caught.value.order_id, caught.value.from_state, caught.value.to_state) == (
            order_id,
            from_state,
            to_state,
        )
        assert f"{from_state} -> {to_state}" in str(caught.value)
        assert order.state == from_state.value and order.provider_ref is None and order.closed_at is None
        assert not session.new and not session.dirty and not session.deleted
        session.commit()  # a caller that swallows the error commits nothing either

    assert timeline(sessions, order_id) == []
    with sessions() as session:
        order = session.get(Order, order_id)
        assert order is not None and order.state == from_state.value and order.provider_ref is None


def test_state_and_timeline_entry_commit_or_roll_back_together(sessions: sessionmaker[Session]) -> None:
    order_id = new_order(sessions, S.PAID)
    with pytest.raises(RuntimeError), sessions.begin() as session:
        order = session.get(Order, order_id)
        assert order is not None
        transition(session, order, S.RISK_CHECKED, "risk checks passed")
        session.flush()  # both rows are written ...
        raise RuntimeError("... and the caller's transaction fails before commit")
    assert timeline(sessions, order_id) == []
    with sessions() as session:
        assert session.get(Order, order_id).state == S.PAID.value  # type: ignore[union-attr]

    with sessions.begin() as session:
        order = session.get(Order, order_id)
        assert order is not None
        transition(session, order, S.RISK_CHECKED, "risk checks passed")
    assert timeline(sessions, order_id) == [("paid", "risk_checked", "risk checks passed")]


def test_a_whole_life_leaves_an_ordered_timeline(sessions: sessionmaker[Session]) -> None:
    order_id = new_order(sessions, S.QUOTED)
    path = [S.PAID, S.RISK_CHECKED, S.SUBMITTING, S.UNKNOWN, S.SUCCEEDED, S.PROOF_PENDING, S.SETTLED]
    start = datetime(2030, 1, 1, tzinfo=UTC)
    for step, state in enumerate(path):
        with sessions.begin() as session:
            order = session.get(Order, order_id)
            assert order is not None
            transition(session, order, state, f"step {step}", at=start + timedelta(minutes=step))
    states = [S.QUOTED, *path]
    assert timeline(sessions, order_id) == [
        (a.value, b.value, f"step {i}") for i, (a, b) in enumerate(itertools.pairwise(states))
    ]
    with sessions() as session:
        order = session.get(Order, order_id)
        assert order is not None and order.closed_at is not None
        assert order.closed_at.replace(tzinfo=UTC) == start + timedelta(minutes=len(path) - 1)
        with pytest.raises(IllegalTransition):
            transition(session, order, S.REFUND_PENDING, "too late")


def test_an_unknown_field_is_refused(sessions: sessionmaker[Session]) -> None:
    order_id = new_order(sessions, S.PAID)
    with sessions() as session:
        order = session.get(Order, order_id)
        assert order is not None
        with pytest.raises(AttributeError, match="no_such_field"):
            transition(session, order, S.RISK_CHECKED, "typo", no_such_field=1)
        assert order.state == S.PAID.value and not session.new
    assert timeline(sessions, order_id) == []


def test_a_late_payment_reopens_an_expired_order(sessions: sessionmaker[Session]) -> None:
    order_id = new_order(sessions, S.QUOTED)
    for state in (S.EXPIRED, S.PAID):
        with sessions.begin() as session:
            order = session.get(Order, order_id)
            assert order is not None
            transition(session, order, state, str(state))
    with sessions() as session:
        order = session.get(Order, order_id)
        assert order is not None and order.state == S.PAID.value
        assert order.closed_at is None
    assert S.EXPIRED not in TERMINAL_STATES


def _no_block_time(number: int) -> int:
    raise AssertionError(f"block {number}'s time was asked for")


@pytest.mark.parametrize("event", ["OrderReclaimed", "OrderRefunded", "OrderSettled"])
@pytest.mark.parametrize("start", [S.QUOTED, S.EXPIRED])
def test_chain_closing_an_order_whose_payment_was_never_applied(
    sessions: sessionmaker[Session], event: str, start: OrderState
) -> None:
    """A buyer may reclaim an order whose OrderPaid the oracle did not apply (e.g. it did not match the
    quote on record). The watcher must record it, not stall on an illegal quoted -> reclaimed move."""
    from oracles.events import apply_event

    order_id = new_order(sessions, start)
    meta = {"tx_hash": "0x" + "ab" * 32, "log_index": 0, "block_number": 7, "block_hash": "0x" + "cd" * 32}
    with sessions.begin() as session:
        # A closing event never asks for a block's time.
        apply_event(session, event, {"orderId": bytes.fromhex(order_id[2:])}, meta, block_time=_no_block_time)
    expected = {"OrderReclaimed": S.RECLAIMED, "OrderRefunded": S.REFUNDED, "OrderSettled": S.SETTLED}[event]
    with sessions() as session:
        order = session.get(Order, order_id)
        assert order is not None and order.state == expected.value
        assert [e.to_state for e in order.events][-2:] == [S.PAID.value, expected.value]
        assert order.closed_at is not None


def attempts(sessions: sessionmaker[Session], order_id: str) -> list[tuple[str, str | None, bool]]:
    with sessions() as session:
        rows = session.execute(
            select(ProviderAttempt).where(ProviderAttempt.order_id == order_id).order_by(ProviderAttempt.id)
        ).scalars()
        return [(a.provider, a.outcome, a.answered_at is not None) for a in rows]


def test_a_stages_rows_are_written_at_its_flush_in_order_and_only_if_it_commits(
    sessions: sessionmaker[Session],
) -> None:
    """The timeline entries, provider calls and webhook events a transaction's transitions stage are
    written after the flush that writes the orders: an open call committed earlier is answered by the
    first move out of ``submitting`` and never by a later one, a call opened and answered in the same
    transaction keeps its answer, and a rollback writes none of them."""
    order_id = new_order(sessions, S.RISK_CHECKED)
    with sessions.begin() as session:
        row = session.get(Order, order_id)
        assert row is not None
        transition(session, row, S.SUBMITTING, "to a", detail={"provider": "a"})
    assert attempts(sessions, order_id) == [("a", None, False)]
    with sessions.begin() as session:
        row = session.get(Order, order_id)
        assert row is not None
        transition(session, row, S.RISK_CHECKED, "a unavailable, not called")  # answers a's call
        transition(session, row, S.SUBMITTING, "to b", detail={"provider": "b"})
        transition(session, row, S.UNKNOWN, "b timed out")  # answers b's, opened just now
        transition(session, row, S.SUBMITTING, "bookkeeping")  # names no provider: opens nothing
        transition(session, row, S.RISK_CHECKED, "requeued")  # no call open: answers nothing
        transition(session, row, S.SUBMITTING, "to c", detail={"provider": "c"})
    assert attempts(sessions, order_id) == [
        ("a", "risk_checked", True),
        ("b", "unknown", True),
        ("c", None, False),
    ]
    assert [to for _, to, _ in timeline(sessions, order_id)] == [
        "submitting",
        "risk_checked",
        "submitting",
        "unknown",
        "submitting",
        "risk_checked",
        "submitting",
    ]
    with pytest.raises(RuntimeError), sessions.begin() as session:
        row = session.get(Order, order_id)
        assert row is not None
        transition(session, row, S.SUCCEEDED, "c credited")
        session.flush()  # written to the database, then rolled back with the state
        transition(session, row, S.PROOF_PENDING, "signed")
        raise RuntimeError("crash before commit")
    assert attempts(sessions, order_id)[-1] == ("c", None, False)
    assert len(timeline(sessions, order_id)) == 7
    with sessions.begin() as session:
        row = session.get(Order, order_id)
        assert row is not None
        transition(session, row, S.SUCCEEDED, "c credited")
    assert attempts(sessions, order_id)[-1] == ("c", "succeeded", True)
    with sessions() as session:
        fulfilled = session.execute(select(WebhookEvent).where(WebhookEvent.order_id == order_id)).scalars()
        assert [e.type for e in fulfilled] == ["order.fulfilled"]


def test_rows_staged_in_a_savepoint_that_rolls_back_are_not_written(sessions: sessionmaker[Session]) -> None:
    order_id = new_order(sessions, S.QUOTED)
    with sessions.begin() as session:
        row = session.get(Order, order_id)
        assert row is not None
        transition(session, row, S.PAID, "OrderPaid in block 7")  # staged, written by the savepoint's flush
        savepoint = session.begin_nested()
        transition(session, row, S.RISK_CHECKED, "risk checks passed")
        savepoint.rollback()
    assert [to for _, to, _ in timeline(sessions, order_id)] == ["paid"]
    assert row_state(sessions, order_id) == "paid"


def row_state(sessions: sessionmaker[Session], order_id: str) -> str:
    with sessions() as session:
        found = session.get(Order, order_id)
        assert found is not None
        return found.state


def test_share_reads_only_the_fields_named_as_its_own() -> None:
    """``transition`` skips the rollups when a move sets none of ``SHARE_FIELDS``: that is right only if
    ``share`` reads nothing else of the order (a field added to the share must be added there too)."""
    from cardless.ledger.rollups import SHARE_FIELDS, share

    values = {
        "paid_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "merchant": "0x" + "11" * 20,
        "sku": "sku-1",
        "token": "0x" + "22" * 20,
        "amount": 10**18,
        "fulfilled_at": 1_767_323_100,
        "refund_reason": 3,
    }
    read: set[str] = set()

    class Recorder:
        def __getattr__(self, name: str) -> object:
            read.add(name)
            return values.get(name)

    got = share(Recorder())  # type: ignore[arg-type]
    assert got is not None and got.amount == 10**18 and got.reason == 3
    assert read == SHARE_FIELDS
