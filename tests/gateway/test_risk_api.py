"""The risk and analytics routes through a real HTTP server (tests/gateway/merchant_app.py): the review
queue's list, approve and refund for a merchant key with `risk:review` and for the operator, the
merchant's rules and block list, and the analytics figures a merchant key with `orders:read` reads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from eth_utils import to_checksum_address
from sqlalchemy.orm import Session, sessionmaker

from cardless.cli.system import System
from cardless.ledger import Order, OrderState
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.models import utcnow
from cardless.ledger.risk import RiskEngine, RiskRules, VelocityLimit
from cardless.ledger.synthetic import SyntheticConfig, generate, load
from oracles.risk import RiskPolicy, risk_check_paid
from tests.gateway.merchant_app import MerchantApp, merchant_app
from tests.support import orders as support_orders

S = OrderState
_counter = iter(range(7_000, 9_000))


@pytest.fixture(scope="module")
def gw(system: System, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MerchantApp]:
    with merchant_app(system, tmp_path_factory.mktemp("risk")) as app:
        yield app


@pytest.fixture(scope="module")
def admin(gw: MerchantApp) -> Iterator[httpx.Client]:
    with gw.client(**gw.operator) as client:
        yield client


def merchant(admin: httpx.Client, *scopes: str) -> tuple[dict[str, Any], str]:
    n = next(_counter)
    body = {"id": f"risk-{n}", "name": f"Risk {n}", "address": "0x" + f"{n:040x}", "fee_bps": 100}
    created = admin.post("/v1/merchants", json=body)
    assert created.status_code == 201, created.text
    key = admin.post(f"/v1/merchants/risk-{n}/keys", json={"name": "ops", "scopes": list(scopes)})
    assert key.status_code == 201, key.text
    return created.json(), key.json()["key"]


def held_orders(sessions: sessionmaker[Session], merchant_address: str, n: int) -> list[str]:
    """``n + 1`` paid orders of one buyer, decided by a one-order-an-hour rule: all but the first held."""
    with sessions.begin() as session:
        ids = [
            support_orders.add_order(
                session, state=S.PAID, merchant=merchant_address, buyer="0x" + "ab" * 20,
                paid_at=utcnow() - timedelta(minutes=5 - i), fulfilment_deadline=2**40,
            ).id
            for i in range(n + 1)
        ]  # fmt: skip
    rules = RiskRules(wallet_velocity=(VelocityLimit(max_orders=1, seconds=3_600),), burst_min_orders=1000)
    risk_check_paid(sessions, RiskPolicy(engine=RiskEngine(defaults=rules)))
    return ids[1:]


def test_the_review_queue_needs_the_risk_scope(gw: MerchantApp, admin: httpx.Client) -> None:
    _, key = merchant(admin, "orders:read")
    with gw.client(key) as client:
        assert client.get("/v1/merchant/reviews").status_code == 403
    with gw.client() as anonymous:
        assert anonymous.get("/v1/merchant/reviews").status_code == 401
        assert anonymous.get("/v1/risk/reviews").status_code == 401
    with gw.client(key) as client:
        assert client.get("/v1/risk/reviews").status_code == 403


def test_a_merchant_lists_approves_and_refunds_its_held_orders(gw: MerchantApp, admin: httpx.Client) -> None:
    account, key = merchant(admin, "risk:review")
    _, other_key = merchant(admin, "risk:review")
    first, second, third = held_orders(gw.sessions, account["address"], 3)
    with gw.client(key) as client, gw.client(other_key) as other:
        page = client.get("/v1/merchant/reviews", params={"limit": 2}).json()
        assert [o["order_id"] for o in page["data"]] == [first, second] and page["has_more"]
        assert page["data"][0]["reasons"][0]["rule"] == "wallet_velocity" and page["data"][0]["score"] == 0
        rest = client.get("/v1/merchant/reviews", params={"held_after": page["data"][1]["held_at"]}).json()
        assert [o["order_id"] for o in rest["data"]] == [third]
        assert other.get("/v1/merchant/reviews").json()["data"] == []
        assert (
            other.post(f"/v1/merchant/reviews/{first}/approve", json={}).status_code == 409
        )  # not its order

        approved = client.post(f"/v1/merchant/reviews/{first}/approve", json={"note": "regular buyer"})
        assert approved.status_code == 200 and approved.json()["state"] == S.RISK_CHECKED.value
        refunded = client.post(f"/v1/merchant/reviews/{second}/refund", json={})
        assert refunded.json() == {"order_id": second, "state": S.FAILED_FINAL.value, "action": "refund"}
        again = client.post(f"/v1/merchant/reviews/{first}/refund", json={})
        assert again.status_code == 409 and "not held" in again.json()["detail"]
        assert client.post(f"/v1/merchant/reviews/{third}/approve", json={"extra": 1}).status_code == 422

    # The operator sees every merchant's queue and acts on any of it.
    assert third in [
        o["order_id"] for o in admin.get("/v1/risk/reviews", params={"limit": 100}).json()["data"]
    ]
    assert (
        admin.post(f"/v1/risk/reviews/{third}/refund", json={"note": "chargeback pattern"}).status_code == 200
    )
    with gw.sessions() as session:
        rows = {i: session.get(Order, i) for i in (first, second, third)}
        assert rows[first].state == S.RISK_CHECKED.value  # type: ignore[union-attr]
        assert rows[third].state == S.FAILED_FINAL.value and rows[third].refund_reason == 6  # type: ignore[union-attr]


def test_a_merchant_edits_its_rules_and_block_list(gw: MerchantApp, admin: httpx.Client) -> None:
    account, key = merchant(admin, "risk:review")
    usdc = "0x" + "cd" * 20
    with gw.client(key) as client:
        assert client.get("/v1/merchant/risk/config").json() == RiskRules().model_dump(mode="json")
        put = client.put("/v1/merchant/risk/config", json={"max_amount": {usdc: 5_000_000}, "hold_score": 40})
        assert put.status_code == 200 and put.json()["max_amount"] == {usdc: 5_000_000}
        assert client.get("/v1/merchant/risk/config").json()["hold_score"] == 40
        assert admin.get(f"/v1/risk/config/{account['id']}").json()["hold_score"] == 40
        bad = client.put("/v1/merchant/risk/config", json={"hold_score": 0})
        assert bad.status_code == 422
        assert client.put("/v1/merchant/risk/config", json={"surprise": 1}).status_code == 422

        wallet = client.post(
            "/v1/merchant/risk/blocklist", json={"kind": "wallet", "value": "0x" + "ef" * 20}
        )
        assert wallet.status_code == 201 and wallet.json()["value"] == to_checksum_address("0x" + "ef" * 20)
        assert (
            client.post(
                "/v1/merchant/risk/blocklist", json={"kind": "wallet", "value": "0x" + "ef" * 20}
            ).status_code
            == 409
        )
        stolen = client.post(
            "/v1/merchant/risk/blocklist", json={"kind": "account", "value": "Stolen-42"}
        ).json()
        cipher: AccountCipher = gw.context.quotes.cipher
        assert stolen["value"] == cipher.account_hash("stolen-42") and "tolen" not in stolen["value"]
        nope = client.post("/v1/merchant/risk/blocklist", json={"kind": "wallet", "value": "nope"})
        assert nope.status_code == 422
        assert [e["kind"] for e in client.get("/v1/merchant/risk/blocklist").json()] == ["wallet", "account"]
        assert client.delete(f"/v1/merchant/risk/blocklist/{wallet.json()['id']}").status_code == 200
        assert (
            admin.delete(f"/v1/risk/blocklist/{stolen['id']}").status_code == 404
        )  # not the operator's list
    operator_entry = admin.post("/v1/risk/blocklist", json={"kind": "wallet", "value": "0x" + "12" * 20})
    assert operator_entry.status_code == 201
    assert operator_entry.json()["id"] in [e["id"] for e in admin.get("/v1/risk/blocklist").json()]


def test_analytics_for_a_merchant_key_and_the_operator(gw: MerchantApp, admin: httpx.Client) -> None:
    account, key = merchant(admin, "orders:read")
    _, no_orders = merchant(admin, "risk:review")
    config = SyntheticConfig(days=14, orders_per_day=20, buyers=120, bursts=2, merchant=account["address"])
    data = generate(config, AccountCipher(b"z" * 32))
    with gw.sessions.begin() as session:
        load(session, data)
    until = (config.start + timedelta(days=config.days)).isoformat()
    params = {"days": 14, "until": until, "tz_offset_minutes": 480}
    with gw.client(key) as client:
        heatmap = client.get("/v1/analytics/heatmap", params=params)
        assert heatmap.status_code == 200, heatmap.text
        assert sum(c["orders"] for c in heatmap.json()["cells"]) == len(data.orders)
        assert heatmap.json()["peak"]["weekday"] in (0, 6)
        for figure in ("sku-daily", "repeat", "cohorts", "fulfilment", "providers", "refunds"):
            assert (
                client.get(f"/v1/analytics/{figure}", params={"days": 14, "until": until}).status_code == 200
            )
        assert client.get("/v1/analytics/repeat", params={"days": 14, "until": until}).json()[
            "orders"
        ] == len(data.orders)
        other = client.get("/v1/analytics/repeat", params={"merchant": "0x" + "99" * 20})
        assert other.status_code == 403
        assert client.get("/v1/analytics/heatmap", params={"tz_offset_minutes": 900}).status_code == 422
        # Every zone is a whole number of quarter hours (+5:45 is); +0:07 is no zone's offset.
        odd = client.get("/v1/analytics/heatmap", params={"tz_offset_minutes": 7})
        assert odd.status_code == 422 and "tz_offset_minutes" in odd.text
        assert client.get("/v1/analytics/heatmap", params={"tz_offset_minutes": 345}).status_code == 200
    with gw.client(no_orders) as client:
        assert client.get("/v1/analytics/heatmap").status_code == 403
    everyone = admin.get(
        "/v1/analytics/refunds", params={"days": 14, "until": until, "merchant": account["address"]}
    )
    assert {r["reason"] for r in everyone.json()["reasons"]} >= {"risk_rejected"}
    paths = admin.get("/openapi.json").json()["paths"]
    assert {"/v1/analytics/heatmap", "/v1/merchant/reviews", "/v1/risk/reviews/{order_id}/refund"} <= set(
        paths
    )


def test_a_quote_keeps_the_account_hash_and_the_hashed_client_network_and_agent(gw: MerchantApp) -> None:
    from cardless.ledger.risk import RequestSignal
    from cardless.ledger.risk.signals import network_of
    from tests.support.shop import dev_wallet

    body = {"sku": "genshin-60", "account": " 12345678 ", "token": "tUSDC", "buyer": dev_wallet(5).address}
    with gw.client(**{"User-Agent": "risk-test/1.0"}) as client:
        quote = client.post("/v1/quotes", json=body)
    assert quote.status_code == 201, quote.text
    order_id = quote.json()["order_id"]
    cipher: AccountCipher = gw.context.quotes.cipher
    with gw.sessions() as session:
        order = session.get(Order, order_id)
        signal = session.get(RequestSignal, order_id)
        assert order is not None and signal is not None
        assert order.account_hash == signal.account_hash == cipher.account_hash("12345678")
        assert signal.buyer == dev_wallet(5).address
        assert signal.network_hash == cipher.keyed_hash("network", network_of("127.0.0.1"))
        assert signal.agent_hash == cipher.keyed_hash("agent", "risk-test/1.0")
        assert "127.0.0" not in signal.network_hash and "risk-test" not in signal.agent_hash
