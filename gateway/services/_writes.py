"""One writer at a time per SQLite database in this process, queued on a lock instead of SQLite's busy
handler.

SQLite lets one connection write at a time; the others get SQLITE_BUSY and its busy handler retries
after sleeping 1, 2, 5, 10 … up to 100 ms a time. Concurrent quotes in one process (each write on a
worker thread, with its own pooled connection) lost those sleeps to each other: p50 30 ms but p99
near a second at 170 quotes/s (docs/benchmarks.md). Behind a lock the next writer starts the moment
the previous one commits. Writers in other processes still meet the busy handler, one per process.
PostgreSQL locks rows, not the database: no lock there.

:func:`write_now` runs a write on the calling thread (the event loop) instead, when it needs no wait:
this process's turn free, and SQLite's write lock free at once. Its connection is one taken out of the
engine's pool for good that never waits for the lock (``busy_timeout=0``: a held lock fails the first
write statement at once, nothing is written, and the caller takes the worker-thread way) and never
checkpoints the WAL (a checkpoint writes the database file and syncs it: not on the loop). Every
:data:`_HAND_OVER_EVERY`-th write is declined anyway, so the pool's connections, which do checkpoint,
keep the WAL short even when nothing else writes.

:func:`write_soon` is :func:`write_now` from the event loop, tried again after a short sleep on the loop
(1, then 2, then 4 ms) while the write is declined only because another writer holds the lock: another
gateway process's write, or a thread of this one, lasts well under a millisecond, and the hop to a
worker thread and back (two thread switches, a pooled connection checked out, the GIL passed back and
forth) cost more of a quote's CPU than the write itself; one write on a thread also kept the next ones
from the loop for as long as it waited (docs/benchmarks.md, round 7). Still declined after
:data:`_RETRIES` sleeps, or declined for a reason a wait does not change (not an SQLite file, the
hand-over to the pool), the caller writes on a worker thread as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import sqlite3
import threading
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool, StaticPool

__all__ = ["Attempt", "retry_on_loop", "try_write", "write_lock", "write_now", "write_soon", "write_turn"]

_HAND_OVER_EVERY = 64
_RETRIES = 3
"""Sleeps on the loop (1, 2, 4 ms) before a write the lock declined goes to a worker thread."""
_INLINE: weakref.WeakKeyDictionary[Engine, tuple[Engine, list[int], sqlite3.Connection]] = (
    weakref.WeakKeyDictionary()
)

_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def write_turn(sessions: sessionmaker[Session]) -> contextlib.AbstractContextManager[Any]:
    """Hold while a write transaction of ``sessions`` runs: this process's turn at an SQLite database."""
    lock = write_lock(sessions)
    return contextlib.nullcontext() if lock is None else lock


def write_lock(sessions: sessionmaker[Session]) -> threading.Lock | None:
    """The lock :func:`write_turn` holds for ``sessions``' SQLite database; None for any other."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, Engine) or bind.dialect.name != "sqlite":
        return None
    with _GUARD:
        lock = _LOCKS.get(bind)
        if lock is None:
            lock = _LOCKS[bind] = threading.Lock()
    return lock


class Attempt(enum.Enum):
    """How a write on the calling thread went."""

    DONE = "done"
    BUSY = "busy"
    """Declined, nothing written: another writer holds the lock (a wait may change that)."""
    ELSEWHERE = "elsewhere"
    """Declined, nothing written: this write goes to a worker thread whatever the wait."""


def write_now(sessions: sessionmaker[Session], write: Callable[[Connection], None]) -> bool:
    """Run ``write`` in one transaction on this thread if that needs no wait (see the module's
    docstring) and return True; False when it would wait (or the database is not an SQLite file): then
    nothing was written, and the caller writes on a worker thread under :func:`write_turn`."""
    return try_write(sessions, write) is Attempt.DONE


async def write_soon(
    sessions: sessionmaker[Session],
    write: Callable[[Connection], None],
    *,
    raw: Callable[[sqlite3.Connection], None] | None = None,
) -> bool:
    """:func:`write_now` from the event loop, tried again after a short sleep while another writer holds
    the lock (see the module's docstring). False: nothing was written; write on a worker thread.
    ``raw``: the same write for the DBAPI connection itself (see :func:`try_write`)."""
    return await retry_on_loop(lambda: try_write(sessions, write, raw=raw)) is Attempt.DONE


async def retry_on_loop(attempt: Callable[[], Attempt]) -> Attempt:
    """``attempt()``, then again after 1, 2 and 4 ms on the loop while it answers BUSY."""
    outcome = attempt()
    for retry in range(_RETRIES):
        if outcome is not Attempt.BUSY:
            break
        await asyncio.sleep(0.001 * 2**retry)
        outcome = attempt()
    return outcome


def try_write(
    sessions: sessionmaker[Session],
    write: Callable[[Connection], None],
    *,
    raw: Callable[[sqlite3.Connection], None] | None = None,
) -> Attempt:
    """:func:`write_now`, saying why a declined write was declined. With ``raw``, that is run instead of
    ``write``, on the sqlite3 connection under SQLAlchemy's (one transaction, committed here, rolled back
    on any error): SQLAlchemy's statement execution was most of a quote's insert (docs/benchmarks.md)."""
    lock = write_lock(sessions)
    bind = sessions.kw.get("bind")
    if lock is None or not isinstance(bind, Engine) or not isinstance(bind.pool, QueuePool):
        return Attempt.ELSEWHERE
    if not lock.acquire(blocking=False):  # a thread of this process is writing
        return Attempt.BUSY
    try:
        inline, count, dbapi = _inline_engine(bind)
        count[0] += 1
        if count[0] % _HAND_OVER_EVERY == 0:
            return Attempt.ELSEWHERE  # this one through the pool, which checkpoints
        try:
            if raw is not None:
                _run_raw(dbapi, raw)
            else:
                with inline.begin() as connection:
                    write(connection)
        except (OperationalError, sqlite3.OperationalError) as exc:
            code = getattr(getattr(exc, "orig", exc), "sqlite_errorcode", None)
            if code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return Attempt.BUSY  # another process holds the write lock: rolled back, nothing written
            raise
        return Attempt.DONE
    finally:
        lock.release()


def _run_raw(connection: sqlite3.Connection, write: Callable[[sqlite3.Connection], None]) -> None:
    # The sqlite3 module opens the transaction at the first INSERT (as under SQLAlchemy's engine here).
    try:
        write(connection)
        connection.commit()
    except BaseException:
        connection.rollback()
        raise


def _inline_engine(engine: Engine) -> tuple[Engine, list[int], sqlite3.Connection]:
    """An engine over one connection of ``engine``'s (its pragmas and SQL functions), taken out of its
    pool, that never waits for the write lock nor checkpoints. Used under the write lock only."""
    with _GUARD:
        found = _INLINE.get(engine)
        if found is None:
            pooled = engine.raw_connection()
            pooled.detach()
            connection = pooled.dbapi_connection
            assert isinstance(connection, sqlite3.Connection)
            connection.execute("PRAGMA busy_timeout=0")
            connection.execute("PRAGMA wal_autocheckpoint=0")
            inline = create_engine(engine.url, creator=lambda: connection, poolclass=StaticPool)
            found = _INLINE[engine] = (inline, [0], connection)
    return found
