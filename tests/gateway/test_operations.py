"""Operations endpoints against the session's embedded system (dev chain, simulator, oracle, SQLite):
``/healthz``, ``/readyz`` (ready; and 503 naming the chain when the chain is unreachable) and
``/metrics`` (orders by state, webhook backlog, oracle lag, providers, quote rate-limit hits)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import httpx
from web3 import HTTPProvider, Web3

from cardless.cli.system import System
from gateway.api.deps import GatewayContext
from gateway.app import create_app
from gateway.services import QuoteLimits
from tests.support.shop import Shop, dev_wallet


def _get(context: GatewayContext, *paths: str, quotes: int = 0) -> list[httpx.Response]:
    app = create_app(context)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("10.9.9.9", 40_000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            body: dict[str, Any] = {"sku": "no-such-sku", "account": "12345678", "token": "tUSDC"}
            for _ in range(quotes):
                await http.post("/v1/quotes", json={**body, "buyer": dev_wallet(12).address})
            return [await http.get(path) for path in paths]

    return asyncio.run(run())


def _sample(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert found, f"{name}{labels} not in the metrics"
    return float(found.group(1))


def test_liveness_readiness_and_metrics_of_a_running_system(shop: Shop, system: System) -> None:
    assert shop.quote(dev_wallet(3), sku="genshin-60", token="tUSDC").status_code == 201
    assert shop.api.get("/healthz").json() == {"status": "ok"}
    ready = shop.api.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert set(ready.json()["checks"]) == {"database", "chain", "providers", "oracle"}

    metrics = shop.api.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert _sample(text, "cardless_orders", '{state="settled"}') >= 0
    total = sum(float(v) for v in re.findall(r'^cardless_orders\{state="[a-z_]+"\} (\S+)$', text, re.M))
    assert total == shop.counts()[0]  # every order row, in exactly one state
    assert _sample(text, "cardless_webhook_backlog", '{status="pending"}') >= 0
    assert _sample(text, "cardless_oracle_lag_blocks") >= 0
    assert _sample(text, "cardless_provider_circuit_open", '{provider="simulator"}') in (0, 1)
    # Provider latency, measured on the adapters' HTTP clients: the quote above validated with one.
    calls = re.findall(
        r'^cardless_provider_request_seconds_count\{outcome="2xx",provider="(\S+)"\} (\S+)$', text, re.M
    )
    assert calls and sum(float(n) for _, n in calls) >= 1, text[-3000:]


def test_quote_rate_limit_hits_are_counted(system: System) -> None:
    assert system.gateway_context is not None
    limited = dataclasses.replace(
        system.gateway_context, quote_limits=QuoteLimits(per_client="1/minute", per_buyer="100/minute")
    )
    (metrics,) = _get(limited, "/metrics", quotes=3)
    assert _sample(metrics.text, "cardless_quote_rate_limit_hits_total", '{policy="client"}') == 2


def test_readiness_names_an_unreachable_chain_and_answers_503(system: System) -> None:
    assert system.gateway_context is not None
    dead = Web3(HTTPProvider("http://127.0.0.1:9", request_kwargs={"timeout": 2}))
    (ready,) = _get(dataclasses.replace(system.gateway_context, w3=dead), "/readyz")
    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"
    assert (
        ready.json()["detail"]
        == "not ready: chain does not answer; oracle cannot tell without the chain and the database"
    )
