"""Quotes are rate limited per client address and per buyer wallet (429 problem+json with Retry-After
and RateLimit headers). The running system's limits are generous, so the refusals are tested on a second
app over the same context with tiny limits, in process: an unknown SKU is refused (404) after the limit
is counted and before any provider call, which keeps these fast."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import httpx
import pytest

from cardless.cli.system import System
from gateway.app import create_app
from gateway.services import QuoteLimits, RateLimited
from tests.support.shop import Shop, assert_problem, dev_wallet


def _post(system: System, limits: QuoteLimits, requests: list[tuple[str, str]]) -> list[httpx.Response]:
    """POST /v1/quotes once per ``(client address, buyer)`` to an app whose quotes use ``limits``."""
    assert system.gateway_context is not None
    app = create_app(dataclasses.replace(system.gateway_context, quote_limits=limits))

    async def run() -> list[httpx.Response]:
        answers = []
        for client, buyer in requests:
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
