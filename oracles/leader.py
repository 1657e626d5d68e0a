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

The leader also runs the risk check, and posts settlement and refund transactions every tick: its
batches hold every proof signed since the last one, where four posters split them into four times the
transactions (four times the gas estimates, receipts and events for the same orders). The provider calls
(claiming the orders the risk check passed, recording the answers, signing them) go to the followers
while any is alive: the leader's stages alone were three quarters of the oracles' CPU, and a leader that
also called providers bounded four workers to about one (docs/benchmarks.md, round 7). The leader counts
the followers listening (:meth:`WorkSignal.others_listening`) and, while there is one, claims only the
orders left waiting ``steal_after`` (or all when a follower said its slots are full), and signs only
its own answers and what has waited; with none, it calls providers itself at once, as a single worker
does. A follower runs the leader's stages only for orders that have waited there (``oracles.worker``: the
same safety net as above). Exactly-once does not rest on this: any worker may run any stage (the claims,
the outbox check in ``oracles.settlement``, nonces reserved in the database), as when every worker ran
all of them; this only decides who normally does.

:class:`WorkSignal` is how workers wake each other on PostgreSQL instead of polling (``LISTEN`` /
``NOTIFY`` on :data:`WORK_CHANNEL`): a leader whose risk check passed orders says ``fresh`` (the
followers claim them now); a worker whose claim filled its free provider slots says ``claims`` (more may
be waiting), in the claim's transaction; a follower that signed proofs says ``proofs`` (the leader posts
them now rather than at its next idle poll). A notification is a wake-up only: a lost one costs latency
(each worker still polls, less often, and the leader claims what waited), never an order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["LISTENER", "WATCH_LOCK", "WORK_CHANNEL", "WatchLeadership", "WorkSignal"]

log = logging.getLogger(__name__)

WATCH_LOCK = 0x63617264_77617463
"""pg_try_advisory_lock key of the watcher's leadership ("cardwatc"); the migrations use another."""
WORK_CHANNEL = "cardless_work"
"""The ``LISTEN``/``NOTIFY`` channel of :class:`WorkSignal`; the payload says what kind of work."""
LISTENER = "cardless-listen"
"""The ``application_name`` of a worker's listening connection: how the leader counts the followers."""
CLAIMS, PROOFS, FRESH = "claims", "proofs", "fresh"


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
        self._clock = self.clock = clock
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


class WorkSignal:
    """``LISTEN``/``NOTIFY`` between the workers of one PostgreSQL database (nothing elsewhere: on SQLite
    :attr:`enabled` is False and every call is a no-op).

    :meth:`follow` runs on the worker's event loop: an asynchronous psycopg connection of its own,
    ``LISTEN`` on :data:`WORK_CHANNEL`, and ``on_note(payload)`` for every notification. A lost connection
    is opened again with a doubling delay; :attr:`listening` says whether notifications can arrive now
    (the worker polls at its short interval while they cannot). :meth:`notify_in` adds a notification to
    a transaction (PostgreSQL delivers it at the commit, and never if it rolls back); :meth:`notify` sends
    one on its own. :meth:`others_listening` counts the other workers listening on the same database."""

    def __init__(
        self, engine: Engine | None, *, census: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine if engine is not None and engine.dialect.name == "postgresql" else None
        self.listening = False
        self.census = census
        self._clock = clock
        self._backend: int | None = None
        """The server pid of this worker's listening connection (left out of the count)."""
        self._counted = float("-inf")
        self._others = 0

    @property
    def enabled(self) -> bool:
        return self.engine is not None

    def others_listening(self) -> int:
        """How many other workers listen on this database now: their listening connections in
        ``pg_stat_activity`` (by :data:`LISTENER`), counted at most every ``census`` seconds. A worker
        killed, its connection closes and the server forgets it at once; a host that vanished is counted
        until TCP keep-alive gives up (the leader's safety net claims what its followers leave waiting).
        0 on SQLite, and when the count fails (the leader then calls providers itself)."""
        if self.engine is None:
            return 0
        now = self._clock()
        if now - self._counted < self.census:
            return self._others
        self._counted = now
        try:
            with self.engine.connect() as connection:
                found = connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND application_name = :name AND pid <> :mine"
                    ),
                    {"name": LISTENER, "mine": self._backend or 0},
                ).scalar()
            self._others = int(found or 0)
        except DBAPIError as exc:
            log.warning("could not count the other workers (%s): calling providers here meanwhile", exc)
            self._others = 0
        return self._others

    def notify_in(self, connection: Connection, kind: str) -> None:
        if self.enabled:
            connection.execute(
                text("SELECT pg_notify(:channel, :kind)"), {"channel": WORK_CHANNEL, "kind": kind}
            )

    def notify(self, kind: str) -> None:
        """Send ``kind`` now, outside any transaction; a failure is logged and ignored (a wake-up only)."""
        if self.engine is None:
            return
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                self.notify_in(connection, kind)
        except DBAPIError as exc:
            log.warning("could not notify the other workers (%s): they find the work at their next poll", exc)

    async def follow(self, on_note: Callable[[str], None], *, retry_max: float = 30.0) -> None:
        """Call ``on_note`` with each notification's payload until cancelled."""
        if self.engine is None:
            return
        import psycopg

        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        delay, said = 1.0, False
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True, application_name=LISTENER, connect_timeout=10
                )
                async with connection:
                    self._backend = connection.info.backend_pid  # from here the server lists it
                    await connection.execute(f"LISTEN {WORK_CHANNEL}")
                    self.listening, said, delay = True, False, 1.0
                    on_note("")  # news may have been missed while not listening: a full look
                    async for note in connection.notifies():
                        on_note(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server went away: poll meanwhile, listen again later
                if not said:
                    log.warning("not listening for other workers' news (%s); polling", exc)
                    said = True
            finally:
                self.listening, self._backend = False, None
            await asyncio.sleep(delay)
            delay = min(retry_max, delay * 2)
