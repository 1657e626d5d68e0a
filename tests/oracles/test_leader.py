"""The watcher's leadership (``oracles.leader``): on PostgreSQL exactly one worker holds it, a follower
takes it over once the leader's connection is gone (a clean stop or a killed process), and followers
still run the watcher now and then; on SQLite every worker leads.

Workers wake each other with ``LISTEN``/``NOTIFY`` (``WorkSignal``): a notification arrives when its
transaction commits, never when it rolls back. A follower runs only what the leader left waiting: it
claims orders due a provider call once they waited ``steal_after`` (all of them once a claimer said its
slots were full), and its sweep runs a stage only for the states where an order waited. The provider
calls are the exception: while a follower listens, the leader counts it and leaves them to it (the
follower claims the orders the risk check passed at once, woken by ``fresh``); with none listening, the
leader claims them at once itself; a follower killed after claiming leaves its orders to the leader,
which queries them by key once their leases lapse (never a second top-up)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import Engine, text, update
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import ChainCursor, Order, OrderState, create_engine_for, migrate, session_factory
from oracles.leader import CLAIMS, FRESH, PROOFS, WatchLeadership, WorkSignal
from oracles.proofs import Proofs
from oracles.worker import OracleWorker
from tests.oracles._ledger import T0, FakeAdapter, add_order, get, succeeded, worker
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
        w.signal = WorkSignal(_engine(sessions), census=2.0, clock=clock)
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


def _intake(w: OracleWorker) -> None:
    """A worker whose tick's intake runs without a chain: the watcher reads nothing, the chain's clock is
    ``T0`` (these tests are about who claims, not about the chain)."""
    w._head_time = T0
    w._poll_chain = lambda: 0  # type: ignore[method-assign]


async def _listen(w: OracleWorker, heard: list[str]) -> asyncio.Task[None]:
    """``w`` listens as a running worker does (its notes go to ``_on_note``), and ``heard`` gets them."""

    def on_note(kind: str) -> None:
        heard.append(kind)
        w._on_note(kind)

    task = asyncio.create_task(w.signal.follow(on_note))
    await _until(lambda: w.signal.listening and heard)
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_with_a_follower_listening_the_follower_claims_the_orders_the_risk_check_passed(
    pg_sessions: list[sessionmaker[Session]], pair: list[OracleWorker], anyio_backend: str
) -> None:
    clock = Clock()
    pair += _workers(pg_sessions, clock, steal_after=timedelta(seconds=1))
    leader, follower = pair
    ledger = pg_sessions[0]
    for w in pair:
        _intake(w)
    heard: list[str] = []
    listening = await _listen(follower, heard)
    try:
        assert leader.signal.others_listening() == 1
        paid = [add_order(ledger, state=S.PAID, providers=["alpha"]) for _ in range(3)]
        work, chain_now, plan = await asyncio.to_thread(leader._ingest)  # the leader's tick: risk check
        assert work == 3 and {get(ledger, o).state for o in paid} == {S.RISK_CHECKED.value}
        assert not plan.fresh_claims and not plan.sign  # the provider calls are the follower's
        assert leader._claim_due(plan, chain_now) == 0  # nothing has waited steal_after
        await _until(lambda: FRESH in heard)  # the risk check's commit woke the follower
        assert follower._wake is None or follower._wake.is_set()
        plan = follower._plan()
        assert plan.fresh_claims
        assert follower._claim_due(plan, chain_now) == 3
        assert {get(ledger, o).lease_owner for o in paid} == {"worker-1"}
        await follower.drain()
        assert {get(ledger, o).state for o in paid} == {S.SUCCEEDED.value}

        # The leader's safety net: what the followers left waiting steal_after, it claims.
        waited = add_order(ledger, providers=["alpha"])
        _age(ledger, waited, 5)
        clock.now += 0.5
        plan = leader._plan()
        assert plan.claims and not plan.fresh_claims
        assert leader._claim_due(plan, T0) == 1
        assert get(ledger, waited).lease_owner == "worker-0"
        await leader.drain()
    finally:
        await _stop(listening)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_with_no_follower_listening_the_leader_claims_at_once(
    pg_sessions: list[sessionmaker[Session]], pair: list[OracleWorker], anyio_backend: str
) -> None:
    clock = Clock()
    pair += _workers(pg_sessions, clock, steal_after=timedelta(seconds=1))
    leader, follower = pair
    ledger = pg_sessions[0]
    fresh = [add_order(ledger, providers=["alpha"]) for _ in range(2)]
    assert not follower._plan().fresh_claims  # not listening: not counted, claims only what waited
    assert leader.signal.others_listening() == 0
    plan = leader._plan()
    assert plan.fresh_claims and plan.sign
    assert leader._claim_due(plan, T0) == 2
    assert {get(ledger, o).lease_owner for o in fresh} == {"worker-0"}
    await leader.drain()

    # Once the follower listens, the leader's next count (every census seconds) leaves it the claims;
    # once it is gone (its connection closed), the next count takes them back.
    listening = await _listen(follower, [])
    try:
        assert leader._plan().fresh_claims  # counted 0 a moment ago
        clock.now += 2.0
        assert not leader._plan().fresh_claims
    finally:
        await _stop(listening)
    clock.now += 2.0
    assert leader._plan().fresh_claims


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_follower_killed_after_claiming_leaves_its_orders_to_the_leader_which_queries_them_once(
    pg_sessions: list[sessionmaker[Session]], pair: list[OracleWorker], anyio_backend: str
) -> None:
    """The follower claimed two orders and its calls reached the provider (which topped them up), then
    its process died: no answer recorded, its listening connection closed by the server. The leader
    counts no follower any more and claims at once again; the two orders wait for their leases to lapse,
    then the leader asks the provider by our key (never a second submit), records the top-ups and signs
    their proofs: each is settled once."""
    clock = Clock()
    requests: dict[str, Any] = {}
    provider = FakeAdapter("alpha", on_query=lambda key: succeeded(requests[key], "alpha"), delay=60)
    pair += _workers(pg_sessions, clock, steal_after=timedelta(seconds=1))
    leader, follower = pair
    for w in pair:
        w.adapters["alpha"] = provider
        w.outcomes.adapters["alpha"] = provider
    ledger = pg_sessions[0]
    orders = [add_order(ledger, providers=["alpha"]) for _ in range(2)]
    listening = await _listen(follower, [])
    try:
        assert not leader._plan().fresh_claims
        plan = follower._plan()
        assert follower._claim_due(plan, T0) == 2
        await _until(lambda: sum(provider.submits.values()) == 2)  # both top-ups are done, unanswered
        requests.update({r.order_key: r for r in provider.requests})
    finally:
        for task in list(follower._tasks):  # SIGKILL: nothing after this runs in the follower
            task.cancel()
        await _stop(listening)
    assert {get(ledger, o).state for o in orders} == {S.SUBMITTING.value}
    assert {get(ledger, o).lease_owner for o in orders} == {"worker-1"}

    clock.now += 2.0
    plan = leader._plan()
    assert plan.fresh_claims  # no follower listens: the leader calls providers itself again
    assert leader._claim_due(plan, T0) == 0 and await leader.requery_due() == 0  # the leases hold
    with ledger.begin() as session:  # the follower's leases lapse
        session.execute(
            update(Order)
            .where(Order.id.in_(orders))
            .values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert await leader.requery_due() == 2
    await leader.drain()
    leader.proofs = Proofs(ledger, Account.create(), leader.proofs.domain)  # the worker's proof key
    leader._settle(T0, dataclasses.replace(plan, post=False, confirm=False))
    for order_id in orders:
        row = get(ledger, order_id)
        assert row.state == S.PROOF_PENDING.value and row.lease_owner is None
        assert [e.to_state for e in row.events].count(S.SUCCEEDED.value) == 1
        assert provider.submits[order_id] == 1 and provider.queries[order_id] == 1
