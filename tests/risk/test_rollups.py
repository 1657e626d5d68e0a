"""The analytics rollups (``cardless.ledger.rollups``), on SQLite and PostgreSQL: orders driven through
``transition`` (paid, fulfilled, proof moving ``fulfilled_at`` back, refunds, a reorganised payment),
then every rollup-backed figure compared with the exact statement over the orders on random ranges whose
edges cut buckets, at whole, half and quarter-hour offsets and at odd ones (served exactly); two workers
writing the same rows at once on PostgreSQL; migration 0011's backfill."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

import cardless.ledger.engine as db_session
from cardless.ledger import Order, OrderState, analytics, create_engine_for, migrate, session_factory
from cardless.ledger.models import SalesRollup
from cardless.ledger.transitions import transition
from cardless.protocol import RefundReason
from tests.support.db import migrated, sqlite_url
from tests.support.orders import order_row
from tests.support.postgres import BACKENDS, PostgresServer, postgres  # noqa: F401 - the fixture

S = OrderState
T0 = datetime(2027, 3, 1, 0, 0, tzinfo=UTC)
DAYS = 6
MERCHANTS = ("0x" + "33" * 20, "0x" + "99" * 20)
SKUS = ("genshin-60", "pubg-60", "honor-80")
TOKENS = ("0x" + "aa" * 20, "0x" + "bb" * 20)
ROLLED = ("heatmap", "sku_daily", "fulfilment", "refunds", "cohorts")
REASONS = (RefundReason.PROVIDER_REJECTED, RefundReason.RISK_REJECTED, RefundReason.DEADLINE_APPROACHING)


@pytest.fixture(params=BACKENDS)
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        with migrated(sqlite_url(tmp_path)) as made:
            yield made
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    with server.database() as url, migrated(url) as made:
        yield made


def paid_time(rng: random.Random) -> datetime:
    """A block's time: whole seconds (SQLite reads fractions to the millisecond, rounded)."""
    if rng.random() < 0.1:  # exactly on a bucket boundary
        return T0 + timedelta(seconds=900 * rng.randrange(DAYS * 96))
    return T0 + timedelta(seconds=rng.randrange(DAYS * 86_400))


def quoted(session: Session, rng: random.Random, n: int) -> list[str]:
    rows = [
        order_row(
            state=S.QUOTED,
            merchant=rng.choice(MERCHANTS),
            sku=rng.choice(SKUS),
            token=rng.choice(TOKENS),
            amount=rng.choice((1, 990_000, 10**17 + rng.randrange(10**6))),
        )
        for _ in range(n)
    ]
    session.add_all(rows)
    return [o.id for o in rows]


def live(session: Session, rng: random.Random, order_id: str) -> None:
    """One order's life through ``transition``, as the oracle's stages move it."""
    order = session.get(Order, order_id)
    assert order is not None
    paid = paid_time(rng)
    t = int(paid.timestamp())
    transition(session, order, S.PAID, "paid", paid_at=paid, paid_block=1, paid_tx="0x" + "ab" * 32)
    fate = rng.random()
    if fate < 0.08:  # reorganised out before any provider was called
        transition(session, order, S.QUOTED, "reorg", paid_at=None, paid_block=None, paid_tx=None)
        return
    if fate < 0.25:  # refused by risk, refunded
        transition(session, order, S.FAILED_FINAL, "risk", refund_reason=int(rng.choice(REASONS)))
        transition(session, order, S.REFUND_PENDING, "refund signed")
        return
    transition(session, order, S.RISK_CHECKED, "allowed")
    transition(session, order, S.SUBMITTING, "submit", detail={"provider": "alpha"})
    completed = t + rng.choice((0, 1, 4, 7, 29, 30, 59, 250, 899, 900, 4_000, rng.randrange(-3, 2_000)))
    transition(session, order, S.SUCCEEDED, "credited", fulfilled_at=completed)
    if rng.random() < 0.6:  # the proof claims an earlier time (the chain's clock was behind)
        transition(session, order, S.PROOF_PENDING, "proof", fulfilled_at=completed - rng.randrange(0, 400))
    if order.state == S.PROOF_PENDING and rng.random() < 0.15:  # it could never settle: refunded
        transition(session, order, S.FAILED_FINAL, "late", refund_reason=int(RefundReason.NOT_SETTLEABLE))


