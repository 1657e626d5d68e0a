"""gateway.services._writes.write_now: a write on the calling thread only when it needs no wait."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
        inline, _, _ = _writes._INLINE[engine]
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


def test_retry_on_loop_sleeps_only_while_the_lock_is_busy_and_gives_up_after_three_retries() -> None:
    def attempts(*answers: _writes.Attempt) -> tuple[list[int], Any]:
        calls: list[int] = []

        def attempt() -> _writes.Attempt:
            calls.append(1)
            return answers[min(len(calls), len(answers)) - 1]

        return calls, attempt

    busy, done, elsewhere = _writes.Attempt.BUSY, _writes.Attempt.DONE, _writes.Attempt.ELSEWHERE
    for answers, expected, count in (
        ((done,), done, 1),
        ((elsewhere,), elsewhere, 1),  # not a wait's matter: no sleep at all
        ((busy, busy, done), done, 3),
        ((busy,), busy, 4),  # 1 + 2 + 4 ms of sleeps, then the worker thread's turn
        ((busy, elsewhere), elsewhere, 2),
    ):
        calls, attempt = attempts(*answers)
        assert asyncio.run(_writes.retry_on_loop(attempt)) is expected
        assert len(calls) == count


def test_write_soon_writes_on_the_loop_once_another_writer_lets_go_and_declines_unwritten_if_it_does_not(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path)
    engine = create_engine_for(url)
    migrate(engine)
    sessions = session_factory(engine)
    other = sqlite3.connect(str(make_url(url).database), isolation_level=None)

    def insert(key: str) -> Callable[[Connection], None]:
        def write(connection: Connection) -> None:
            connection.execute(_INSERT, {"key": key})

        return write

    async def held_for(seconds: float, key: str) -> bool:
        other.execute("BEGIN IMMEDIATE")  # another process is writing
        asyncio.get_running_loop().call_later(seconds, other.execute, "COMMIT")
        try:
            return await _writes.write_soon(sessions, insert(key))
        finally:
            await asyncio.sleep(max(0.0, seconds) + 0.01)

    try:
        assert asyncio.run(held_for(0.002, "brief"))  # let go within the retries: written on the loop
        assert not asyncio.run(held_for(0.2, "long"))  # still held after 7 ms: declined, nothing written
        assert _keys(url) == ["brief"]
    finally:
        other.close()
        engine.dispose()
