"""Work claims that hold with several workers: a lease is a conditional UPDATE committed before the
external call, so on one SQLite database (the same statements PostgreSQL runs) two workers never both
call a provider for one order, and a lease whose holder died is taken over once it lapses."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from adapters._exceptions import ProviderUnreachable
from cardless.ledger import Order, OrderState
from cardless.ledger.store import claim, release, renew
from oracles.worker import WorkerConfig, default_worker_id
from tests.oracles._ledger import FakeAdapter, add_order, get, lease, unknown, worker
from tests.support.postgres import BACKENDS

# Every test on SQLite and on PostgreSQL (the database several workers share in production).
LEDGER_BACKENDS = BACKENDS

S = OrderState
NOW = datetime(2030, 1, 1, tzinfo=UTC)
TTL = timedelta(seconds=10)


# ---------------------------------------------------------------------- the store's claims


def test_a_claim_is_exclusive_until_it_lapses(ledger: sessionmaker[Session]) -> None:
    order_id = add_order(ledger)
    with ledger.begin() as session:
        assert claim(session, order_id, "a", states=[S.RISK_CHECKED], ttl=TTL, now=NOW)
    with ledger.begin() as session:
        assert not claim(session, order_id, "b", states=[S.RISK_CHECKED], ttl=TTL, now=NOW + TTL / 2)
        assert not claim(session, order_id, "a", states=[S.RISK_CHECKED], ttl=TTL, now=NOW + TTL / 2)
    with ledger.begin() as session:
        assert claim(session, order_id, "b", states=[S.RISK_CHECKED], ttl=TTL, now=NOW + TTL * 2)
    assert get(ledger, order_id).lease_owner == "b"


def test_a_claim_needs_the_expected_state(ledger: sessionmaker[Session]) -> None:
    order_id = add_order(ledger, state=S.UNKNOWN)
    with ledger.begin() as session:
        assert not claim(session, order_id, "a", states=[S.RISK_CHECKED], ttl=TTL, now=NOW)
        assert claim(session, order_id, "a", states=[S.SUBMITTING, S.UNKNOWN], ttl=TTL, now=NOW)


def test_only_the_holder_renews_or_releases(ledger: sessionmaker[Session]) -> None:
    order_id = add_order(ledger)
    with ledger.begin() as session:
        assert claim(session, order_id, "a", states=[S.RISK_CHECKED], ttl=TTL, now=NOW)
    with ledger.begin() as session:
        assert renew(session, [order_id], "b", ttl=TTL, now=NOW + TTL) == 0
        release(session, [order_id], "b")
    assert get(ledger, order_id).lease_owner == "a"
    with ledger.begin() as session:
        assert renew(session, [order_id], "a", ttl=TTL, now=NOW + TTL) == 1
    with ledger.begin() as session:  # renewed: still held where the first lease would have lapsed
        assert not claim(session, order_id, "b", states=[S.RISK_CHECKED], ttl=TTL, now=NOW + TTL * 1.5)
        release(session, [order_id], "a")
    row = get(ledger, order_id)
    assert row.lease_owner is None and row.lease_until is None


def test_default_worker_ids_are_unique_and_fit_the_column() -> None:
    ids = {default_worker_id() for _ in range(50)}
    assert len(ids) == 50 and all(0 < len(i) <= 64 for i in ids)
    with pytest.raises(ValueError, match="worker_id"):
        WorkerConfig(worker_id="x" * 65)


# ---------------------------------------------------------------------- two workers, one database


def test_two_workers_never_both_submit_an_order(ledger: sessionmaker[Session]) -> None:
    """Two workers, each in its own thread with its own event loop and connections, race over the same
    orders until all are done; the provider sees exactly one submit per order."""
    orders = [add_order(ledger, providers=["alpha"]) for _ in range(24)]
    provider = FakeAdapter("alpha", delay=0.01)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    started: Counter[str] = Counter()

    def run(worker_id: str) -> None:
        async def main() -> None:
            w = worker(ledger, provider, worker_id, submit_concurrency=3)
            barrier.wait()
            for _ in range(400):
                started[worker_id] += w.start_provider_calls(S.RISK_CHECKED)
                await asyncio.sleep(0.002)
                if all(get(ledger, o).state == S.SUCCEEDED.value for o in orders):
                    break
            await w.drain()

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("worker-a", "worker-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(get(ledger, o).state == S.SUCCEEDED.value for o in orders)
    assert provider.submits == Counter(dict.fromkeys(orders, 1))
    assert sum(started.values()) == len(orders)
    assert started["worker-a"] and started["worker-b"], started  # both did real work
    assert all(get(ledger, o).lease_owner is None for o in orders)  # released on completion


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_claimed_order_is_left_alone_until_its_lease_lapses_then_queried(
    ledger: sessionmaker[Session], anyio_backend: str
) -> None:
    """Worker A died after committing ``submitting`` under its lease. B does not touch the order while
    the lease holds; once it lapses, B takes it over and asks the provider by our key (an unknown
    outcome), never submitting it blindly."""
    order_id = add_order(ledger, state=S.SUBMITTING, providers=["alpha"])
    lease(ledger, order_id, "worker-a", ttl=timedelta(minutes=5))
    provider = FakeAdapter("alpha", on_query=lambda key: unknown(key, "alpha"))
    b = worker(ledger, provider, "worker-b")
    assert await b.requery_due() == 0
    assert b.start_provider_calls(S.RISK_CHECKED) == 0

    with ledger.begin() as session:  # five minutes pass
        session.execute(
            update(Order)
            .where(Order.id == order_id)
            .values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert await b.requery_due() == 1
    await b.drain()
    assert provider.queries[order_id] == 1 and not provider.submits
    row = get(ledger, order_id)
    assert row.state == S.UNKNOWN.value and row.lease_owner is None


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_worker_claims_no_more_than_its_free_provider_slots(
    ledger: sessionmaker[Session], anyio_backend: str
) -> None:
    """A worker leases only what it can call now, so the rest stays free for other workers."""
    orders = [add_order(ledger, providers=["alpha"]) for _ in range(5)]
    gate = asyncio.Event()
    provider = FakeAdapter("alpha")
    original = provider.submit

    async def held(request: Any) -> Any:
        await gate.wait()
        return await original(request)

    provider.submit = held  # type: ignore[method-assign]
    a = worker(ledger, provider, "worker-a", submit_concurrency=2)
    assert a.start_provider_calls(S.RISK_CHECKED) == 2
    assert a.start_provider_calls(S.RISK_CHECKED) == 0  # both slots busy
    owners = Counter(get(ledger, o).lease_owner for o in orders)
    assert owners == Counter({"worker-a": 2, None: 3})
    gate.set()
    await a.drain()


def test_a_restart_on_the_same_host_frees_the_leases_of_its_dead_life_at_once(
    ledger: sessionmaker[Session],
) -> None:
    """Leases of a dead process on this host (its pid gone, or this pid under an earlier id) are freed at
    start-up; a live process's, and any other host's, wait for their expiry."""
    import os
    import socket
    import subprocess
    import sys

    from oracles.worker import dead_local_workers

    host = socket.gethostname()[:40]
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    dead_pid = int(gone.stdout)
    me = f"{host}-{os.getpid()}-aaaaaaaa"
    earlier_life = f"{host}-{os.getpid()}-bbbbbbbb"
    dead = f"{host}-{dead_pid}-cccccccc"
    alive = f"{host}-{os.getppid()}-dddddddd"
    elsewhere = f"other-host-{dead_pid}-eeeeeeee"
    custom = "worker-a"
    superscript = f"{host}-\u00b2-ffffffff"  # '²' passes str.isdigit(), not int(): ignored, no crash
    owners = [me, earlier_life, dead, alive, elsewhere, custom, superscript]
    assert dead_local_workers(owners, me=me) == [earlier_life, dead]

    orders = {owner: add_order(ledger) for owner in owners}
    for owner, order_id in orders.items():
        lease(ledger, order_id, owner)
    w = worker(ledger, FakeAdapter("alpha"), me)
    assert w.release_leases_of_dead_local_workers() == 2
    assert {o: get(ledger, i).lease_owner for o, i in orders.items()} == {
        **{o: o for o in owners},
        earlier_life: None,
        dead: None,
    }


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_batch_of_calls_commits_every_intent_first_and_records_the_answers_together(
    ledger: sessionmaker[Session], anyio_backend: str
) -> None:
    """Batching by stage keeps exactly-once: when the provider sees a submit, the order is already
    ``submitting`` under our lease in the database (another connection reads it); the answers are recorded
    and the leases released at the next claim stage, all orders in one transaction; a failing call
    becomes an unknown outcome, queried later, never resubmitted."""
    orders = [add_order(ledger, providers=["alpha"]) for _ in range(6)]
    seen: dict[str, tuple[str, str | None]] = {}
    provider = FakeAdapter("alpha")
    original = provider.submit

    async def checked(request: Any) -> Any:
        row = get(ledger, request.order_key)  # a session of its own: only what was committed
        seen[request.order_key] = (row.state, row.lease_owner)
        result = await original(request)
        if request.order_key == orders[0]:  # it did the top-up, but its answer never came back
            raise ProviderUnreachable("read timeout", provider="alpha")
        return result

    provider.submit = checked  # type: ignore[method-assign]
    w = worker(ledger, provider, "worker-a", submit_concurrency=8)
    assert w.start_provider_calls(S.RISK_CHECKED) == 6
    while w._tasks:
        await asyncio.sleep(0.01)
    assert seen == dict.fromkeys(orders, (S.SUBMITTING.value, "worker-a"))
    assert {get(ledger, o).state for o in orders} == {S.SUBMITTING.value}  # answered, not yet recorded
    assert w.start_provider_calls(S.RISK_CHECKED) == 0  # records them first; nothing left to claim
    rows = [get(ledger, o) for o in orders]
    assert [r.state for r in rows] == [S.UNKNOWN.value] + [S.SUCCEEDED.value] * 5
    assert all(r.lease_owner is None for r in rows) and not w._in_flight
    assert provider.submits == Counter(dict.fromkeys(orders, 1))