def drive(sessions: sessionmaker[Session], ids: list[str], rng: random.Random, batch: int = 25) -> None:
    for i in range(0, len(ids), batch):
        with sessions.begin() as session:
            for order_id in ids[i : i + batch]:
                live(session, rng, order_id)


def ranges(rng: random.Random, n: int) -> Iterator[analytics.Range]:
    offsets = (0, 480, -720, 840, 330, 345, -210, 525, 7, -1)  # whole, half, quarter hours; odd ones
    for i in range(n):
        since = T0 + timedelta(microseconds=rng.randrange(-86_400 * 10**6, DAYS * 86_400 * 10**6))
        if i % 5 == 0:
            since = T0 + timedelta(seconds=900 * rng.randrange(DAYS * 96))  # on a boundary
        until = since + timedelta(microseconds=rng.randrange(1, (DAYS + 1) * 86_400 * 10**6))
        merchant = rng.choice((None, None, MERCHANTS[0]))
        yield analytics.Range(since, until, merchant=merchant, tz_offset_minutes=offsets[i % len(offsets)])


def assert_same_as_exact(sessions: sessionmaker[Session], rng: random.Random, n: int) -> None:
    whole = analytics.Range(T0 - timedelta(days=1), T0 + timedelta(days=DAYS + 1), tz_offset_minutes=480)
    for r in [whole, *ranges(rng, n)]:
        with sessions() as session:
            for name in ROLLED:
                got = analytics.FIGURES[name](session, r)
                assert got == analytics.EXACT_FIGURES[name](session, r), (name, r)
    with sessions() as session:
        assert analytics.fulfilment(session, whole)["orders"] > 0
        assert analytics.refunds(session, whole)["reasons"]


def test_every_rolled_up_figure_equals_the_exact_one_on_random_ranges(
    sessions: sessionmaker[Session],
) -> None:
    rng = random.Random(14)
    with sessions.begin() as session:
        ids = quoted(session, rng, 160)
    drive(sessions, ids, rng)
    with sessions() as session:
        rows = session.scalar(text("SELECT COUNT(*) FROM analytics_sales"))
        assert rows and rows < 160  # buckets, not orders
    assert_same_as_exact(sessions, rng, 40)


@pytest.mark.long
def test_every_rolled_up_figure_equals_the_exact_one_on_a_larger_ledger(
    sessions: sessionmaker[Session],
) -> None:
    """The same on 1,500 orders (several per bucket, so rows combine many shares) and 300 ranges."""
    rng = random.Random(1_400)
    with sessions.begin() as session:
        ids = quoted(session, rng, 1_500)
    drive(sessions, ids, rng, batch=60)
    assert_same_as_exact(sessions, rng, 300)


