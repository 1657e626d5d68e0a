"""The oracle worker: schedules the stages that drive every paid order to settled or refunded.

One :meth:`OracleWorker.tick` runs each stage once; every stage reads its work from the database, so
a worker that was killed anywhere resumes from what was committed:

1. watch the chain and apply its events (:mod:`oracles.events`);
2. risk-check paid orders (:mod:`oracles.risk`);
3. claim orders due a provider call and start the calls as tasks (:mod:`oracles.outcomes`):
   ``submitting`` is committed *before* a submit; an order left in ``submitting`` whose lease has
   lapsed is an unknown outcome and is queried by our key. A running worker records the calls'
   answers as they arrive, and signs and posts their proofs at once, beside the tick (``run``: the
   answer lane), instead of at the tick's next pass;
4. sign fulfilment proofs and refund authorisations (:mod:`oracles.proofs`) and post them
   (:mod:`oracles.settlement`);
5. confirm transactions; the periodic jobs expire quotes and refund orders whose deadline approaches
   before a provider was called (:mod:`oracles.deadlines`).

Several workers may share one database: external work is claimed with a lease (worker id, expiry)
committed before the call (``cardless.ledger.store.claim``), renewed while the call runs and released
when it ends. On PostgreSQL one of them leads (:mod:`oracles.leader`): it runs stages 1, 2, 4's posting
and 5 every tick, and leaves stage 3 and the signing of its answers to the followers while any listens
(``_plan``); alone, it runs them all. :mod:`oracles.service` runs a worker with its periodic jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.contract import Contract

from adapters import ProviderAdapter
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.logcontext import ORDER_ID
from cardless.ledger.models import Order, OrderState, utcnow
from cardless.ledger.risk import RiskEngine
from cardless.ledger.store import (
    candidates,
    claim_many,
    lease_free,
    lease_holders,
    release,
    release_holders,
    renew,
)
from cardless.ledger.store import due as attempt_due
from cardless.protocol import EscrowDomain
from oracles.deadlines import expire_quotes, purge_unpaid_quotes, refund_near_deadline
from oracles.events import apply_event
from oracles.leader import CLAIMS, FRESH, PROOFS, WatchLeadership, WorkSignal
from oracles.outcomes import CallOutcome, OutcomePolicy, Outcomes, aware
from oracles.proofs import CoSigner, Proofs
from oracles.rawabi import quantity, rpc_batch
from oracles.risk import RiskPolicy, purge_request_signals, risk_check_paid
from oracles.settlement import Settlement
from oracles.txmanager import TxManager
from oracles.watcher import Watcher

__all__ = ["OracleWorker", "WorkerConfig", "default_worker_id"]

log = logging.getLogger(__name__)

_BLOCK_TIME_CACHE = 4_096
"""Block times kept by hash (a block's time is fixed by its hash, so a reorg cannot make one stale)."""
_REFUND_EVERY = 1.0
"""Seconds between the provider stage's checks for orders too near their deadline to submit."""
_BLOCK_BATCH = 500
"""Blocks per JSON-RPC batch when a range's block times are read ahead."""
_GATHER = 0.02
"""Seconds the answer lane waits, at most, for the other calls still running before it records what came
back: the calls one claim started answer within moments of each other, and one transaction and one
settlement for all of them cost less than one each."""
_GATHER_BUSY = 0.06
"""The same wait while at least half the provider slots are busy (saturation): answers arrive back to back
then, and a 20 ms window recorded and signed them a few at a time, each round a transaction and a signing
pass of its own (about 1 ms of CPU more per order in bench.e2e bmax than the tick's batches)."""
_RETRY_PAUSE = 0.5
"""Seconds before the answer lane tries again to record answers the database refused."""
S = OrderState


def _host() -> str:
    return socket.gethostname()[:40]


def default_worker_id() -> str:
    """hostname-pid-random: unique per process, and says where a lease holder runs."""
    return f"{_host()}-{os.getpid()}-{secrets.token_hex(4)}"


_PID = re.compile(r"[0-9]{1,10}")


def dead_local_workers(owners: Iterable[str], *, me: str, host: str | None = None) -> list[str]:
    """Of ``owners``, the default worker ids (hostname-pid-random) of this host whose process is gone:
    their pid is not running, or it is this process's pid under another id (an earlier life in a
    restarted container). A reused pid only means waiting for the lease to lapse."""
    host = _host() if host is None else host
    dead = []
    for owner in owners:
        parts = owner.rsplit("-", 2)
        # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
        if owner == me or len(parts) != 3 or parts[0] != host or not _PID.fullmatch(parts[1]):
            continue
        pid = int(parts[1])
        if pid == os.getpid():
            dead.append(owner)
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.append(owner)
        except PermissionError:  # alive, another user's
            pass
    return dead


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The stages one tick runs (``OracleWorker._plan``); the provider calls' outcomes are always
    recorded. ``claims``: orders due a call are claimed, those left waiting ``steal_after`` only, or all
    of them with ``fresh_claims``."""

    watch: bool = False
    risk: bool = False
    claims: bool = True
    fresh_claims: bool = False
    sign: bool = False
    post: bool = False
    confirm: bool = False


_FULL = _Plan(watch=True, risk=True, fresh_claims=True, sign=True, post=True, confirm=True)
_SWEPT = (S.PAID, S.SUCCEEDED, S.FAILED_FINAL, S.PROOF_PENDING, S.REFUND_PENDING)
"""The states whose stages a follower runs only when an order has waited in them (``_plan``)."""
_NET_EVERY = 0.5
"""Seconds between a leader's claims of what its followers left waiting ``steal_after`` (its safety net):
a claim query every 10 ms tick for orders that are almost never there cost the bound worker's CPU (at
250 ms the query and its refund check were still 7 % of the leader's samples in bench.e2e d4)."""


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    max_batch: int = 50
    submit_concurrency: int = 16
    query_backoff: timedelta = timedelta(seconds=1)
    query_backoff_max: timedelta = timedelta(seconds=30)
    not_found_grace: timedelta = timedelta(seconds=10)
    """How long after our last submit a "not found" still means "maybe in flight"."""
    deadline_margin: int = 300
    """Refund an order nobody has submitted yet when its deadline is this close (seconds)."""
    quote_expiry_grace: int = 60
    unpaid_retention: int = 3_600
    """Seconds (chain time) after its quote expired that an unpaid order is deleted."""
    confirmations: int = 0
    finality: str = "latest"
    """Block tag the watcher never reads past (``safe``/``finalized``), besides the depth."""
    max_log_range: int = 2_000
    worker_id: str = dataclasses.field(default_factory=default_worker_id)
    """Written into the leases this worker holds (at most 64 characters)."""
    heads_url: str = ""
    """A WebSocket JSON-RPC endpoint (``ws://``) whose ``eth_subscribe newHeads`` wakes the idle loop
    at once when a block arrives; empty, or a node without it: the loop polls every ``idle_sleep``."""
    steal_after: timedelta = timedelta(seconds=1)
    """On PostgreSQL with several workers, who claims orders due a provider call at once, and who only
    once they have waited this long (or when a worker said its slots are full, ``claims``): the followers
    that listen claim at once and the leader waits, its safety net for a follower that stalled or died;
    a follower that cannot listen (the leader does not count it) waits, and the leader claims at once."""
    follower_idle: float = 0.5
    """Seconds an idle follower sleeps between ticks while it listens for the other workers' news."""
    lease_ttl: timedelta = timedelta(seconds=10)
    """How long a claim holds without renewal. Leases of running calls are renewed every third of it, so
    it bounds how long the orders of a worker that died on another host wait for another worker, not how
    long a call may take (a restart on the same host frees its dead life's leases at once)."""

    def __post_init__(self) -> None:
        if not 0 < len(self.worker_id) <= 64:
            raise ValueError(f"worker_id must be 1 to 64 characters, not {self.worker_id!r}")

    @property
    def outcome_policy(self) -> OutcomePolicy:
        return OutcomePolicy(self.query_backoff, self.query_backoff_max, self.not_found_grace)


class OracleWorker:
    def __init__(
        self,
        *,
        w3: Web3,
        escrow: Contract,
        domain: EscrowDomain,
        sessions: sessionmaker[Session],
        adapters: Mapping[str, ProviderAdapter],
        proof_key: LocalAccount,
        tx: TxManager,
        cipher: AccountCipher,
        start_block: int,
        risk: RiskPolicy | None = None,
        config: WorkerConfig | None = None,
        callback_base: str | None = None,
        cosigners: Sequence[CoSigner] = (),
    ) -> None:
        self.w3 = w3
        self.escrow = escrow
        self.sessions = sessions
        self.adapters = dict(adapters)
        self.tx = tx
        self.risk = risk or RiskPolicy(engine=RiskEngine(cipher=cipher))
        self.config = config or WorkerConfig()
        self.worker_id = self.config.worker_id
        self.outcomes = Outcomes(
            sessions,
            self.adapters,
            cipher,
            owner=self.worker_id,
            policy=self.config.outcome_policy,
            callback_base=callback_base,
        )
        self.proofs = Proofs(sessions, proof_key, domain, cosigners)
        self.settlement = Settlement(
            sessions,
            escrow,
            tx,
            self.proofs,
            owner=self.worker_id,
            lease_ttl=self.config.lease_ttl,
            max_batch=self.config.max_batch,
        )
        self.watcher = Watcher(
            w3,
            escrow,
            sessions,
            self._apply_event,
            prefetch=self._prefetch_block_times,
            start_block=start_block,
            confirmations=self.config.confirmations,
            finality=self.config.finality,
            max_range=self.config.max_log_range,
        )
        self._in_flight: set[str] = set()
        self._outcomes: list[tuple[str, CallOutcome | None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._provider_slots = asyncio.Semaphore(self.config.submit_concurrency)
        self._recovered = False
        self._renewed_at = utcnow()
        self._block_times: dict[str, int] = {}
        self._wake: asyncio.Event | None = None
        self._answered: asyncio.Event | None = None
        """Set by each provider answer while the answer lanes run (``run``); None otherwise: the tick
        records the answers then."""
        self._to_post: asyncio.Event | None = None
        """Set when the answer lane has signed proofs or refunds: the posting lane sends them."""
        self._signing = threading.Lock()
        """The signing stage, run by the tick's thread and the answer lane's: one at a time (two at once
        would sign one order twice)."""
        self._posting = threading.Lock()
        """Posting and confirming, run by the tick's thread and the posting lane's: one at a time (two at
        once would confirm one transaction twice)."""
        self._watching = threading.Lock()
        """The watcher's poll, run by the tick's intake and after a confirmation: one at a time."""
        self._refunds_checked = float("-inf")
        self._head_time: int | None = None
        """The newest block's time as the ``newHeads`` subscription announced it; None without one."""
        self.leadership = WatchLeadership(sessions)
        """On PostgreSQL one worker of several reads the chain and posts every tick; the others now and
        then."""
        self.signal = WorkSignal(self.leadership.engine if self.leadership.shared else None)
        """LISTEN/NOTIFY between the workers of a PostgreSQL database."""
        self._claims_hint = False
        """A worker said its provider slots were full: a follower's next claim takes fresh orders too."""
        self._unsigned = 0
        """Outcomes this worker recorded since its last signing stage."""
        self._cursor_seen: tuple[int, str] | None = None
        """The chain cursor at this follower's last sweep."""
        self._delegating = False
        """This tick's plan: the leader leaves the provider calls to followers that listen."""
        self._net_at = float("-inf")
        self._swept_at = float("-inf")

    # ------------------------------------------------------------------ loop

    async def tick(self, *, housekeeping: bool = True) -> int:
        """Run every pipeline stage once; returns how many things changed (0 means idle).

        ``housekeeping`` also runs the periodic jobs (re-query unknown outcomes, expire quotes and refund
        orders near their deadline). A running oracle leaves them to :class:`oracles.service.OracleService`
        and passes False; tests and one-shot callers get everything from one call.
        """
        if not self._recovered:
            self.release_leases_of_dead_local_workers()
            self.tx.recover()
            self._recovered = True
        self._renew_leases()
        # The chain and database stages block on round trips to the node and the database: they run in a
        # thread, so the provider calls (tasks on this loop) progress meanwhile instead of waiting for
        # the whole tick. Claims and task starts stay on the loop.
        work, chain_now, plan = await asyncio.to_thread(self._ingest)
        if housekeeping:
            work += await self.expire_and_refund()
        work += self._claim_due(plan, chain_now)
        if housekeeping:
            work += await self.requery_due()
        sign, self._unsigned = plan.sign or self._unsigned > 0, 0
        settle = dataclasses.replace(plan, sign=sign)
        work += await asyncio.to_thread(self._settle, chain_now, settle, wait=self._answered is None)
        return work

    def _claim_due(self, plan: _Plan, chain_now: int) -> int:
        """The tick's claim of orders due a provider call, as ``plan`` says: all of them, those left
        waiting ``steal_after``, or none (a leader with followers, between two of its safety-net claims);
        a claimer's ``claims`` hint makes a follower's next one take all."""
        fresh = plan.fresh_claims or self._claims_hint
        if not (plan.claims or fresh):
            return 0
        self._claims_hint = False
        stale = None if fresh else self.config.steal_after
        # The followers' claims check for orders too late to submit (once a second each): not the leader.
        return self.start_provider_calls(
            S.RISK_CHECKED, chain_now=chain_now, stale_after=stale, refunds=not self._delegating
        )

    def _plan(self) -> _Plan:
        """Which stages this tick runs. A leader alone (and every worker on SQLite) runs all of them,
        every tick. A leader with followers listening (``WorkSignal.others_listening``) runs the watcher,
        the risk check (saying ``fresh`` when it passed orders), posting and confirmation every tick, and
        leaves the provider calls to them: it signs its own answers, every ``follower_poll`` what has
        waited ``steal_after`` to be signed, and every ``_NET_EVERY`` it claims what has waited
        ``steal_after`` (a follower's ``claims`` does not wake it: the other followers take those). The
        provider calls were most of the leader's CPU, and the leader was the bound of four workers
        (docs/benchmarks.md, round 7).

        A follower records and signs what its own provider calls answered, and claims orders due a call:
        all of them while it listens (the leader counts it then, and waits), else only those left waiting
        ``steal_after`` (or all when a claimer said its slots were full); every ``follower_poll`` it runs
        the stages whose orders have waited ``steal_after`` (one query says which), and reads the chain
        and the receipts when the leader has read nothing since its last sweep. Run every tick by every
        worker, those stages cost the same queries four times over for a share of the same orders, and
        split the leader's batches: there a follower is a safety net, not a competitor."""
        watch = self.leadership.should_watch()  # the leader: every tick; a follower: every follower_poll
        self._delegating = False
        if self.leadership.leading:
            if not self.leadership.shared or self.signal.others_listening() == 0:
                return _FULL
            self._delegating = True
            now = self.leadership.clock()
            net = now - self._net_at >= _NET_EVERY
            if net:
                self._net_at = now
            sign = False
            if now - self._swept_at >= self.leadership.follower_poll:
                self._swept_at = now
                sign = bool({S.SUCCEEDED, S.FAILED_FINAL} & self._waiting_states())
            return _Plan(watch=True, risk=True, claims=net, sign=sign, post=True, confirm=True)
        fresh = self.signal.listening
        if not watch:
            return _Plan(fresh_claims=fresh)
        waiting = self._waiting_states()
        unread = self._chain_unread()
        return _Plan(
            watch=unread,
            risk=S.PAID in waiting,
            fresh_claims=fresh,
            sign=bool({S.SUCCEEDED, S.FAILED_FINAL} & waiting),
            post=bool({S.PROOF_PENDING, S.REFUND_PENDING} & waiting),
            confirm=unread,
        )

    def _chain_unread(self) -> bool:
        """Whether a follower's sweep reads the chain: when the cursor has not moved since its last sweep
        (the leader read nothing meanwhile: no new blocks, then the poll is cheap, or a leader stalled).
        A follower reading blocks the leader reads too made both wait on the cursor's lock, and one of
        them read the logs for nothing."""
        cursor = self.watcher.cursor()
        seen, self._cursor_seen = self._cursor_seen, cursor
        return cursor is None or cursor == seen

    def _waiting_states(self) -> set[OrderState]:
        """The states of the stages a follower's sweep runs in which an unleased order has waited
        ``steal_after`` or longer (one query; a risk hold is not waiting, nor an order in back-off)."""
        now = utcnow()
        with self.sessions() as session:
            found = session.scalars(
                select(Order.state)
                .where(
                    Order.state.in_([s.value for s in _SWEPT]),
                    lease_free(now),
                    attempt_due(now),
                    Order.risk_hold_at.is_(None),
                    Order.updated_at <= now - self.config.steal_after,
                )
                .group_by(Order.state)
            )
            return {OrderState(state) for state in found}

    def _ingest(self) -> tuple[int, int, _Plan]:
        """The plan of this tick, then the watcher and the risk check; returns the work done, the latest
        block's time (read once per tick: it was read three times, a round trip each) and the plan."""
        plan = self._plan()
        work = self._poll_chain() if plan.watch else 0
        if plan.risk:
            passed = risk_check_paid(self.sessions, self.risk)
            if passed and self._delegating:  # committed: the followers claim them now
                self.signal.notify(FRESH)
            work += passed
        return work, self._chain_now(), plan

    def _poll_chain(self) -> int:
        with self._watching:
            return self.watcher.poll()

    def _settle(self, chain_now: int, plan: _Plan | None = None, *, wait: bool = True) -> int:
        """Sign proofs and refunds, post them, confirm what was mined and apply its events at once (each
        as ``plan`` says). A follower that signed wakes the leader to post.

        Without ``wait`` (the tick, while the answer lanes run), a stage the lanes are running is left to
        them rather than waited for: they sign and post everything due, not only their own orders."""
        plan = plan or _FULL
        work = 0
        if plan.sign and self._signing.acquire(blocking=wait):
            try:
                work += self._sign(chain_now)
            finally:
                self._signing.release()
        if (plan.post or plan.confirm) and self._posting.acquire(blocking=wait):
            try:
                work += self._post(chain_now, plan)
            finally:
                self._posting.release()
        return work

    def _sign(self, chain_now: int) -> int:
        signed = self.proofs.sign_fulfilments(chain_now)
        signed += self.proofs.sign_refunds()
        if signed and not self.leadership.leading:
            self.signal.notify(PROOFS)
        return signed

    def _post(self, chain_now: int, plan: _Plan) -> int:
        work = self.settlement.post(chain_now) if plan.post else 0
        confirmed = self.tx.confirm() if plan.confirm else []
        work += len(confirmed)
        if confirmed and self.leadership.leading and self._watching.acquire(blocking=False):
            # Not waited for: a poll running now, or the next one (the block's announcement wakes the
            # tick), applies the events of what was confirmed.
            try:
                work += self.watcher.poll()
            finally:
                self._watching.release()
        return work

    def _busy_pause(self) -> float:
        """Seconds between two busy ticks: 10 ms for the worker that reads the chain (latency), 40 ms for
        the others on a shared database. Every tick costs the same few queries whatever it finds, and four
        workers each ticking every 10 ms split the same orders into four times the ticks: a quarter of
        their time went to claim queries that found one or two orders each."""
        return 0.01 if self.leadership.leading else 0.04

    def _idle_pause(self, idle_sleep: float) -> float:
        """Seconds an idle tick waits for news: ``idle_sleep``, or ``follower_idle`` for a follower that
        listens for the other workers' notifications (woken at once by them)."""
        if self.signal.listening and not self.leadership.leading:
            return max(idle_sleep, self.config.follower_idle)
        return idle_sleep

    def _on_note(self, kind: str) -> None:
        """Another worker's news (``oracles.leader.WorkSignal``): the leader wakes for proofs to post,
        followers for orders the risk check passed (``fresh``) or a claimer could not take (``claims``:
        the other followers take those, not a leader with followers, whose claims are a safety net); an
        empty payload (listening again after a lost connection, news may have been missed) wakes everyone
        for a full look."""
        leading = self.leadership.leading
        if kind in (CLAIMS, "") and not leading:
            self._claims_hint = True
        wanted = (kind in (PROOFS, "") and leading) or (kind in (CLAIMS, FRESH, "") and not leading)
        if wanted and self._wake is not None:
            self._wake.set()

    async def requery_due(self) -> int:
        """Periodic job: query every unknown outcome whose back-off has elapsed, by our key. Orders left in
        ``submitting`` by a worker that died (its lease lapsed) are unknown outcomes too: they are
        queried, never blindly resubmitted."""
        return self.start_provider_calls(S.SUBMITTING, S.UNKNOWN)

    async def expire_and_refund(self) -> int:
        """Periodic job: expire unpaid quotes; refund near-deadline orders no provider was called for."""
        chain_now = self._chain_now()
        return expire_quotes(self.sessions, chain_now, self.config.quote_expiry_grace) + refund_near_deadline(
            self.sessions, chain_now, self.config.deadline_margin
        )

    async def purge_unpaid(self) -> int:
        """Periodic job: delete orders quoted and never paid, well after their quote expired."""
        return purge_unpaid_quotes(self.sessions, self._chain_now(), self.config.unpaid_retention)

    async def purge_signals(self) -> int:
        """Periodic job: delete request signals (client network, user agent) past their retention."""
        return purge_request_signals(self.sessions, self.risk)

    async def run(self, stop: asyncio.Event, idle_sleep: float = 0.1, *, housekeeping: bool = True) -> None:
        """Tick until ``stop``. Between ticks the loop yields to the provider tasks, and when there was
        nothing to do it sleeps up to ``idle_sleep``, woken early by a provider answer (recorded and the
        order moved on at once) or, with ``heads_url``, by a new block (its events applied at once)."""
        wake = self._wake = asyncio.Event()
        answered = self._answered = asyncio.Event()
        to_post = self._to_post = asyncio.Event()
        lanes = [
            asyncio.create_task(self._answer_lane(stop, answered), name="oracle-answers"),
            asyncio.create_task(self._post_lane(stop, to_post), name="oracle-posts"),
        ]
        helpers = [asyncio.create_task(_set_when(stop, wake), name="oracle-stop")]
        if self.config.heads_url:
            heads = follow_heads(self.config.heads_url, None, on_head=self._on_head)
            helpers.append(asyncio.create_task(heads, name="oracle-heads"))
        if self.signal.enabled:
            helpers.append(asyncio.create_task(self.signal.follow(self._on_note), name="oracle-listen"))
        try:
            while not stop.is_set():
                wake.clear()
                try:
                    work = await self.tick(housekeeping=housekeeping)
                except Exception:
                    log.exception("oracle tick failed; retrying")
                    work = 0
                with contextlib.suppress(TimeoutError):
                    if work:  # busy: yield to the provider tasks, and let the next batch gather
                        await asyncio.wait_for(stop.wait(), timeout=self._busy_pause())
                    else:
                        await asyncio.wait_for(wake.wait(), timeout=self._idle_pause(idle_sleep))
        finally:
            for helper in helpers:
                helper.cancel()
            if not stop.is_set():
                for lane in lanes:
                    lane.cancel()
            answered.set()  # the lanes end their round and stop; drain() records what is left
            to_post.set()
            await asyncio.gather(*helpers, *lanes, return_exceptions=True)
            self._answered = self._to_post = None
            self._head_time = None
        await self.drain()
        await asyncio.to_thread(self.leadership.close)

    async def _answer_lane(self, stop: asyncio.Event, answered: asyncio.Event) -> None:
        """Beside the tick, until ``stop``: record each provider answer as it arrives, with those of the
        other calls that answer within ``_GATHER``, and sign their proofs at once
        (:meth:`record_answers`); then wake the tick (slots are free for new claims)."""
        loop = asyncio.get_running_loop()
        while True:
            await answered.wait()
            running = sum(1 for task in self._tasks if not task.done())
            busy = running * 2 >= self.config.submit_concurrency
            deadline = loop.time() + (_GATHER_BUSY if busy else _GATHER)
            while not stop.is_set() and any(not task.done() for task in self._tasks):
                left = deadline - loop.time()
                if left <= 0:
                    break
                answered.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(answered.wait(), timeout=left)
            answered.clear()
            recorded = 0
            try:
                recorded = await self.record_answers()
            except Exception:
                log.exception("signing recorded provider answers failed; the tick retries")
            if self._wake is not None:
                self._wake.set()
            if stop.is_set():
                return
            if self._outcomes:  # came meanwhile, or could not be recorded (then after a pause)
                if not recorded:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=_RETRY_PAUSE)
                answered.set()

    async def _post_lane(self, stop: asyncio.Event, to_post: asyncio.Event) -> None:
        """Beside the tick, until ``stop``: post what the answer lane signed as soon as the previous
        settlement has gone out (what was signed meanwhile goes together in the next one)."""
        while not stop.is_set():
            await to_post.wait()
            to_post.clear()
            if stop.is_set():
                return
            try:
                await self.post_signed()
            except Exception:
                log.exception("posting signed proofs failed; the tick retries")
            if self._wake is not None:
                self._wake.set()

    async def drain(self) -> None:
        """Wait for provider calls already started and record their outcomes (used at shutdown and by
        tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.record_outcomes()

    # ------------------------------------------------------------------ provider calls

    def start_provider_calls(
        self,
        *states: OrderState,
        chain_now: int | None = None,
        stale_after: timedelta | None = None,
        refunds: bool = True,
    ) -> int:
        """Claim due orders in ``states``, as many as there are free provider slots, and start a provider
        call for each. Calls run as tasks, so one slow provider (a 10 s timeout) never holds up proofs,
        refunds or other orders; the lease keeps every other worker (and a later tick or job of this
        one) from starting a second call for the same order.

        With ``chain_now``, no order is submitted whose deadline is within ``deadline_margin`` of it: a
        top-up that may complete after the deadline could never be settled (the escrow refuses the proof),
        so such an order is refunded instead when no provider can have charged for it (and otherwise left
        to the provider's answer or the buyer's reclaim); that check runs at most once a second, and not
        without ``refunds`` (a leader whose followers claim: theirs and the periodic job run it).

        With ``stale_after``, only orders unchanged for that long are claimed (what the others have left
        waiting: a leader's safety net, or a follower that does not listen). A claim that fills every free
        slot says so to the other workers (``claims``, in its transaction): there may be more."""
        if self._answered is None:  # no answer lane: the answers wait for this call
            self.record_outcomes()
        refunded = 0
        late = None
        if chain_now is not None and S.RISK_CHECKED in states:
            # The refund's query once a second, not every tick (a tick is ~10 ms under load, and the
            # query was 5 % of four workers' time): the claim below leaves late orders out in SQL anyway,
            # so one waits at most a second more for its refund, against a margin of minutes.
            clock = time.monotonic()
            if refunds and clock - self._refunds_checked >= _REFUND_EVERY:
                self._refunds_checked = clock
                refunded = refund_near_deadline(self.sessions, chain_now, self.config.deadline_margin)
            late = chain_now + self.config.deadline_margin
        capacity = self.config.submit_concurrency - len(self._in_flight)
        if capacity <= 0:
            return refunded
        now = utcnow()
        jobs: list[tuple[str, str]] = []
        calls: list[tuple[str, str, Any]] = []
        with self.sessions.begin() as session:
            # Lock only a few due rows: the rest stay visible to the other workers' claims meanwhile. Orders
            # too late to submit are left out in SQL too, or enough of them (the oldest) would fill the
            # window every tick and nothing behind them would ever be claimed.
            wanted = [attempt_due(now)]
            if late is not None:
                wanted.append(or_(Order.state != S.RISK_CHECKED.value, Order.fulfilment_deadline > late))
            if stale_after is not None:
                wanted.append(Order.updated_at <= now - stale_after)
            chosen: list[Order] = []
            # ``capacity`` rows, not more: leased, not-due and late rows are left out in SQL already, and
            # every row read is an ORM object and, on PostgreSQL, a row the other workers skip meanwhile
            # (four times the capacity was a quarter of four workers' time).
            for row in candidates(session, states, now=now, where=wanted, limit=capacity):
                if len(chosen) >= capacity:
                    break
                if row.id in self._in_flight:
                    continue
                due = aware(row.next_attempt_at)
                if due is not None and due > now:
                    continue
                state = OrderState(row.state)
                if state is S.RISK_CHECKED and late is not None and row.fulfilment_deadline <= late:
                    continue
                chosen.append(row)
            # One UPDATE per state (at most three), each only for rows still in the state they were read
            # in, instead of one per order.
            taken: set[str] = set()
            for state in dict.fromkeys(OrderState(row.state) for row in chosen):
                ids = [row.id for row in chosen if row.state == state.value]
                taken |= claim_many(
                    session, ids, self.worker_id, states=[state], ttl=self.config.lease_ttl, now=now
                )
            for row in chosen:
                if row.id not in taken:
                    continue
                kind = "submit" if row.state == S.RISK_CHECKED.value else "query"
                jobs.append((row.id, kind))
                # The intent, in the claim's transaction: `submitting` (or what a query needs) is
                # committed with the lease, before any call starts (one transaction for all).
                if kind == "submit":
                    asked: Any = self.outcomes.begin_submit(session, row, claimed=True)
                else:
                    asked = self.outcomes.begin_query(row, claimed=True)
                if asked is not None:
                    calls.append((row.id, kind, asked))
            if len(chosen) >= capacity:
                self.signal.notify_in(session.connection(), CLAIMS)
        # The claims and intents are committed: from here no other worker starts a call for these orders.
        if jobs:  # who took which order: with several workers, the trail of a takeover
            claimed = " ".join(f"{kind}:{order_id}" for order_id, kind in jobs)
            log.info("%s claimed %s", self.worker_id, claimed)
        planned = {order_id: (kind, asked) for order_id, kind, asked in calls}
        for order_id, kind in jobs:
            self._in_flight.add(order_id)
            plan = planned.get(order_id)
            task = asyncio.create_task(self._provider_step(order_id, plan), name=f"{kind}:{order_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return refunded + len(jobs)

    async def _provider_step(self, order_id: str, plan: tuple[str, Any] | None) -> None:
        """One provider call whose intent is committed; its outcome waits in ``_outcomes`` for the answer
        lane (:meth:`record_answers`), or without one for the next :meth:`record_outcomes` (the order stays
        in flight, its lease renewed, until then)."""
        ORDER_ID.set(order_id)  # this task's own context: every log line of the step names the order
        outcome: CallOutcome | None = None
        try:
            if plan is not None:
                kind, asked = plan
                async with self._provider_slots:
                    if kind == "submit":
                        outcome = await self.outcomes.call_submit(*asked)
                    else:
                        outcome = await self.outcomes.call_query(*asked)
        except Exception:
            log.exception("provider step for %s failed", order_id)
        self._outcomes.append((order_id, outcome))
        # record it and move the order on now, not at the next tick or idle poll
        if self._answered is not None:
            self._answered.set()
        elif self._wake is not None:
            self._wake.set()

    def record_outcomes(self) -> int:
        """Record the provider calls' outcomes that came back since the last call and release their
        leases, all in one transaction (one per order was a third of the oracle's database time)."""
        done = self._take_outcomes()
        return self._recorded(done, self._store_outcomes(done))

    async def record_answers(self) -> int:
        """The answer lane's step: record the provider answers that came back (one transaction, in a
        thread, as :meth:`record_outcomes`) and, if any was recorded, sign their proofs and refunds at
        once and wake the posting lane (a follower wakes the leader to post), without waiting for the
        tick (its chain reads and claims, or the stages of its pass that were running when they arrived),
        nor for a settlement being posted. Returns how many were recorded."""
        done = self._take_outcomes()
        if not done:
            return 0
        recorded = self._recorded(done, await asyncio.to_thread(self._store_outcomes, done))
        if recorded:
            await asyncio.to_thread(self._sign_answers)
            self._unsigned = 0
            if self._to_post is not None:
                self._to_post.set()
        return recorded

    def _sign_answers(self) -> int:
        return self._settle(self._chain_now(), _Plan(sign=True))

    async def post_signed(self) -> int:
        """The posting lane's step: the leader posts what is signed and confirms it (a follower leaves
        that to the leader, which its signing woke)."""
        if not self.leadership.leading:
            return 0
        return await asyncio.to_thread(self._post_signed)

    def _post_signed(self) -> int:
        return self._settle(self._chain_now(), _Plan(post=True, confirm=True))

    def _take_outcomes(self) -> list[tuple[str, CallOutcome | None]]:
        """The outcomes waiting (on the event loop, where the calls append them)."""
        done, self._outcomes = self._outcomes, []
        return done

    def _store_outcomes(self, done: list[tuple[str, CallOutcome | None]]) -> set[str] | None:
        """Record ``done`` and release their leases (the database's part: any thread). Returns the orders
        whose outcome could not be recorded, or None when none was (the database is unreachable)."""
        if not done:
            return set()
        outcomes = [outcome for _, outcome in done if outcome is not None]
        try:
            failed = self.outcomes.record_all(outcomes, release_owner=self.worker_id)
            bare = [order_id for order_id, outcome in done if outcome is None]
            if bare:  # nothing to record (the call failed unexpectedly): the lease only
                with self.sessions.begin() as session:
                    release(session, bare, self.worker_id)
        except Exception:  # the database is unreachable: try again later, the leases are renewed
            log.exception("could not record %d provider outcomes; retrying", len(done))
            return None
        return {outcome.order_id for outcome in failed}

    def _recorded(self, done: list[tuple[str, CallOutcome | None]], retry: set[str] | None) -> int:
        """After :meth:`_store_outcomes` (on the event loop): what was not recorded waits again, the rest
        leaves this worker's calls in flight. Returns how many were recorded."""
        if retry is None:
            self._outcomes[:0] = done
            return 0
        self._unsigned += len(done) - len(retry)
        self._outcomes[:0] = [(order_id, outcome) for order_id, outcome in done if order_id in retry]
        for order_id, _ in done:
            if order_id not in retry:
                self._in_flight.discard(order_id)
        return len(done) - len(retry)

    def release_leases_of_dead_local_workers(self) -> int:
        """At start-up: free the leases of workers on this host whose process has died (this process's
        previous life, typically), so a restart resumes their orders at once instead of after
        ``lease_ttl``. Workers elsewhere are only known dead when their leases lapse."""
        with self.sessions.begin() as session:
            dead = dead_local_workers(lease_holders(session, prefix=f"{_host()}-"), me=self.worker_id)
            freed = release_holders(session, dead)
        if freed:
            log.info("freed %d leases of dead workers %s", freed, ", ".join(dead))
        return freed

    def _renew_leases(self) -> None:
        """Keep the leases of calls still running; one statement for all of them."""
        now = utcnow()
        if not self._in_flight or now - self._renewed_at < self.config.lease_ttl / 3:
            return
        with self.sessions.begin() as session:
            held = renew(session, self._in_flight, self.worker_id, ttl=self.config.lease_ttl, now=now)
        self._renewed_at = now
        if held < len(self._in_flight):
            log.warning(
                "%d of %d leases lapsed before renewal", len(self._in_flight) - held, len(self._in_flight)
            )

    # ------------------------------------------------------------------ chain clock

    def _on_head(self, head: Mapping[str, Any] | None) -> None:
        """A block was announced (None: the subscription is lost). Its time is the chain's now; it wakes
        the worker that reads the chain (the others have nothing to do with a block itself, and woken by
        every block, four workers ran four times the ticks for the same work)."""
        try:
            self._head_time = None if head is None else quantity(head["timestamp"])
        except (KeyError, TypeError, ValueError):
            self._head_time = None
        if head is not None and self._wake is not None and self.leadership.leading:
            self._wake.set()

    def _chain_now(self) -> int:
        """The latest block's time: as the ``newHeads`` subscription last announced it, else read (raw
        JSON-RPC, every tick: one round trip per tick and worker)."""
        if self._head_time is not None:
            return self._head_time
        (block,) = rpc_batch(self.w3, [("eth_getBlockByNumber", ["latest", False])])
        return quantity(block["timestamp"])

    def _apply_event(self, session: Session, name: str, args: dict[str, Any], meta: dict[str, Any]) -> None:
        block_hash: str = meta["block_hash"]
        apply_event(session, name, args, meta, block_time=lambda number: self._block_time(number, block_hash))

    def _prefetch_block_times(self, logs: list[dict[str, Any]]) -> None:
        """The times of a range's blocks not cached yet, in one JSON-RPC batch: on a chain that mines one
        block per transaction every paid event has a block of its own (one round trip each before)."""
        wanted = sorted({Web3.to_hex(e["blockHash"]) for e in logs} - set(self._block_times))
        if len(wanted) < 2:
            return
        if len(self._block_times) + len(wanted) > _BLOCK_TIME_CACHE:
            self._block_times.clear()
        for start in range(0, len(wanted), _BLOCK_BATCH):
            chunk = wanted[start : start + _BLOCK_BATCH]
            # raw JSON-RPC: web3's block formatters cost more than the round trip (docs/benchmarks.md)
            blocks = rpc_batch(self.w3, [("eth_getBlockByHash", [block_hash, False]) for block_hash in chunk])
            for block_hash, block in zip(chunk, blocks, strict=True):
                if isinstance(block, dict) and "timestamp" in block:  # None: unknown (reorged) block
                    self._block_times[block_hash] = quantity(block["timestamp"])

    def _block_time(self, number: int, block_hash: str | None = None) -> int:
        """A block's time; by hash, cached: a block's time never changes, and a settlement batch's 50
        events (one block) cost one ``eth_getBlockByHash`` instead of 50 ``eth_getBlockByNumber``."""
        if block_hash is None:
            return int(self.w3.eth.get_block(number)["timestamp"])
        cached = self._block_times.get(block_hash)
        if cached is None:
            if len(self._block_times) >= _BLOCK_TIME_CACHE:
                self._block_times.clear()
            cached = int(self.w3.eth.get_block(HexStr(block_hash))["timestamp"])
            self._block_times[block_hash] = cached
        return cached


async def _set_when(event: asyncio.Event, other: asyncio.Event) -> None:
    await event.wait()
    other.set()


_HEADS_RETRY_MAX = 60.0


async def follow_heads(
    url: str,
    wake: asyncio.Event | None,
    *,
    on_head: Callable[[Mapping[str, Any] | None], None] | None = None,
) -> None:
    """Set ``wake`` (if given) and call ``on_head`` whenever the node announces a block (``eth_subscribe
    newHeads`` over WebSocket): the watcher reads a block's events as soon as it is mined instead of at
    the next idle poll. Only a
    wake-up: the block itself is read by the watcher as before (a missed or duplicate notification
    changes nothing but latency). ``on_head`` gets each announced header, and None when the subscription
    is lost. A node without WebSockets or the subscription is retried with a doubling delay, and the loop
    polls meanwhile."""
    from websockets.asyncio.client import connect

    delay = 1.0
    said = False
    while True:
        try:
            async with connect(url, open_timeout=5, max_size=1 << 20, ping_interval=20) as socket_:
                request = {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
                await socket_.send(json.dumps(request))
                reply = json.loads(await asyncio.wait_for(socket_.recv(), timeout=5))
                if not isinstance(reply, dict) or not isinstance(reply.get("result"), str):
                    raise ValueError(f"eth_subscribe newHeads refused: {str(reply)[:200]}")
                log.info("following new blocks at %s", url)
                said, delay = False, 1.0
                async for message in socket_:
                    if on_head is not None:
                        note = json.loads(message)
                        params = note.get("params") if isinstance(note, dict) else None
                        head = params.get("result") if isinstance(params, dict) else None
                        if isinstance(head, dict):
                            on_head(head)
                    if wake is not None:
                        wake.set()
        except asyncio.CancelledError:
            if on_head is not None:
                on_head(None)
            raise
        except Exception as exc:  # the node has no WebSocket endpoint, or it went away: poll meanwhile
            if on_head is not None:
                on_head(None)
            if not said:
                log.info("no newHeads subscription at %s (%s); polling", url, exc)
                said = True
        await asyncio.sleep(delay)
        delay = min(_HEADS_RETRY_MAX, delay * 2)
