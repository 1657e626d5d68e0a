"""Rate limits on quotes, per client address and per buyer wallet.

Every quote is a stored row and a validation call to a provider, so one client (or one wallet spread
over many clients) must not be able to make them as fast as it can send requests.

The counting is a **fixed window** per limit: ``q`` requests per window of ``w`` seconds aligned on the
epoch (``60/minute``: each UTC minute), one counter per (limit, client or wallet, window). Given
``sessions``, the counters are rows of the database every gateway process shares, so N processes (or N
machines) behind a balancer allow the limit once, not N times; without, they live in this process's
memory (tests, a tool that serves one process). Within a window the count is exact in both: a counter
is one atomic ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` (SQLite and PostgreSQL), and the two limits
of a request are counted in one transaction, rolled back when either is spent. Across a window's edge a
client can get ``q`` at the end of one window and ``q`` at the start of the next (at most ``2q`` in any
``w`` seconds): the price of one row per window instead of one per request, and what the RateLimit
headers' ``t`` (the seconds until the window resets) describes exactly.

Both limits are checked before either is counted, so a refused request does not use up the other
allowance. The outcome is plain data (:class:`Allowance`); :mod:`gateway.api.ratelimits` turns it into
``RateLimit`` headers.

The database counters are rows of ``rate_limit_windows`` (migration 0012), deleted every
:data:`_PURGE_EVERY` counted requests once their window has closed.

:meth:`QuoteLimits.count` is the event loop's way in. On SQLite it counts on the loop itself when it can
do so at once: this process's write turn free and the database's write lock free (``BEGIN IMMEDIATE``
on a connection of its own that never waits for the lock and never checkpoints the WAL, so the loop
never sleeps in SQLite's busy handler or waits for a checkpoint's writes). Otherwise, and on PostgreSQL,
it counts on a worker thread as :meth:`QuoteLimits.hit` does. The hop to a worker thread and back cost
more of a quote's CPU than the count (docs/benchmarks.md), so a count declined only because another
writer holds the lock is tried again on the loop after 1, 2 and 4 ms first
(:func:`gateway.services._writes.retry_on_loop`), as the quote's insert is.
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from limits import RateLimitItem, parse
from sqlalchemy import Engine, Table, bindparam, delete, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from cardless.ledger.models import RateLimitWindow
from gateway.services._exceptions import RateLimited
from gateway.services._writes import Attempt, retry_on_loop, write_lock, write_turn

__all__ = ["Allowance", "QuoteLimits"]

_PURGE_EVERY = 1024
"""Every this many counted requests, the counters of closed windows are deleted."""


@dataclasses.dataclass(frozen=True)
class Allowance:
    """What is left of one limit after a request: ``remaining`` of ``limit`` requests per ``window``
    seconds, the window freeing a request in ``reset`` seconds."""

    policy: str
    limit: int
    window: int
    remaining: int
    reset: int


@dataclasses.dataclass(frozen=True)
class _Counter:
    policy: str
    item: RateLimitItem
    subject: str

    def window(self, now: float) -> tuple[int, int]:
        """(start, end) of the window ``now`` falls in, epoch seconds."""
        width = self.item.get_expiry()
        start = int(now // width) * width
        return start, start + width

    def key(self, now: float) -> str:
        # rate_limit_windows.key is 255 characters: a subject (an IP address, a wallet) fits many times.
        return f"{self.policy}:{self.subject}@{self.window(now)[0]}"[:255]


class _MemoryWindows:
    """The counters in this process (one process is one set of counters)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._taken = 0

    def take(self, counters: Sequence[_Counter], now: float) -> tuple[bool, list[int]]:
        with self._lock:
            keys = [c.key(now) for c in counters]
            before = [self._counts.get(k, 0) for k in keys]
            taken = all(n < c.item.amount for n, c in zip(before, counters, strict=True))
            if taken:
                for k in keys:
                    self._counts[k] = self._counts.get(k, 0) + 1
                self._taken += 1
                if self._taken % _PURGE_EVERY == 0:
                    self._purge(now)
            return taken, before

    def take_now(self, counters: Sequence[_Counter], now: float) -> tuple[bool, list[int]] | None:
        return self.take(counters, now)  # a dict under a lock held for microseconds

    def try_take(
        self, counters: Sequence[_Counter], now: float
    ) -> tuple[Attempt, tuple[bool, list[int]] | None]:
        return Attempt.DONE, self.take(counters, now)

    def _purge(self, now: float) -> None:
        # A key ends in "@<window start>"; windows are at most a day wide here.
        for key in [k for k in self._counts if int(k.rsplit("@", 1)[1]) < now - 86_400]:
            del self._counts[key]