def test_the_maximum_falls_back_when_its_order_moves_and_a_rollback_writes_nothing(
    sessions: sessionmaker[Session],
) -> None:
    paid = T0 + timedelta(seconds=10)
    with sessions.begin() as session:
        orders = [order_row(state=S.QUOTED) for _ in range(2)]
        session.add_all(orders)
    with sessions.begin() as session:
        a, b = (session.get(Order, o.id) for o in orders)
        assert a is not None and b is not None
        for order, seconds in ((a, 700), (b, 40)):
            transition(session, order, S.PAID, "paid", paid_at=paid)
            transition(session, order, S.RISK_CHECKED, "allowed")
            transition(session, order, S.SUBMITTING, "submit")
            transition(session, order, S.SUCCEEDED, "credited", fulfilled_at=int(paid.timestamp()) + seconds)

    def row() -> tuple[int, int, int | None]:
        with sessions() as session:
            (r,) = session.scalars(select(SalesRollup)).all()
            return r.fulfilled, r.fulfil_seconds, r.fulfil_max

    assert row() == (2, 740, 700)
    with sessions() as session:  # rolled back: nothing reaches the rollup
        a = session.get(Order, orders[0].id)
        assert a is not None
        transition(session, a, S.PROOF_PENDING, "proof", fulfilled_at=a.fulfilled_at - 695)
        session.rollback()
    assert row() == (2, 740, 700)
    with sessions.begin() as session:
        a = session.get(Order, orders[0].id)
        assert a is not None
        transition(session, a, S.PROOF_PENDING, "proof", fulfilled_at=a.fulfilled_at - 695)
    assert row() == (2, 45, 40)


def test_two_workers_writing_the_same_rows_at_once_lose_nothing(postgres: PostgresServer) -> None:  # noqa: F811
    """Two workers, each its own orders, batches over the same buckets in opposite key orders, started
    together: every delta lands (no lost update) and neither deadlocks."""
    rng = random.Random(7)
    with postgres.database() as url, migrated(url) as sessions:
        with sessions.begin() as session:
            ids = quoted(session, rng, 100)
        halves = (ids[:50], ids[50:][::-1])
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def worker(mine: list[str], seed: int) -> None:
            local = random.Random(seed)
            try:
                for i in range(0, len(mine), 10):
                    with sessions.begin() as session:
                        barrier.wait(timeout=30)
                        for order_id in mine[i : i + 10]:
                            live(session, local, order_id)
            except BaseException as error:
                errors.append(error)
                barrier.abort()

        threads = [threading.Thread(target=worker, args=(half, n)) for n, half in enumerate(halves)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert_same_as_exact(sessions, rng, 15)


@pytest.fixture(params=BACKENDS)
def bare_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    with server.database(migrated=False) as pg:
        yield pg


def test_migration_0011_fills_the_rollups_from_the_existing_orders(bare_url: str) -> None:
    engine = create_engine_for(bare_url)
    config = Config()
    config.set_main_option("script_location", str(db_session._MIGRATIONS))
    rng = random.Random(11)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0010_analytics_speed")
        sessions = session_factory(engine)
        with sessions.begin() as session:
            for _ in range(150):
                at = paid_time(rng)
                fulfilled = int(at.timestamp()) + rng.randrange(-2, 1_500) if rng.random() < 0.7 else None
                reason = int(rng.choice(REASONS)) if fulfilled is None and rng.random() < 0.6 else None
                session.add(order_row(state=S.PAID, merchant=rng.choice(MERCHANTS), sku=rng.choice(SKUS),
                                      token=rng.choice(TOKENS), amount=rng.randrange(1, 10**16),
                                      paid_at=None if rng.random() < 0.05 else at,
                                      fulfilled_at=fulfilled, refund_reason=reason))  # fmt: skip
        migrate(engine)
        assert_same_as_exact(sessions, rng, 20)
    finally:
        engine.dispose()


def test_split_reads_whole_buckets_only() -> None:
    r = analytics.Range(T0 + timedelta(seconds=1), T0 + timedelta(hours=1, seconds=-1))
    assert analytics._split(r) == analytics._Split(int(T0.timestamp()) + 900, int(T0.timestamp()) + 2_700)
    exact = analytics.Range(T0, T0 + timedelta(hours=1))
    assert analytics._split(exact) == analytics._Split(int(T0.timestamp()), int(T0.timestamp()) + 3_600)
    assert analytics._split(analytics.Range(T0, T0 + timedelta(minutes=14))) is None
    assert analytics._split(analytics.Range(T0, T0 + timedelta(days=1), tz_offset_minutes=7)) is None
