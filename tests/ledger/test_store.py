"""``candidates``: the query part kept per set of states must not carry one call's time, conditions or
limit into the next."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import Order, OrderState
from cardless.ledger.models import utcnow
from cardless.ledger.store import candidates, claim_many
from tests.support.db import migrated, sqlite_url
from tests.support.orders import add_order

S = OrderState


@pytest.fixture
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    with migrated(sqlite_url(tmp_path_factory.mktemp("store"))) as sessions:
        yield sessions


def test_each_call_gets_its_own_time_conditions_limit_and_states(sessions: sessionmaker[Session]) -> None:
    now = utcnow()
    with sessions.begin() as session:
        paid = [add_order(session, state=S.PAID).id for _ in range(3)]
        checked = add_order(session, state=S.RISK_CHECKED).id
        held = session.get(Order, paid[2])
        assert held is not None
        held.risk_hold_at = now
    with sessions.begin() as session:  # paid[0] leased for a minute
        assert claim_many(session, [paid[0]], "w1", states=[S.PAID], ttl=timedelta(minutes=1), now=now)

    def ids(*states: OrderState, at: timedelta = timedelta(0), **kw: object) -> set[str]:
        with sessions() as session:
            return {r.id for r in candidates(session, states, now=now + at, **kw)}  # type: ignore[arg-type]

    not_held = [Order.risk_hold_at.is_(None)]
    assert ids(S.PAID, where=not_held) == {paid[1]}
    assert ids(S.PAID) == {paid[1], paid[2]}  # the condition of the call before is not kept
    assert ids(S.PAID, at=timedelta(minutes=2)) == set(paid)  # the lease has expired by then
    assert ids(S.PAID) == {paid[1], paid[2]}  # nor is that call's time
    assert len(ids(S.PAID, at=timedelta(minutes=2), limit=1)) == 1
    assert len(ids(S.PAID, at=timedelta(minutes=2))) == 3  # nor its limit
    assert ids(S.RISK_CHECKED, S.PAID, where=not_held) == {paid[1], checked}
    assert ids(S.PAID, S.RISK_CHECKED, where=not_held) == {paid[1], checked}  # the same kept query
    assert ids(S.RISK_CHECKED) == {checked}
