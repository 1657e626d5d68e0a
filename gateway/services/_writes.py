"""One writer at a time per SQLite database in this process, queued on a lock instead of SQLite's busy
handler.

SQLite lets one connection write at a time; the others get SQLITE_BUSY and its busy handler retries
after sleeping 1, 2, 5, 10 … up to 100 ms a time. Concurrent quotes in one process (each write on a
worker thread, with its own pooled connection) lost those sleeps to each other: p50 30 ms but p99
near a second at 170 quotes/s (docs/benchmarks.md). Behind a lock the next writer starts the moment
the previous one commits. Writers in other processes still meet the busy handler, one per process.
PostgreSQL locks rows, not the database: no lock there.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["write_lock", "write_turn"]

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
