"""The webhook endpoint API (gateway/api/webhooks.py) in process, on the gateway's app and error handlers,
with a migrated SQLite ledger seeded from the shipped catalogue: the operator's routes
(/v1/merchants/{merchant_id}/...) and the merchant's own (/v1/merchant/..., an API key with
`webhooks:write`), URLs checked (loopback and private networks refused outside development), secrets
shown once, rotation, disabling, the delivery log and redelivery, and bad input of every kind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cardless.cli.settings import Settings
from cardless.ledger import OrderState, WebhookDelivery, WebhookEndpoint
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.transitions import transition
from gateway.api.deps import GatewayContext
from gateway.app import create_app
from gateway.catalogue import load_catalogue
from gateway.merchant_schemas import ApiKeyCreate
from gateway.services import InvalidField
from gateway.services.api_keys import create_key
from gateway.services.skus import seed_catalogue
from gateway.services.webhooks import WebhookEndpoints, check_url
from tests.support.db import migrated, sqlite_url
from tests.support.orders import add_order
from tests.support.shop import assert_problem

OPERATOR = "o" * 40
MERCHANT = "0xE57bFE9F44b819898F47BF37E5AF72a0783e1141"  # paimon-shop in the bundled catalogue
MERCHANT_ID = "paimon-shop"
OTHER = "chicken-dinner"
AUTH = {"Authorization": f"Bearer {OPERATOR}"}
CIPHER = AccountCipher(bytes(range(32)))


def _context(sessions: sessionmaker[Session], *, allow_private: bool) -> GatewayContext:
    # Only what these routes read; the chain, quotes and providers are not involved.
    return GatewayContext(
        w3=None,  # type: ignore[arg-type]
        sessions=sessions,
        catalogue=load_catalogue(Settings().catalogue_file),
        deployment=None,  # type: ignore[arg-type]
        adapters={},
        quotes=None,  # type: ignore[arg-type]
        quote_limits=None,  # type: ignore[arg-type]
        operator_key=OPERATOR,
        webhook_endpoints=WebhookEndpoints(CIPHER, allow_private=allow_private),
    )


class Api:
    def __init__(self, context: GatewayContext) -> None:
        self.app = create_app(context)

    def __call__(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
                return await http.request(method, path, **kwargs)

        return asyncio.run(call())


def _seeded(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    with sessions() as session:
        seed_catalogue(session, load_catalogue(Settings().catalogue_file))
    return sessions


@pytest.fixture
def ledger(migrated_db: sessionmaker[Session]) -> sessionmaker[Session]:
    return _seeded(migrated_db)


@pytest.fixture
def dev(ledger: sessionmaker[Session]) -> Api:
    return Api(_context(ledger, allow_private=True))


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """Outside development; one database for the module (these tests are refused before writing)."""
    with migrated(sqlite_url(tmp_path_factory.mktemp("prod"))) as sessions:
        yield Api(_context(_seeded(sessions), allow_private=False))


def base(merchant: str = MERCHANT_ID) -> str:
    return f"/v1/merchants/{merchant}/webhook-endpoints"


def create(api: Api, url: str = "http://127.0.0.1:9/hook", **extra: Any) -> httpx.Response:
    return api("POST", base(), json={"url": url, "events": ["order.paid"], **extra}, headers=AUTH)


def test_without_or_with_a_wrong_operator_key_every_route_is_401(dev: Api) -> None:
    for method, path in [("GET", base()), ("POST", base()), ("GET", base() + "/we_" + "0" * 24)]:
        assert_problem(dev(method, path, json={}), 401)
        assert_problem(dev(method, path, json={}, headers={"Authorization": "Bearer " + "x" * 40}), 401)


def test_register_read_rotate_disable_and_delete(dev: Api) -> None:
    created = create(dev, description="orders to the shop backend")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) == 49
    assert body["merchant"] == MERCHANT and body["enabled"] is True and body["events"] == ["order.paid"]
    endpoint = body["id"]

    listed = dev("GET", base(), headers=AUTH).json()["data"]
    assert [e["id"] for e in listed] == [endpoint]
    assert "secret" not in listed[0]  # shown once
    assert "secret" not in dev("GET", f"{base()}/{endpoint}", headers=AUTH).json()

    rotated = dev("POST", f"{base()}/{endpoint}/rotate-secret", json={"overlap_seconds": 3600}, headers=AUTH)
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != body["secret"] and rotated.json()["previous_secret_expires_at"]

    off = dev("PATCH", f"{base()}/{endpoint}", json={"enabled": False}, headers=AUTH).json()
    assert off["enabled"] is False and off["disabled_reason"] == "disabled by the merchant"
    on = dev(
        "PATCH", f"{base()}/{endpoint}", json={"enabled": True, "events": ["order.settled"]}, headers=AUTH
    )
    assert on.json()["enabled"] is True and on.json()["disabled_reason"] is None
    assert on.json()["events"] == ["order.settled"]

    assert dev("DELETE", f"{base()}/{endpoint}", headers=AUTH).json()["id"] == endpoint
    assert_problem(dev("GET", f"{base()}/{endpoint}", headers=AUTH), 404, "endpoint_id")


def test_another_merchants_endpoint_does_not_exist_for_this_one(dev: Api) -> None:
    endpoint = create(dev).json()["id"]
    for method in ("GET", "PATCH", "DELETE"):
        response = dev(method, f"{base(OTHER)}/{endpoint}", json={}, headers=AUTH)
        assert_problem(response, 404, "endpoint_id")
    assert dev("GET", base(OTHER), headers=AUTH).json()["data"] == []
    assert_problem(dev("GET", base("no-such-shop"), headers=AUTH), 404, "merchant_id")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://localhost:8443/hook", "loopback"),
        ("https://[::1]/hook", "loopback"),
        ("https://10.1.2.3/hook", "private"),
        ("https://192.168.0.10/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("http://93.184.215.14/hook", "https"),
        ("https://user:pw@93.184.215.14/hook", "credentials"),
        ("https://no-such-host.invalid/hook", "does not resolve"),
    ],
)
def test_urls_into_private_networks_are_refused_outside_development(prod: Api, url: str, why: str) -> None:
    problem = assert_problem(create(prod, url), 422, "url")
    assert why in problem["detail"]


def test_a_host_with_any_private_address_is_refused_even_if_another_is_public() -> None:
    def resolve(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.7"]  # a DNS answer mixing a public and a private address

    with pytest.raises(InvalidField, match=r"10\.0\.0\.7 is a private address"):
        check_url("https://shop.example/hook", allow_private=False, resolve=resolve)
    assert check_url("https://93.184.215.14/hook", allow_private=False) == "https://93.184.215.14/hook"


def test_malformed_bodies_and_absurd_pages_are_422_naming_the_field(dev: Api) -> None:
    assert_problem(dev("POST", base(), json={"url": "https://x.example", "events": []}, headers=AUTH), 422)
    bad_event = dev(
        "POST", base(), json={"url": "http://127.0.0.1/x", "events": ["order.eaten"]}, headers=AUTH
    )
    assert "events" in assert_problem(bad_event, 422)["errors"][0]["field"]
    unknown = dev(
        "POST", base(), json={"url": "http://127.0.0.1/x", "events": ["order.paid"], "x": 1}, headers=AUTH
    )
    assert_problem(unknown, 422)
    endpoint = create(dev).json()["id"]
    for query in ("limit=0", "limit=100000", "starting_after=-1", "status=lost"):
        assert_problem(dev("GET", f"{base()}/{endpoint}/deliveries?{query}", headers=AUTH), 422)
    huge = dev("POST", base(), content=b'{"url":"' + b"a" * (2 << 20) + b'"}', headers=AUTH)
    assert huge.status_code == 413
    assert_problem(
        dev("POST", f"{base()}/{endpoint}/deliveries/999/redeliver", headers=AUTH), 404, "delivery_id"
    )


def test_injection_in_text_fields_is_stored_as_text(dev: Api, ledger: sessionmaker[Session]) -> None:
    nasty = "'; DROP TABLE webhook_endpoints; -- <script>alert(1)</script>"
    created = create(dev, description=nasty)
    assert created.status_code == 201
    assert dev("GET", f"{base()}/{created.json()['id']}", headers=AUTH).json()["description"] == nasty
    with ledger() as session:
        assert session.scalars(select(WebhookEndpoint)).one().description == nasty
    path_injection = dev("GET", base() + "/we_1' OR '1'='1", headers=AUTH)
    assert_problem(path_injection, 422)


def test_the_delivery_log_pages_and_a_redelivery_is_queued(dev: Api, ledger: sessionmaker[Session]) -> None:
    endpoint = create(dev).json()["id"]
    with ledger.begin() as session:
        for _ in range(3):
            order = add_order(session, merchant=MERCHANT)
            transition(session, order, OrderState.PAID, "OrderPaid in block 7")
    first = dev("GET", f"{base()}/{endpoint}/deliveries?limit=2", headers=AUTH).json()
    assert len(first["data"]) == 2 and first["has_more"] is True
    assert all(d["status"] == "pending" and d["event_type"] == "order.paid" for d in first["data"])
    rest = dev(
        "GET",
        f"{base()}/{endpoint}/deliveries?limit=2&starting_after={first['data'][-1]['id']}",
        headers=AUTH,
    )
    assert len(rest.json()["data"]) == 1 and rest.json()["has_more"] is False
    delivery = first["data"][0]["id"]
    queued = dev("POST", f"{base()}/{endpoint}/deliveries/{delivery}/redeliver", headers=AUTH)
    assert queued.status_code == 202 and queued.json()["status"] == "pending"
    with ledger() as session:
        row = session.get(WebhookDelivery, delivery)
        assert row is not None and row.manual_requested_at is not None
    # Another merchant cannot redeliver it.
    assert_problem(
        dev("POST", f"{base(OTHER)}/{endpoint}/deliveries/{delivery}/redeliver", headers=AUTH), 404
    )


def _key(ledger: sessionmaker[Session], merchant_id: str, *scopes: str) -> dict[str, str]:
    with ledger() as session:
        created = create_key(session, merchant_id, ApiKeyCreate(name="hooks", scopes=list(scopes)))  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {created.key}"}


def test_a_merchant_manages_its_own_endpoints_with_a_webhooks_write_key(
    dev: Api, ledger: sessionmaker[Session]
) -> None:
    mine = _key(ledger, MERCHANT_ID, "webhooks:write")
    created = dev(
        "POST",
        "/v1/merchant/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/h", "events": ["order.paid"]},
        headers=mine,
    )
    assert created.status_code == 201, created.text
    assert created.json()["merchant"] == MERCHANT and created.json()["secret"].startswith("whsec_")
    endpoint = created.json()["id"]
    assert [e["id"] for e in dev("GET", "/v1/merchant/webhook-endpoints", headers=mine).json()["data"]] == [
        endpoint
    ]
    # The operator sees it under the merchant's id; another merchant's key does not see it at all.
    assert dev("GET", f"{base()}/{endpoint}", headers=AUTH).json()["id"] == endpoint
    theirs = _key(ledger, OTHER, "webhooks:write")
    assert_problem(
        dev("GET", f"/v1/merchant/webhook-endpoints/{endpoint}", headers=theirs), 404, "endpoint_id"
    )
    assert dev("GET", "/v1/merchant/webhook-endpoints", headers=theirs).json()["data"] == []
    # Wrong scope: 403; a merchant key on the operator's routes: 403; a wrong key: 401.
    reader = _key(ledger, MERCHANT_ID, "orders:read")
    assert_problem(dev("GET", "/v1/merchant/webhook-endpoints", headers=reader), 403)
    assert_problem(dev("GET", base(), headers=mine), 403)
    assert_problem(
        dev("GET", "/v1/merchant/webhook-endpoints", headers={"Authorization": "Bearer ck_live_x_y"}), 401
    )
    assert_problem(dev("GET", "/v1/merchant/webhook-endpoints"), 401)
