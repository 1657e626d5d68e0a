"""The watcher's leadership (``oracles.leader``): on PostgreSQL exactly one worker holds it, a follower
takes it over once the leader's connection is gone (a clean stop or a killed process), and followers
still run the watcher now and then; on SQLite every worker leads.

Workers wake each other with ``LISTEN``/``NOTIFY`` (``WorkSignal``): a notification arrives when its
transaction commits, never when it rolls back. A follower runs only what the leader left waiting: it
claims orders due a provider call once they waited ``steal_after`` (all of them once a claimer said its
slots were full), and its sweep runs a stage only for the states where an order waited."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text, update
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import ChainCursor, Order, OrderState, create_engine_for, migrate, session_factory
from oracles.leader import CLAIMS, PROOFS, WatchLeadership, WorkSignal
from oracles.worker import OracleWorker
from tests.oracles._ledger import FakeAdapter, add_order, get, worker
from tests.support.postgres import PostgresServer

S = OrderState


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pg_sessions(postgres: PostgresServer) -> Iterator[list[sessionmaker[Session]]]:
    """Three workers' engines (as three processes would have) on one fresh database."""
    with postgres.database() as url:
        engines = [create_engine_for(url) for _ in range(3)]
        try:
            yield [session_factory(engine) for engine in engines]
        finally:
            for engine in engines:
                engine.dispose()


def test_one_worker_leads_and_a_follower_takes_over_when_it_stops(
    pg_sessions: list[sessionmaker[Session]],
) -> None:
    clock = Clock()
    workers = [WatchLeadership(s, retry=1.0, follower_poll=2.0, clock=clock) for s in pg_sessions]
    assert [w.should_watch() for w in workers] == [True, True, True]  # a follower's first poll is due
    assert [w.leading for w in workers] == [True, False, False]
    clock.now += 0.5
    assert [w.should_watch() for w in workers] == [True, False, False]  # followers wait follower_poll
    clock.now += 2.0
    assert [w.should_watch() for w in workers] == [True, True, True]  # ... then poll once
    assert [w.leading for w in workers] == [True, False, False]
    assert [w.should_confirm() for w in workers] == [True, True, True]  # the same rhythm for receipts
    clock.now += 0.5
    assert [w.should_confirm() for w in workers] == [True, False, False]

    workers[0].close()
    clock.now += 1.0
    workers[1].should_watch()
    workers[2].should_watch()
    assert [w.leading for w in workers[1:]] == [True, False]
    workers[1].close()
    workers[2].close()


def test_a_killed_leaders_lock_is_freed_by_the_server(pg_sessions: list[sessionmaker[Session]]) -> None:
    clock = Clock()
    leader, follower = (WatchLeadership(s, retry=1.0, check=5.0, clock=clock) for s in pg_sessions[:2])
    assert leader.should_watch() and leader.leading
    assert leader._connection is not None
    pid = leader._connection.execute(text("SELECT pg_backend_pid()")).scalar()
    with pg_sessions[2]() as session:  # the leader's process dies: its server connection ends
        assert session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    clock.now += 1.0
    follower.should_watch()
    assert follower.leading
    clock.now += 5.0
    leader.should_watch()  # notices at its next check that its connection, and the lock, are gone
    assert not leader.leading
    follower.close()
    leader.close()


def test_on_sqlite_every_worker_leads(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'cardless.db'}")
    migrate(engine)
    try:
        workers = [WatchLeadership(session_factory(engine)) for _ in range(2)]
        assert all(w.should_watch() and w.leading for w in workers)
    finally:
        engine.dispose()


def _engine(sessions: sessionmaker[Session]) -> Engine:
    bind = sessions.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


async def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_notification_arrives_when_its_transaction_commits_and_never_after_a_rollback(
    pg_sessions: list[sessionmaker[Session]], anyio_backend: str
) -> None:
    listener, sender = WorkSignal(_engine(pg_sessions[0])), WorkSignal(_engine(pg_sessions[1]))
    assert listener.enabled and not listener.listening
    notes: list[str] = []
    task = asyncio.create_task(listener.follow(notes.append))
    try:
        await _until(lambda: listener.listening and notes)
        assert notes == [""]  # listening (again): news may have been missed, a full look
        with _engine(pg_sessions[1]).connect() as connection:
            sender.notify_in(connection, CLAIMS)
            connection.rollback()
            sender.notify_in(connection, PROOFS)
            connection.commit()
        sender.notify(CLAIMS)  # on its own
        await _until(lambda: len(notes) >= 3)
        await asyncio.sleep(0.2)  # nothing more comes: the rolled-back one never does
        assert notes == ["", PROOFS, CLAIMS]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not listener.listening


def test_on_sqlite_there_is_no_signal(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'cardless.db'}")
    try:
        signal = WorkSignal(engine)
        assert not signal.enabled
        signal.notify(CLAIMS)  # a no-op
    finally:
        engine.dispose()


