"""gateway.services._writes.write_now: a write on the calling thread only when it needs no wait."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Connection, make_url, text

from cardless.ledger import create_engine_for, migrate, session_factory
from gateway.services import _writes
from tests.support.postgres import sqlite_url

_INSERT = text(
    "INSERT INTO rate_limit_windows (key, hits, expires_at) VALUES (:key, 1, '2030-01-01 00:00:00')"
)


def _keys(url: str) -> list[str]:
    with sqlite3.connect(str(make_url(url).database)) as connection:
        return [k for (k,) in connection.execute("SELECT key FROM rate_limit_windows ORDER BY key")]


def test_a_write_runs_here_when_the_lock_is_free_and_is_declined_unwritten_when_it_is_not(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path)
    engine = create_engine_for(url)
    migrate(engine)
    sessions = session_factory(engine)
    try:

        def write(key: str) -> bool:
            def insert(connection: Connection) -> None:
                connection.execute(_INSERT, {"key": key})

            return _writes.write_now(sessions, insert)

        assert write("a")
        other = sqlite3.connect(str(make_url(url).database), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process is writing: declined at once, nothing written
        assert not write("b")
        other.execute("COMMIT")
        other.close()
        # A thread of this process holds the turn: declined without touching the database.
        lock = _writes.write_lock(sessions)
        assert lock is not None
        with lock:
            assert not write("c")
        # Every 64th write is handed to the pool (whose connections checkpoint the WAL).
        done = [write(f"d{i:03}") for i in range(130)]
        assert done.count(False) == 2 and all(done[:60])
        assert _keys(url) == ["a", *(f"d{i:03}" for i in range(130) if done[i])]
        # The connection it writes on never waits and never checkpoints.
        inline, _ = _writes._INLINE[engine]
        with inline.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 0
            assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    finally:
        engine.dispose()


def test_in_memory_and_server_databases_always_take_the_worker_thread(tmp_path: Path) -> None:
    engine = create_engine_for("sqlite://")
    try:
        assert not _writes.write_now(session_factory(engine), lambda connection: None)
    finally:
        engine.dispose()
