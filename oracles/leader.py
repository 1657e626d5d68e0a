"""Which of several oracle workers sharing one PostgreSQL database reads the chain.

Every worker can run the watcher: the cursor's row lock and the (tx hash, log index) key make that
correct (``oracles.watcher``). But each poll costs the node four round trips and the database a locked
transaction, and N workers polling every tick cost N times that for the same logs: with four workers on
two cores the polling took the cores from the node itself (docs/benchmarks.md). So one worker leads:
the one holding a session-level PostgreSQL advisory lock on a connection of its own. The others claim
their work from the database as before and run the watcher, and the confirmation of pending
transactions (the signer is shared: each worker's confirmation reads every pending one), only every
``follower_poll`` seconds, a safety net: a leader whose host vanished without closing its connection
(the server notices only when TCP keep-alive gives up) delays events and receipts by at most that, and
never loses or repeats one.

The lock is released when the leader's connection closes, whatever ends it (a clean stop, a crash, a
kill), and a follower takes it at its next try (``retry`` seconds). SQLite is one machine's database
with a single writer: every worker there leads, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["WATCH_LOCK", "WatchLeadership"]

log = logging.getLogger(__name__)

WATCH_LOCK = 0x63617264_77617463
"""pg_try_advisory_lock key of the watcher's leadership ("cardwatc"); the migrations use another."""


class WatchLeadership:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        retry: float = 1.0,
        check: float = 5.0,
        follower_poll: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        bind = sessions.kw.get("bind")
        self.engine: Engine | None = bind if isinstance(bind, Engine) else None
        self.shared = self.engine is not None and self.engine.dialect.name == "postgresql"
        self.retry, self.check, self.follower_poll = retry, check, follower_poll
        self._clock = clock
        self._connection: Connection | None = None
        self._next_try = 0.0
        self._checked = 0.0
        self._polled = float("-inf")
        self._confirmed = float("-inf")

    @property
    def leading(self) -> bool:
        """Whether this worker holds the lock now (always, on a database that is not shared)."""
        return not self.shared or self._connection is not None

    def should_watch(self) -> bool:
        """Whether this tick runs the watcher: always for the leader, else every ``follower_poll``."""
        now = self._clock()
        if self._lead(now):
            return True
        if now - self._polled >= self.follower_poll:
            self._polled = now
            return True
        return False

    def should_confirm(self) -> bool:
        """Whether this tick reads the pending transactions' receipts: the signer is shared, so every
        worker's confirmation reads every pending transaction; the leader does it every tick, the others
        every ``follower_poll`` (their own transactions are confirmed by the leader meanwhile)."""
        now = self._clock()
        if self._lead(now):
            return True
        if now - self._confirmed >= self.follower_poll:
            self._confirmed = now
            return True
        return False

    def _lead(self, now: float) -> bool:
        if not self.shared:
            return True
        if self._connection is not None:
            if now - self._checked < self.check:
                return True
            try:  # the lock lives as long as this connection: is it still there?
                self._connection.execute(text("SELECT 1"))
                self._checked = now
                return True
            except DBAPIError:
                log.warning("lost the connection that held the watcher's lock; following")
                self._drop()
        if now < self._next_try:
            return False
        self._next_try = now + self.retry
        assert self.engine is not None
        connection: Connection | None = None
        try:
            connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            got = bool(
                connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": WATCH_LOCK}).scalar()
            )
        except DBAPIError:
            if connection is not None:
                connection.invalidate()
                connection.close()
            return False
        if not got:
            connection.close()
            return False
        self._connection, self._checked = connection, now
        log.info("this worker reads the chain for the others (watcher lock taken)")
        return True

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.invalidate()  # the server side is gone or going: never back into the pool
                connection.close()
            except DBAPIError:
                pass

    def close(self) -> None:
        """Give the lock up (at a clean stop): a follower takes over at its next try."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": WATCH_LOCK})
        except DBAPIError:
            connection.invalidate()
        finally:
            connection.close()