@pytest.fixture
def pair(pg_sessions: list[sessionmaker[Session]]) -> Iterator[list[OracleWorker]]:
    """Filled by ``_workers``; their leadership (the lock's connection) is given up at the end."""
    made: list[OracleWorker] = []
    yield made
    for w in made:
        w.leadership.close()


def _workers(pg_sessions: list[sessionmaker[Session]], clock: Clock, **config: Any) -> list[OracleWorker]:
    """A leader and a follower on one database, their leadership on the test's clock (the caller gives
    it up)."""
    workers = [
        worker(s, FakeAdapter("alpha"), f"worker-{n}", **config) for n, s in enumerate(pg_sessions[:2])
    ]
    for w, sessions in zip(workers, pg_sessions, strict=False):
        w.leadership.close()
        w.leadership = WatchLeadership(sessions, retry=1.0, follower_poll=2.0, clock=clock)
    assert workers[0].leadership.should_watch() and workers[0].leadership.leading
    return workers


def _age(sessions: sessionmaker[Session], order_id: str, seconds: float) -> None:
    with sessions.begin() as session:
        session.execute(
            update(Order)
            .where(Order.id == order_id)
            .values(updated_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_follower_claims_what_the_leader_left_waiting_and_everything_once_told_slots_are_full(
    pg_sessions: list[sessionmaker[Session]], pair: list[OracleWorker], anyio_backend: str
) -> None:
    clock = Clock()
    pair += _workers(pg_sessions, clock, steal_after=timedelta(seconds=1), submit_concurrency=2)
    leader, follower = pair
    ledger = pg_sessions[0]
    fresh = [add_order(ledger, providers=["alpha"]) for _ in range(3)]
    waited = add_order(ledger, providers=["alpha"])
    _age(ledger, waited, 5)
    plan = follower._plan()  # a follower's first tick sweeps (its first poll is due)
    assert plan.watch and not plan.fresh_claims and not (plan.risk or plan.sign or plan.post)
    assert follower.start_provider_calls(S.RISK_CHECKED, stale_after=timedelta(seconds=1)) == 1
    assert get(ledger, waited).lease_owner == "worker-1"
    assert {get(ledger, o).lease_owner for o in fresh} == {None}

    # The leader's claim fills its two free slots: it says so, in the claim's transaction.
    notes: list[str] = []
    task = asyncio.create_task(follower.signal.follow(notes.append))
    try:
        await _until(lambda: follower.signal.listening and notes)
        assert leader.start_provider_calls(S.RISK_CHECKED) == 2
        await _until(lambda: CLAIMS in notes)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    follower._on_note(CLAIMS)
    assert follower._claims_hint  # its next tick claims fresh orders too
    left = [o for o in fresh if get(ledger, o).lease_owner is None]
    assert len(left) == 1
    assert follower.start_provider_calls(S.RISK_CHECKED) == 1
    assert get(ledger, left[0]).lease_owner == "worker-1"
    await leader.drain()
    await follower.drain()


def test_a_followers_sweep_runs_only_the_stages_where_orders_waited(
    pg_sessions: list[sessionmaker[Session]], pair: list[OracleWorker]
) -> None:
    clock = Clock()
    pair += _workers(pg_sessions, clock, steal_after=timedelta(seconds=1))
    leader, follower = pair
    ledger = pg_sessions[0]
    for state in (S.PAID, S.SUCCEEDED, S.PROOF_PENDING, S.REFUND_PENDING):
        add_order(ledger, state=state)
    assert leader._plan().post and leader._plan().risk  # the leader: every stage, every tick
    first = follower._plan()
    assert first.watch and not (first.risk or first.sign or first.post)  # nothing has waited yet
    clock.now += 0.5
    assert follower._plan() == type(first)()  # between sweeps: its own work only
    proof = add_order(ledger, state=S.PROOF_PENDING)
    _age(ledger, proof, 5)
    clock.now += 2.0
    swept = follower._plan()
    assert swept.watch and swept.post and not (swept.risk or swept.sign)
    paid = add_order(ledger, state=S.PAID)
    _age(ledger, paid, 5)
    with ledger.begin() as session:  # a risk hold is not waiting for the risk stage
        session.execute(update(Order).where(Order.id == paid).values(risk_hold_at=datetime.now(UTC)))
    clock.now += 2.0
    assert not follower._plan().risk
    with ledger.begin() as session:
        session.execute(update(Order).where(Order.id == paid).values(risk_hold_at=None))
    _age(ledger, paid, 5)
    clock.now += 2.0
    assert follower._plan().risk
    with ledger.begin() as session:
        session.add(ChainCursor(name="escrow", block_number=7, block_hash="0x" + "11" * 32))
    clock.now += 2.0
    assert not follower._plan().watch  # the leader read blocks since the last sweep
    clock.now += 2.0
    swept = follower._plan()
    assert swept.watch and swept.confirm  # ... and nothing since: the follower reads the chain
    leader.leadership.close()
    clock.now += 1.0
    assert follower._plan().sign and follower.leadership.leading  # took over: every stage again
