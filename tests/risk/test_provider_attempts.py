"""``provider_attempts``: one row per provider call, written by ``transition`` with the timeline (the
providers figure reads it), and filled from the existing timelines by migration 0009; on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import cardless.ledger.engine as db_session
from cardless.ledger import (
    Order,
    OrderEvent,
    OrderState,
    ProviderAttempt,
    analytics,
    create_engine_for,
    migrate,
    session_factory,
)
from cardless.ledger.transitions import transition
from tests.support.db import migrated, sqlite_url
from tests.support.orders import order_row
from tests.support.postgres import BACKENDS, PostgresServer, postgres  # noqa: F401 - the fixture

S = OrderState
T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
SHOP = "0x" + "33" * 20
OTHER = "0x" + "99" * 20


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite hands back naive UTC


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, not yet migrated database (the tests migrate it themselves)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    with server.database(migrated=False) as pg:
        yield pg


def paid(session: Session, *, providers: list[str], merchant: str = SHOP, **extra: Any) -> Order:
    order = order_row(state=S.RISK_CHECKED, providers=providers, merchant=merchant, paid_at=at(-5), **extra)
    session.add(order)
    session.flush()
    return order


def submit(session: Session, order: Order, seconds: float) -> None:
    provider = order.providers[order.provider_index]
    transition(session, order, S.SUBMITTING, f"submitting to {provider}", detail={"provider": provider},
               at=at(seconds), attempts=order.attempts + 1)  # fmt: skip


def refuse_and_fail_over(session: Session, order: Order) -> None:
    """``record_refusal``: two moves in one transaction."""
    transition(session, order, S.SUBMITTING, "alpha refused; failing over", at=at(2), provider_index=1)
    transition(session, order, S.RISK_CHECKED, "queued for beta", at=at(2))


def story(sessions: sessionmaker[Session]) -> dict[str, str]:
    """The calls ``oracles.outcomes`` makes, through ``transition``, each step its own transaction."""
    with sessions.begin() as session:
        a = paid(session, providers=["alpha", "beta"])
        b = paid(session, providers=["alpha"])
        c = paid(session, providers=["alpha"])
        e = paid(session, providers=["alpha"], merchant=OTHER)
        ids = {"a": a.id, "b": b.id, "c": c.id, "d": "", "e": e.id}
    steps: list[tuple[str, Any]] = [
        ("a", lambda s, o: submit(s, o, 0)),
        ("b", lambda s, o: submit(s, o, 1)),
        ("c", lambda s, o: submit(s, o, 1.5)),  # never answered: an open call
        ("e", lambda s, o: submit(s, o, 1.5)),
        ("a", refuse_and_fail_over),  # alpha refused, not charged
        ("b", lambda s, o: transition(s, o, S.SUCCEEDED, "alpha credited", at=at(2))),
        ("e", lambda s, o: transition(s, o, S.SUCCEEDED, "alpha credited", at=at(2.5))),
        ("a", lambda s, o: submit(s, o, 3)),
        ("a", lambda s, o: transition(s, o, S.UNKNOWN, "beta: timeout", at=at(8))),
        # the query by our key finds it done: the call's answer stays "unknown"
        ("a", lambda s, o: transition(s, o, S.SUCCEEDED, "beta credited", at=at(20))),
    ]
    for key, step in steps:
        with sessions.begin() as session:
            order = session.get(Order, ids[key])
            assert order is not None
            step(session, order)
    # submit and answer in one transaction, nothing flushed between them
    with sessions.begin() as session:
        d = paid(session, providers=["alpha"])
        ids["d"] = d.id
        submit(session, d, 5)
        transition(session, d, S.FAILED_FINAL, "alpha refused, not charged", at=at(9))
    return ids


def test_transition_writes_one_row_per_call_with_its_answer(url: str) -> None:
    with migrated(url) as sessions:
        ids = story(sessions)
        with sessions() as session:
            rows = session.execute(select(ProviderAttempt).order_by(ProviderAttempt.id)).scalars().all()
            got = [
                (r.order_id, r.merchant, r.provider, aware(r.submitted_at), r.outcome, aware(r.answered_at))
                for r in rows
            ]
        assert got == [
            (ids["a"], SHOP, "alpha", at(0), "submitting", at(2)),
            (ids["b"], SHOP, "alpha", at(1), "succeeded", at(2)),
            (ids["c"], SHOP, "alpha", at(1.5), None, None),
            (ids["e"], OTHER, "alpha", at(1.5), "succeeded", at(2.5)),
            (ids["a"], SHOP, "beta", at(3), "unknown", at(8)),
            (ids["d"], SHOP, "alpha", at(5), "failed_final", at(9)),
        ]

        def figure(until: float, merchant: str | None = SHOP) -> dict[str, dict[str, Any]]:
            with sessions() as session:
                result = analytics.providers(session, analytics.Range(at(-60), at(until), merchant=merchant))
            return {p["provider"]: p for p in result["providers"]}

        now = figure(60)
        assert {k: now["alpha"][k] for k in ("attempts", "succeeded", "failed", "unknown", "retried")} == {
            "attempts": 4, "succeeded": 1, "failed": 1, "unknown": 0, "retried": 1,
        }  # fmt: skip
        assert now["alpha"]["success_rate"] == 0.5
        assert now["alpha"]["mean_seconds"] == pytest.approx((2 + 1 + 4) / 3, abs=1e-3)  # SQLite: julianday()
        assert now["alpha"]["max_seconds"] == pytest.approx(4, abs=1e-3)
        assert (now["beta"]["attempts"], now["beta"]["unknown"], now["beta"]["success_rate"]) == (1, 1, None)
        assert now["beta"]["mean_seconds"] == pytest.approx(5, abs=1e-3)
        # As of 1.8 s: three alpha calls were submitted, none answered yet.
        early = figure(1.8)
        alpha = early["alpha"]
        assert (alpha["attempts"], alpha["succeeded"], alpha["retried"]) == (3, 0, 0)
        assert alpha["mean_seconds"] is None and "beta" not in early
        # The operator sees every merchant's calls; the other merchant only its own.
        assert figure(60, None)["alpha"]["attempts"] == 5
        theirs = figure(60, OTHER)
        assert list(theirs) == ["alpha"] and theirs["alpha"]["succeeded"] == 1


def test_migration_0009_fills_the_table_from_the_existing_timelines(url: str) -> None:
    """Orders that went through the provider stage before 0009: their submit/answer pairs become rows,
    a call still open stays open (and is answered by the next transition), bookkeeping moves are none."""
    engine = create_engine_for(url)
    config = Config()
    config.set_main_option("script_location", str(db_session._MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0008")
        sessions = session_factory(engine)
        timeline = [  # (order, seconds, from, to, provider named)
            ("a", 0, S.RISK_CHECKED, S.SUBMITTING, "alpha"),
            ("a", 2, S.SUBMITTING, S.SUBMITTING, None),  # refused, failing over
            ("a", 2, S.SUBMITTING, S.RISK_CHECKED, None),
            ("a", 3, S.RISK_CHECKED, S.SUBMITTING, "beta"),
            ("a", 8, S.SUBMITTING, S.UNKNOWN, None),
            ("a", 20, S.UNKNOWN, S.SUCCEEDED, None),
            ("b", 1, S.RISK_CHECKED, S.SUBMITTING, "alpha"),
            ("b", 4, S.SUBMITTING, S.SUCCEEDED, None),
            ("c", 6, S.RISK_CHECKED, S.SUBMITTING, "beta"),  # open when the schema changes
        ]
        with sessions.begin() as session:
            orders = {
                k: order_row(state=S.SUBMITTING, providers=["alpha", "beta"], paid_at=at(-5)) for k in "abc"
            }
            session.add_all(orders.values())
            session.flush()
            for key, seconds, before, after, provider in timeline:
                session.add(
                    OrderEvent(order_id=orders[key].id, at=at(seconds), from_state=before.value,
                               to_state=after.value, reason="-",
                               detail={"provider": provider} if provider else None)
                )  # fmt: skip
                session.flush()  # ids in timeline order
        ids = {k: o.id for k, o in orders.items()}

        migrate(engine)

        def rows() -> list[tuple[Any, ...]]:
            with sessions() as session:
                found = session.execute(
                    select(ProviderAttempt).order_by(ProviderAttempt.submitted_at, ProviderAttempt.id)
                ).scalars()
                return [(r.order_id, r.merchant, r.provider, aware(r.submitted_at), r.outcome,
                         aware(r.answered_at)) for r in found]  # fmt: skip

        assert rows() == [
            (ids["a"], SHOP, "alpha", at(0), "submitting", at(2)),
            (ids["b"], SHOP, "alpha", at(1), "succeeded", at(4)),
            (ids["a"], SHOP, "beta", at(3), "unknown", at(8)),
            (ids["c"], SHOP, "beta", at(6), None, None),
        ]
        with sessions.begin() as session:
            order = session.get(Order, ids["c"])
            assert order is not None
            transition(session, order, S.SUCCEEDED, "beta credited", at=at(7))
        assert rows()[-1] == (ids["c"], SHOP, "beta", at(6), "succeeded", at(7))
    finally:
        engine.dispose()
