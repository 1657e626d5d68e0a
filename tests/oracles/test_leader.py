"""The watcher's leadership (``oracles.leader``): on PostgreSQL exactly one worker holds it, a follower
takes it over once the leader's connection is gone (a clean stop or a killed process), and followers
still run the watcher now and then; on SQLite every worker leads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import create_engine_for, migrate, session_factory
from oracles.leader import WatchLeadership
from tests.support.postgres import PostgresServer


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
