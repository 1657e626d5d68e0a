"""Quotes are rate limited per client address and per buyer wallet (429 problem+json with Retry-After
and RateLimit headers). The running system's limits are generous, so the refusals are tested on a second
app over the same context with tiny limits, in process: an unknown SKU is refused (404) after the limit
is counted and before any provider call, which keeps these fast.

The counters are shared through the database: two apps (two gateway processes) on one database allow a
limit once between them, and threads racing through two engines on SQLite and PostgreSQL never get one
more quote than the limit."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import make_url, text

from cardless.cli.system import System
from cardless.ledger import create_engine_for, migrate, session_factory
from gateway.app import create_app
from gateway.services import QuoteLimits, RateLimited
from tests.support.postgres import sqlite_url
from tests.support.shop import Shop, assert_problem, dev_wallet


def _post(system: System, limits: QuoteLimits, requests: list[tuple[str, str]]) -> list[httpx.Response]:
    """POST /v1/quotes once per ``(client address, buyer)`` to an app whose quotes use ``limits``."""
    assert system.gateway_context is not None
    app = create_app(dataclasses.replace(system.gateway_context, quote_limits=limits))
    return _post_to([app], requests)


def _post_to(apps: Sequence[FastAPI], requests: list[tuple[str, str]]) -> list[httpx.Response]:
    """POST /v1/quotes once per ``(client address, buyer)``, to ``apps`` in turn."""

    async def run() -> list[httpx.Response]:
        answers = []
        for i, (client, buyer) in enumerate(requests):
            app = apps[i % len(apps)]
            transport = httpx.ASGITransport(app=app, client=(client, 40_000))
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
                body: dict[str, Any] = {"sku": "no-such-sku", "account": "12345678", "token": "tUSDC"}
                answers.append(await http.post("/v1/quotes", json={**body, "buyer": buyer}))
        return answers

    return asyncio.run(run())


def test_a_quote_answers_with_the_rate_limit_headers(shop: Shop) -> None:
    response = shop.quote(dev_wallet(11), sku="genshin-60", token="tUSDC")
    assert response.status_code == 201, response.text
    # the session system's limits (tests/support/shop.py gateway_settings)
    assert response.headers["RateLimit-Policy"] == '"client";q=100000;w=60, "buyer";q=100000;w=60'
    assert response.headers["RateLimit"].startswith('"client";r=')
    assert int(response.headers["RateLimit-Remaining"]) < int(response.headers["RateLimit-Limit"])


def test_one_client_address_is_refused_past_its_limit(system: System) -> None:
    limits = QuoteLimits(per_client="2/minute", per_buyer="100/minute")
    buyers = [dev_wallet(i).address for i in (12, 13, 14, 15)]
    first, second, third, elsewhere = _post(
        system,
        limits,
        [("10.0.0.1", buyers[0]), ("10.0.0.1", buyers[1]), ("10.0.0.1", buyers[2]), ("10.0.0.2", buyers[3])],
    )
    assert_problem(first, 404, "sku")
    assert first.headers["RateLimit-Remaining"] == "1"
    assert_problem(second, 404, "sku")
    body = assert_problem(third, 429)
    assert "per client" in body["detail"]
    assert 1 <= int(third.headers["Retry-After"]) <= 60
    assert third.headers["RateLimit-Remaining"] == "0"
    assert third.headers["RateLimit-Limit"] == "2"
    assert '"client";r=0;t=' in third.headers["RateLimit"]
    assert third.headers["RateLimit-Policy"] == '"client";q=2;w=60, "buyer";q=100;w=60'
    assert_problem(elsewhere, 404, "sku")  # another address has its own allowance


def test_one_buyer_wallet_is_refused_past_its_limit_from_any_address(system: System) -> None:
    limits = QuoteLimits(per_client="100/minute", per_buyer="2/minute")
    buyer = dev_wallet(12).address
    answers = _post(
        system,
        limits,
        [
            ("10.0.0.1", buyer),
            ("10.0.0.2", buyer.lower()),
            ("10.0.0.3", buyer),
            ("10.0.0.3", dev_wallet(13).address),
        ],
    )
    assert [a.status_code for a in answers] == [404, 404, 429, 404]
    assert "per buyer" in answers[2].json()["detail"]
    # The refused request counted nothing: 10.0.0.3 has used one of its 100, not two.
    assert answers[3].headers["RateLimit"].startswith('"client";r=99;')


def test_a_refusal_counts_against_neither_limit() -> None:
    limits = QuoteLimits(per_client="1/minute", per_buyer="5/minute")
    limits.hit(client="a", buyer="0xB")
    with pytest.raises(RateLimited) as refused:
        limits.hit(client="a", buyer="0xb")
    assert [(a.policy, a.remaining) for a in refused.value.allowances] == [("client", 0), ("buyer", 4)]


def test_two_gateways_on_one_database_allow_the_limit_once_between_them(system: System) -> None:
    """Two apps, each with its own engine (its own connections, as a second process has) on the
    system's database: a client's third quote is refused by whichever gateway it reaches."""
    assert system.gateway_context is not None
    engines = [create_engine_for(system.settings.effective_database_url) for _ in range(2)]
    try:
        apps = [
            create_app(
                dataclasses.replace(
                    system.gateway_context,
                    quote_limits=QuoteLimits(
                        per_client="2/minute", per_buyer="100/minute", sessions=session_factory(engine)
                    ),
                )
            )
            for engine in engines
        ]
        buyers = [dev_wallet(i).address for i in (12, 13, 14, 15)]
        requests = [("10.0.1.1", b) for b in buyers[:3]] + [("10.0.1.2", buyers[3])]
        first, second, third, elsewhere = _post_to(apps, requests)
    finally:
        for engine in engines:
            engine.dispose()
    assert_problem(first, 404, "sku")  # gateway 1
    assert first.headers["RateLimit-Remaining"] == "1"
    assert_problem(second, 404, "sku")  # gateway 2 saw gateway 1's count
    assert second.headers["RateLimit-Remaining"] == "0"
    body = assert_problem(third, 429)  # gateway 1 saw gateway 2's
    assert "per client" in body["detail"]
    assert_problem(elsewhere, 404, "sku")


@pytest.mark.slow
def test_racing_threads_on_two_engines_get_exactly_the_limit(backend_url: str) -> None:
    """8 threads on two engines (two processes' pools) ask 60 times for a limit of 25 per client in one
    window, half of them through ``count`` (the event loop's path): exactly 25 are counted; and the
    refusals left every buyer's allowance untouched."""
    engines = [create_engine_for(backend_url) for _ in range(2)]
    now = 1_800_000_000.0  # one fixed moment: the window cannot turn during the test
    limits = [
        QuoteLimits(
            per_client="25/minute", per_buyer="1000/minute", sessions=session_factory(e), clock=lambda: now
        )
        for e in engines
    ]
    granted: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def ask(worker: int) -> None:
        for i in range(60 // 8 + (1 if worker < 60 % 8 else 0)):
            buyer = f"0x{worker:02x}{i:038x}"
            try:
                if worker < 4:
                    limits[worker % 2].hit(client="10.9.9.9", buyer=buyer)
                else:  # the event loop's way in: on SQLite on the calling thread whenever it can
                    asyncio.run(limits[worker % 2].count(client="10.9.9.9", buyer=buyer))
            except RateLimited:
                with lock:
                    refused.append(buyer)
            else:
                with lock:
                    granted.append(buyer)

    try:
        threads = [threading.Thread(target=ask, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert (len(granted), len(refused)) == (25, 35)
        # A refused request counted nothing against its buyer; a granted one counted one.
        allowances = limits[0].hit(client="10.9.9.10", buyer=refused[0])
        assert [(a.policy, a.remaining) for a in allowances] == [("client", 24), ("buyer", 999)]
        allowances = limits[1].hit(client="10.9.9.10", buyer=granted[0])
        assert [(a.policy, a.remaining) for a in allowances] == [("client", 23), ("buyer", 998)]
    finally:
        for engine in engines:
            engine.dispose()


def test_the_loops_count_waits_for_no_writer_and_writes_what_the_threads_count_writes(
    tmp_path: Path,
) -> None:
    """On SQLite ``count`` counts on the calling thread only when the write lock is free at once. While
    another connection (another process) holds it, it counts on a worker thread, which waits its turn;
    either way once, in the same row, with the window's end written as the Core statement writes it."""
    url = sqlite_url(tmp_path)
    engine = create_engine_for(url)
    migrate(engine)
    now = 1_800_000_000.0
    limits = QuoteLimits(
        per_client="10/minute", per_buyer="10/minute", sessions=session_factory(engine), clock=lambda: now
    )
    try:
        first = asyncio.run(limits.count(client="10.7.7.7", buyer="0xA"))  # on this thread
        assert limits._windows._inline is not None  # type: ignore[attr-defined]
        assert [(a.policy, a.remaining) for a in first] == [("client", 9), ("buyer", 9)]
        second = limits.hit(client="10.7.7.7", buyer="0xB")  # the worker-thread path, the same row
        assert [(a.policy, a.remaining) for a in second] == [("client", 8), ("buyer", 9)]
        other = sqlite3.connect(str(make_url(url).database), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process is writing
        outcome: list[Any] = []
        waiting = threading.Thread(
            target=lambda: outcome.append(asyncio.run(limits.count(client="10.7.7.7", buyer="0xa")))
        )
        waiting.start()
        time.sleep(0.3)
        assert waiting.is_alive() and not outcome  # waiting for the lock, off the loop
        other.execute("COMMIT")
        waiting.join(30)
        other.close()
        assert [(a.policy, a.remaining) for a in outcome[0]] == [("client", 7), ("buyer", 8)]
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT key, hits, expires_at FROM rate_limit_windows ORDER BY key")
            )
            stored = [tuple(r) for r in rows]
        # One text format for the window's end whichever path wrote the row (0xa: loop first, then thread).
        assert [(k.split("@")[0], n) for k, n, _ in stored] == [
            ("buyer:0xa", 2),
            ("buyer:0xb", 1),
            ("client:10.7.7.7", 3),
        ]
        assert len({at for _, _, at in stored}) == 1
    finally:
        engine.dispose()


def test_the_loops_count_retries_on_the_loop_while_another_writer_briefly_holds_the_lock(
    tmp_path: Path,
) -> None:
    """A count declined only because another writer holds the lock is tried again on the loop after 1, 2
    and 4 ms before it goes to a worker thread: a writer that lets go within them costs no thread hop."""
    url = sqlite_url(tmp_path)
    engine = create_engine_for(url)
    migrate(engine)
    limits = QuoteLimits(per_client="10/minute", per_buyer="10/minute", sessions=session_factory(engine))
    windows: Any = limits._windows

    def no_thread(*_: Any) -> Any:
        raise AssertionError("counted on a worker thread")

    other = sqlite3.connect(str(make_url(url).database), isolation_level=None)

    async def scenario() -> list[Any]:
        windows.take = no_thread
        other.execute("BEGIN IMMEDIATE")  # another process is writing, for 2 ms
        asyncio.get_running_loop().call_later(0.002, other.execute, "COMMIT")
        return await limits.count(client="10.8.8.8", buyer="0xC")

    try:
        allowances = asyncio.run(scenario())
        assert [(a.policy, a.remaining) for a in allowances] == [("client", 9), ("buyer", 9)]
    finally:
        other.close()
        engine.dispose()