_TABLE = RateLimitWindow.__table__
assert isinstance(_TABLE, Table)
# One statement for SQLite (3.35+) and PostgreSQL, built once: constructing the dialect's insert with
# its conflict clause for every request cost more than executing it.
_COUNT = text(
    "INSERT INTO rate_limit_windows (key, hits, expires_at) VALUES (:key, 1, :expires_at) "
    "ON CONFLICT (key) DO UPDATE SET hits = rate_limit_windows.hits + 1 RETURNING hits"
).bindparams(bindparam("expires_at", type_=_TABLE.c.expires_at.type))


_SQLITE_COUNT = (
    "INSERT INTO rate_limit_windows (key, hits, expires_at) VALUES (?, 1, ?) "
    "ON CONFLICT (key) DO UPDATE SET hits = rate_limit_windows.hits + 1 RETURNING hits"
)
_SQLITE_PURGE = "DELETE FROM rate_limit_windows WHERE expires_at < ?"


class _DatabaseWindows:
    """The counters as rows every gateway process on this database shares."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        bind = sessions.kw.get("bind")
        assert isinstance(bind, Engine), "the quote limits need sessions bound to an engine"
        self._engine = bind
        self._taken = 0
        self._inline: sqlite3.Connection | None = None
        # A file database with a pool of its own connections: one can be taken out of it for good (an
        # in-memory database's single shared connection cannot).
        self._inline_ok = bind.dialect.name == "sqlite" and isinstance(bind.pool, QueuePool)
        dialect = bind.dialect
        # The column's own formatting of a time (as the Core statement binds it), so both paths write and
        # compare the same text.
        stamp = _TABLE.c.expires_at.type.dialect_impl(dialect).bind_processor(dialect)
        self._stamp: Callable[[datetime], Any] = stamp if stamp is not None else (lambda at: at)

    def take_now(self, counters: Sequence[_Counter], now: float) -> tuple[bool, list[int]] | None:
        """:meth:`take` on the calling thread if it needs no wait (see the module's docstring); None when
        it would (another writer holds the lock, or not SQLite): then nothing was counted."""
        return self.try_take(counters, now)[1]

    def try_take(
        self, counters: Sequence[_Counter], now: float
    ) -> tuple[Attempt, tuple[bool, list[int]] | None]:
        """:meth:`take_now`, saying why a count it declined was declined (``Attempt.BUSY``: another writer
        holds the lock; ``ELSEWHERE``: not an SQLite file)."""
        turn = write_lock(self._sessions) if self._inline_ok else None
        if turn is None:
            return Attempt.ELSEWHERE, None
        if not turn.acquire(blocking=False):  # a thread of ours writes
            return Attempt.BUSY, None
        try:
            connection = self._inline_connection()
            try:
                connection.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return Attempt.BUSY, None  # another process is writing: not worth a wait on the loop
            try:
                before = []
                for counter in counters:
                    values = (
                        counter.key(now),
                        self._stamp(datetime.fromtimestamp(counter.window(now)[1], UTC)),
                    )
                    before.append(int(connection.execute(_SQLITE_COUNT, values).fetchone()[0]) - 1)
                taken = all(n < c.item.amount for n, c in zip(before, counters, strict=True))
                if not taken:
                    connection.execute("ROLLBACK")
                    return Attempt.DONE, (False, before)
                self._taken += 1
                if self._taken % _PURGE_EVERY == 0:
                    connection.execute(_SQLITE_PURGE, (self._stamp(datetime.fromtimestamp(now, UTC)),))
                connection.execute("COMMIT")
                return Attempt.DONE, (True, before)
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        finally:
            turn.release()

    def _inline_connection(self) -> sqlite3.Connection:
        """A connection of the engine's (its pragmas and functions), taken out of the pool for good and
        made never to wait for the write lock (``busy_timeout=0``) nor checkpoint (the pool's
        connections, on worker threads, do)."""
        if self._inline is None:
            pooled = self._engine.raw_connection()
            pooled.detach()
            connection = pooled.dbapi_connection
            assert isinstance(connection, sqlite3.Connection)
            connection.isolation_level = None  # explicit BEGIN IMMEDIATE / COMMIT
            connection.execute("PRAGMA busy_timeout=0")
            connection.execute("PRAGMA wal_autocheckpoint=0")
            self._inline = connection
        return self._inline

    def take(self, counters: Sequence[_Counter], now: float) -> tuple[bool, list[int]]:
        # A Core connection, not an ORM session: nothing here is an object.
        with write_turn(self._sessions), self._engine.connect() as connection:
            before = []
            created = datetime.fromtimestamp(now, UTC)
            # Always in the same order (client, then buyer): two transactions lock the rows in one order,
            # so PostgreSQL never has them wait for each other in a cycle.
            for counter in counters:
                values = {
                    "key": counter.key(now),
                    "expires_at": datetime.fromtimestamp(counter.window(now)[1], UTC),
                }
                before.append(int(connection.execute(_COUNT, values).scalar_one()) - 1)
            taken = all(n < c.item.amount for n, c in zip(before, counters, strict=True))
            if not taken:
                connection.rollback()  # counts nothing: the other limit keeps its allowance
                return False, before
            self._taken += 1  # a race between threads only moves the purge by a request
            if self._taken % _PURGE_EVERY == 0:
                connection.execute(delete(RateLimitWindow).where(RateLimitWindow.expires_at < created))
            connection.commit()
            return True, before


class QuoteLimits:
    """The quote limits: ``per_client`` and ``per_buyer`` in the ``limits`` notation (``60/minute``),
    counted in the database ``sessions`` opens (shared by every gateway process), or in this process's
    memory without it."""

    def __init__(
        self,
        *,
        per_client: str,
        per_buyer: str,
        sessions: sessionmaker[Session] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._items: dict[str, RateLimitItem] = {"client": parse(per_client), "buyer": parse(per_buyer)}
        self._windows = _MemoryWindows() if sessions is None else _DatabaseWindows(sessions)
        self._clock = clock
        self.on_refused: Callable[[list[str]], None] | None = None
        """Told the exhausted limits' names on every refusal (the metrics count them)."""

    @property
    def shared(self) -> bool:
        """True when the counters are in the database (every process on it counts once)."""
        return isinstance(self._windows, _DatabaseWindows)

    def hit(self, *, client: str, buyer: str) -> list[Allowance]:
        """Count one quote for ``client`` (an IP address) and ``buyer`` (a wallet address, any case).
        Raises :class:`RateLimited` naming the exhausted limit(s), counting nothing, when one is spent.
        With database counters this is a write transaction: call it off the event loop."""
        return self._take(self._quote_counters(client, buyer), "quotes")

    async def count(self, *, client: str, buyer: str) -> list[Allowance]:
        """:meth:`hit` from the event loop: on the loop when it needs no wait, else on a worker thread
        (see the module's docstring). Raises what :meth:`hit` raises."""
        counters = self._quote_counters(client, buyer)
        now = self._clock()
        windows = self._windows
        found: tuple[bool, list[int]] | None = None

        def attempt() -> Attempt:
            nonlocal found
            verdict, found = windows.try_take(counters, now)
            return verdict

        await retry_on_loop(attempt)  # on the loop, retried a few ms while another writer holds the lock
        outcome = found
        if outcome is None:
            outcome = await anyio.to_thread.run_sync(windows.take, counters, now)
        return self._outcome(counters, now, outcome, "quotes")

    def _quote_counters(self, client: str, buyer: str) -> list[_Counter]:
        return [
            _Counter("client", self._items["client"], client),
            _Counter("buyer", self._items["buyer"], buyer.lower()),
        ]

    def hit_client(self, client: str) -> list[Allowance]:
        """Count one account check for ``client`` against the per-client limit only: a check calls a
        provider as a quote does, but names no wallet yet. Raises :class:`RateLimited` when spent."""
        return self._take([_Counter("client", self._items["client"], client)], "requests")

    def _take(self, counters: list[_Counter], what: str) -> list[Allowance]:
        now = self._clock()
        return self._outcome(counters, now, self._windows.take(counters, now), what)

    def _outcome(
        self, counters: list[_Counter], now: float, outcome: tuple[bool, list[int]], what: str
    ) -> list[Allowance]:
        taken, before = outcome
        used = before if not taken else [n + 1 for n in before]
        allowances = [
            Allowance(
                policy=c.policy,
                limit=c.item.amount,
                window=c.item.get_expiry(),
                remaining=max(0, c.item.amount - n),
                reset=max(0, math.ceil(c.window(now)[1] - now)),
            )
            for c, n in zip(counters, used, strict=True)
        ]
        if taken:
            return allowances
        spent = [c.policy for c, n in zip(counters, before, strict=True) if n >= c.item.amount]
        if self.on_refused is not None:
            self.on_refused(spent)
        retry_after = max(a.reset for a in allowances if a.policy in spent)
        raise RateLimited(
            f"too many {what} per {' and per '.join(spent)}; retry after {retry_after} s",
            retry_after=max(retry_after, 1),
            allowances=allowances,
        )
