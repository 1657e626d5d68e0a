"""Merchants, API keys and the catalogue in the database, through a real HTTP server (tests/gateway/
merchant_app.py: the session system's chain and keys, a database of its own seeded from the shipped
catalogue). Every failure the issue lists: 401 wrong/expired/revoked key, 403 wrong scope, 404 for
another merchant's resource, 409 taken ids, 413 oversized bodies, 422 naming the field, injection text
stored as text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update

from cardless.cli.system import System
from cardless.ledger.models import ApiKey, Merchant, Order, Sku, utcnow
from tests.gateway.merchant_app import MerchantApp, merchant_app
from tests.support.shop import assert_problem, dev_wallet

INJECTION = "x'); DROP TABLE orders; -- <script>alert(1)</script>"


@pytest.fixture(scope="module")
def gw(system: System, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MerchantApp]:
    with merchant_app(system, tmp_path_factory.mktemp("merchants")) as app:
        yield app


@pytest.fixture(scope="module")
def admin(gw: MerchantApp) -> Iterator[httpx.Client]:
    with gw.client(**gw.operator) as client:
        yield client


_counter = iter(range(100, 10_000))


def new_merchant(admin: httpx.Client, **fields: Any) -> dict[str, Any]:
    n = next(_counter)
    body = {"id": f"shop-{n}", "name": f"Shop {n}", "address": "0x" + f"{n:040x}", "fee_bps": 100, **fields}
    response = admin.post("/v1/merchants", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def new_key(admin: httpx.Client, merchant: str, *scopes: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "server", "scopes": list(scopes or ("catalogue:write", "orders:read")), **fields}
    response = admin.post(f"/v1/merchants/{merchant}/keys", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def fee_cap(system: System) -> int:
    return int(system.escrow().functions.feeCapBps().call())


# ---------------------------------------------------------------------------------------- merchants


def test_operator_creates_lists_reads_and_disables_a_merchant(gw: MerchantApp, admin: httpx.Client) -> None:
    merchant = new_merchant(admin, name="Cafe Ünïcode")
    assert merchant["status"] == "active" and merchant["payout_address"] is None
    assert merchant["address"] == merchant["address"][:2] + merchant["address"][2:]  # EIP-55 form
    assert admin.get(f"/v1/merchants/{merchant['id']}").json() == merchant
    assert merchant["id"] in [m["id"] for m in admin.get("/v1/merchants").json()]

    disabled = admin.post(f"/v1/merchants/{merchant['id']}/disable", json={"reason": "chargebacks"})
    assert disabled.status_code == 200, disabled.text
    assert (disabled.json()["status"], disabled.json()["disabled_reason"]) == ("disabled", "chargebacks")
    catalogue = admin.get("/v1/catalogue").json()
    assert merchant["id"] not in [m["id"] for m in catalogue["merchants"]]


def test_the_catalogue_is_seeded_from_the_shipped_file(gw: MerchantApp, system: System) -> None:
    with gw.client() as anonymous:
        body = anonymous.get("/v1/catalogue").json()
    assert [m["id"] for m in body["merchants"]][:2] == ["paimon-shop", "chicken-dinner"]
    assert [s["id"] for s in body["skus"]][:6] == [
        "genshin-60",
        "genshin-300",
        "genshin-980",
        "pubg-60uc",
        "pubg-325uc",
        "pubg-660uc",
    ]


def test_admin_routes_refuse_missing_wrong_and_merchant_credentials(
    gw: MerchantApp, admin: httpx.Client
) -> None:
    key = new_key(admin, "paimon-shop")["key"]
    body = {"id": "nope-1", "name": "n", "address": "0x" + "ab" * 20, "fee_bps": 1}
    with gw.client() as anonymous:
        assert_problem(anonymous.post("/v1/merchants", json=body), 401)
        assert_problem(anonymous.get("/v1/merchants"), 401)
    with gw.client("not-the-operator-key-" + "x" * 20) as wrong:
        response = wrong.get("/v1/merchants")
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
    with gw.client(key) as merchant:
        assert_problem(merchant.post("/v1/merchants", json=body), 403)
        assert_problem(merchant.get("/v1/merchants/paimon-shop/keys"), 403)
    with gw.sessions() as session:
        assert session.get(Merchant, "nope-1") is None


def test_merchant_create_failures_name_the_field(
    gw: MerchantApp, admin: httpx.Client, system: System
) -> None:
    taken = new_merchant(admin)
    base = {"id": "fresh-1", "name": "Fresh", "address": "0x" + "cd" * 20, "fee_bps": 10}
    assert_problem(admin.post("/v1/merchants", json={**base, "id": taken["id"]}), 409, "id")
    assert_problem(admin.post("/v1/merchants", json={**base, "address": taken["address"]}), 409, "address")
    cap = fee_cap(system)
    assert_problem(admin.post("/v1/merchants", json={**base, "fee_bps": cap + 1}), 422, "fee_bps")
    assert_problem(admin.post("/v1/merchants", json={**base, "address": "0x12"}), 422, "address")
    assert_problem(admin.post("/v1/merchants", json={**base, "id": "Bad Id!"}), 422, "id")
    assert_problem(admin.post("/v1/merchants", json={**base, "name": "n" * 201}), 422, "name")
    assert_problem(admin.post("/v1/merchants", json={**base, "colour": "red"}), 422, "colour")
    assert_problem(admin.post("/v1/merchants", json={**base, "address": "0x" + "00" * 20}), 422, "address")
    assert_problem(admin.post("/v1/merchants", content=b"x" * (1024 * 1024 + 1)), 413)
    assert_problem(admin.get("/v1/merchants/no-such-shop"), 404, "merchant_id")
    with gw.sessions() as session:
        assert session.get(Merchant, "fresh-1") is None


def test_a_fee_at_the_cap_is_accepted(admin: httpx.Client, system: System) -> None:
    assert new_merchant(admin, fee_bps=fee_cap(system))["fee_bps"] == fee_cap(system)


def test_payout_address_is_a_prepared_transaction_for_the_merchants_wallet(
    gw: MerchantApp, admin: httpx.Client, system: System
) -> None:
    merchant = new_merchant(admin)
    payout = dev_wallet(12).address
    response = admin.post(f"/v1/merchants/{merchant['id']}/payout-address", json={"payout_address": payout})
    assert response.status_code == 200, response.text
    tx = response.json()
    escrow = system.escrow()
    assert (tx["from"], tx["to"], tx["value"]) == (merchant["address"], escrow.address, "0")
    function, args = escrow.decode_function_input(tx["data"])
    assert (function.fn_name, args) == ("setPayoutAddress", {"payout": payout})
    assert tx["current_payout_address"] == escrow.functions.payoutAddressOf(merchant["address"]).call()
    assert admin.get(f"/v1/merchants/{merchant['id']}").json()["payout_address"] == payout
    bad = {"payout_address": escrow.address}
    assert_problem(
        admin.post(f"/v1/merchants/{merchant['id']}/payout-address", json=bad), 422, "payout_address"
    )


# ---------------------------------------------------------------------------------------- API keys


def test_a_key_is_shown_once_stored_hashed_and_listed_by_prefix(gw: MerchantApp, admin: httpx.Client) -> None:
    merchant = new_merchant(admin)
    created = new_key(admin, merchant["id"], "orders:read")
    key = created["key"]
    assert key.startswith(created["prefix"] + "_") and created["prefix"].startswith("ck_live_")
    listed = admin.get(f"/v1/merchants/{merchant['id']}/keys").json()
    assert [k["prefix"] for k in listed] == [created["prefix"]]
    assert all("key" not in k for k in listed) and key not in str(listed)
    with gw.sessions() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.id == created["id"]))
        assert row is not None
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
        dump = str([row.prefix, row.key_hash, row.name, row.scopes])
        assert key.rsplit("_", 1)[1] not in dump  # the secret itself is nowhere in the row

    with gw.client(key) as client:
        me = client.get("/v1/merchant")
        assert me.status_code == 200 and me.json()["id"] == merchant["id"]
    assert admin.get(f"/v1/merchants/{merchant['id']}/keys").json()[0]["last_used_at"] is not None


def test_wrong_expired_revoked_and_disabled_keys_are_401(gw: MerchantApp, admin: httpx.Client) -> None:
    merchant = new_merchant(admin)
    good = new_key(admin, merchant["id"])
    wrong_secret = good["key"][:-4] + ("AAAA" if not good["key"].endswith("AAAA") else "BBBB")
    for token in (wrong_secret, "ck_live_000000000000_" + "A" * 43, "ck_live_garbage"):
        with gw.client(token) as client:
            assert_problem(client.get("/v1/merchant"), 401)

    expired = new_key(admin, merchant["id"], expires_in_days=1)
    with gw.sessions() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == expired["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    with gw.client(expired["key"]) as client:
        assert "expired" in assert_problem(client.get("/v1/merchant"), 401)["detail"]

    revoked = new_key(admin, merchant["id"])
    assert (
        admin.post(f"/v1/merchants/{merchant['id']}/keys/{revoked['id']}/revoke").json()["status"]
        == "revoked"
    )
    with gw.client(revoked["key"]) as client:
        assert "revoked" in assert_problem(client.get("/v1/merchant"), 401)["detail"]

    with gw.client(good["key"]) as client:
        assert client.get("/v1/merchant").status_code == 200
        admin.post(f"/v1/merchants/{merchant['id']}/disable", json={"reason": "closed"})
        assert "disabled" in assert_problem(client.get("/v1/merchant"), 401)["detail"]


def test_rotation_keeps_the_old_key_for_the_overlap_only(gw: MerchantApp, admin: httpx.Client) -> None:
    merchant = new_merchant(admin)
    old = new_key(admin, merchant["id"], "orders:read")
    rotated = admin.post(
        f"/v1/merchants/{merchant['id']}/keys/{old['id']}/rotate", json={"overlap_seconds": 3600}
    )
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["key"] != old["key"] and new["scopes"] == ["orders:read"]
    for token in (old["key"], new["key"]):  # both work during the overlap
        with gw.client(token) as client:
            assert client.get("/v1/merchant").status_code == 200
    listed = {k["id"]: k for k in admin.get(f"/v1/merchants/{merchant['id']}/keys").json()}
    assert listed[old["id"]]["rotated_to"] == new["id"] and listed[old["id"]]["expires_at"] is not None
    again = admin.post(f"/v1/merchants/{merchant['id']}/keys/{old['id']}/rotate", json={})
    assert_problem(again, 404, "key_id")
    with gw.sessions() as session:  # the overlap ends
        session.execute(
            update(ApiKey).where(ApiKey.id == old["id"]).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    with gw.client(old["key"]) as client:
        assert_problem(client.get("/v1/merchant"), 401)
    with gw.client(new["key"]) as client:
        assert client.get("/v1/merchant").status_code == 200
    bad = admin.post(f"/v1/merchants/{merchant['id']}/keys/{new['id']}/rotate", json={"overlap_seconds": -1})
    assert_problem(bad, 422, "overlap_seconds")


def test_a_merchant_rotates_its_own_key(gw: MerchantApp, admin: httpx.Client) -> None:
    merchant = new_merchant(admin)
    old = new_key(admin, merchant["id"], "orders:read")
    with gw.client(old["key"]) as client:
        rotated = client.post("/v1/merchant/keys/current/rotate", json={"overlap_seconds": 60})
        assert rotated.status_code == 201, rotated.text
        assert_problem(client.post("/v1/merchant/keys/current/rotate", json={}), 404, "key_id")
        assert client.get("/v1/merchant").status_code == 200  # within the overlap
    new = rotated.json()
    assert new["scopes"] == ["orders:read"] and new["merchant"] == merchant["id"]
    with gw.client(new["key"]) as client:
        assert client.get("/v1/merchant").json()["id"] == merchant["id"]


def test_key_create_failures_name_the_field(admin: httpx.Client) -> None:
    url = "/v1/merchants/paimon-shop/keys"
    assert_problem(admin.post(url, json={"name": "k", "scopes": ["root"]}), 422, "scopes.0")
    assert_problem(admin.post(url, json={"name": "k", "scopes": []}), 422, "scopes")
    assert_problem(admin.post(url, json={"name": "k", "scopes": ["orders:read"] * 2}), 422, "scopes")
    assert_problem(admin.post(url, json={"name": "", "scopes": ["orders:read"]}), 422, "name")
    assert_problem(admin.post(url, json={"name": "k", "scopes": ["orders:read"], "expires_in_days": 0}), 422)
    assert_problem(
        admin.post("/v1/merchants/no-such-shop/keys", json={"name": "k", "scopes": ["orders:read"]}), 404
    )
    assert_problem(admin.post("/v1/merchants/paimon-shop/keys/999999/revoke"), 404, "key_id")
    other = new_merchant(admin)
    theirs = new_key(admin, other["id"])
    assert_problem(admin.post(f"/v1/merchants/paimon-shop/keys/{theirs['id']}/revoke"), 404, "key_id")


def test_a_key_quota_is_shown_in_headers_and_enforced(gw: MerchantApp, admin: httpx.Client) -> None:
    merchant = new_merchant(admin)
    key = new_key(admin, merchant["id"], rate_limit="2/minute")["key"]
    with gw.client(key) as client:
        first = client.get("/v1/merchant")
        assert first.status_code == 200
        assert first.headers["RateLimit-Policy"] == '"api_key";q=2;w=60'
        assert first.headers["RateLimit-Remaining"] == "1"
        assert client.get("/v1/merchant").headers["RateLimit-Remaining"] == "0"
        refused = client.get("/v1/merchant")
        assert_problem(refused, 429)
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["RateLimit-Remaining"] == "0"
    with gw.client(new_key(admin, merchant["id"])["key"]) as other:  # another key has its own quota
        assert other.get("/v1/merchant").status_code == 200


# ---------------------------------------------------------------------------------------- catalogue


def _sku(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"sku-{n}",
        "title": f"Gems x{n}",
        "face_value": n,
        "providers": ["simulator", "simulator-md5"],
        "prices": [{"token": "tUSDC", "amount": "1230000"}, {"token": "ETH", "amount": "1000000000000"}],
        **fields,
    }


def _quote(client: httpx.Client, sku: str, buyer: int = 3) -> httpx.Response:
    body = {"sku": sku, "account": "12345678", "token": "tUSDC", "buyer": dev_wallet(buyer).address}
    return client.post("/v1/quotes", json=body)


def test_a_merchant_adds_a_sku_and_the_catalogue_lists_it(gw: MerchantApp, admin: httpx.Client) -> None:
    merchant = new_merchant(admin)
    key = new_key(admin, merchant["id"], "catalogue:write")["key"]
    n = next(_counter)
    with gw.client(key) as client, gw.client() as buyer:
        created = client.post("/v1/merchant/skus", json=_sku(n))
        assert created.status_code == 201, created.text
        sku = created.json()
        assert (sku["merchant"], sku["face_value"], sku["enabled"]) == (merchant["id"], n, True)
        assert sku["prices"] == [
            {"token": "tUSDC", "amount": "1230000"},
            {"token": "ETH", "amount": "1000000000000"},
        ]
        listed = {s["id"]: s for s in buyer.get("/v1/catalogue").json()["skus"]}
        assert listed[sku["id"]]["merchant"] == merchant["id"]
        assert {p["token"]: p["amount"] for p in listed[sku["id"]]["prices"]} == {
            "tUSDC": "1230000",
            "ETH": "1000000000000",
        }
        assert client.get(f"/v1/merchant/skus/{sku['id']}").json() == sku


def test_quotes_follow_the_merchants_edits(gw: MerchantApp, admin: httpx.Client) -> None:
    """On this app's own database: the seeded paimon-shop edits genshin-300 (a SKU the simulated
    provider sells), and the next quote carries the new price; disabled, it is no longer sold."""
    key = new_key(admin, "paimon-shop", "catalogue:write")["key"]
    with gw.client(key) as client, gw.client() as buyer:
        before = _quote(buyer, "genshin-300")
        assert before.status_code == 201, before.text
        assert before.json()["order"]["amount"] == "4990000"
        patched = client.patch(
            "/v1/merchant/skus/genshin-300", json={"prices": [{"token": "tUSDC", "amount": "5"}]}
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["prices"] == [{"token": "tUSDC", "amount": "5"}]
        after = _quote(buyer, "genshin-300")
        assert after.status_code == 201, after.text
        assert after.json()["order"]["amount"] == "5"
        assert_problem(buyer.post("/v1/quotes", json={**_body("genshin-300"), "token": "ETH"}), 422, "token")

        assert client.patch("/v1/merchant/skus/genshin-300", json={"enabled": False}).status_code == 200
        assert "genshin-300" not in [s["id"] for s in buyer.get("/v1/catalogue").json()["skus"]]
        assert_problem(_quote(buyer, "genshin-300"), 404, "sku")
        assert "genshin-300" in [
            s["id"] for s in client.get("/v1/merchant/skus").json()
        ]  # still the merchant's
        assert client.patch("/v1/merchant/skus/genshin-300", json={"enabled": True}).status_code == 200


def _body(sku: str, buyer: int = 3) -> dict[str, Any]:
    return {"sku": sku, "account": "12345678", "token": "tUSDC", "buyer": dev_wallet(buyer).address}


def test_catalogue_edits_refuse_bad_input_other_merchants_and_wrong_scopes(
    gw: MerchantApp, admin: httpx.Client
) -> None:
    merchant = new_merchant(admin)
    writer = new_key(admin, merchant["id"], "catalogue:write")["key"]
    reader = new_key(admin, merchant["id"], "orders:read")["key"]
    n = next(_counter)
    with gw.client(writer) as client:
        assert_problem(
            client.post("/v1/merchant/skus", json=_sku(n, providers=["nowhere"])), 422, "providers"
        )
        assert_problem(
            client.post("/v1/merchant/skus", json=_sku(n, prices=[{"token": "DOGE", "amount": "1"}])),
            422,
            "prices",
        )
        assert_problem(
            client.post("/v1/merchant/skus", json=_sku(n, prices=[{"token": "tUSDC", "amount": "0"}])),
            422,
            "prices",
        )
        assert_problem(
            client.post("/v1/merchant/skus", json=_sku(n, prices=[{"token": "tUSDC", "amount": "1.5"}])),
            422,
            "prices.0.amount",
        )
        assert_problem(client.post("/v1/merchant/skus", json=_sku(n, id="genshin-60")), 409, "id")
        assert_problem(
            client.patch("/v1/merchant/skus/genshin-60", json={"title": "mine now"}), 404, "sku_id"
        )
        assert_problem(client.get("/v1/merchant/skus/genshin-60"), 404, "sku_id")
        assert_problem(client.patch("/v1/merchant/skus/no-such-sku", json={"title": "t"}), 404, "sku_id")
        assert client.post("/v1/merchant/skus", json=_sku(n)).status_code == 201
        assert_problem(client.patch(f"/v1/merchant/skus/sku-{n}", json={"title": None}), 422, "title")
        assert_problem(
            client.patch(f"/v1/merchant/skus/sku-{n}", json={"daily_limit": 0}), 422, "daily_limit"
        )
    with gw.client(reader) as client:
        assert_problem(client.post("/v1/merchant/skus", json=_sku(n + 1)), 403)
        assert_problem(client.patch(f"/v1/merchant/skus/sku-{n}", json={"title": "t"}), 403)
    with gw.sessions() as session:
        assert session.get(Sku, "genshin-60").title.startswith("Genshin")  # type: ignore[union-attr]
        assert session.get(Sku, f"sku-{n + 1}") is None


def test_injection_text_is_stored_and_returned_as_text(gw: MerchantApp, admin: httpx.Client) -> None:
    merchant = new_merchant(admin, name=INJECTION)
    assert merchant["name"] == INJECTION
    key = new_key(admin, merchant["id"], "catalogue:write", name=INJECTION)
    assert key["name"] == INJECTION
    n = next(_counter)
    with gw.client(key["key"]) as client:
        created = client.post("/v1/merchant/skus", json=_sku(n, title=INJECTION))
        assert created.json()["title"] == INJECTION
        # In a path or a filter, the same text is just an input that does not match.
        assert_problem(client.get("/v1/merchant/skus/x'%20OR%20'1'='1"), 422)
    with gw.client(**gw.operator) as operator:
        listed = operator.get("/v1/orders", params={"sku": INJECTION})
        assert listed.status_code == 200 and listed.json()["data"] == []
    with gw.sessions() as session:
        assert session.execute(text("SELECT count(*) FROM orders")).scalar_one() >= 0  # the table is there
        assert session.get(Merchant, merchant["id"]).name == INJECTION  # type: ignore[union-attr]


def test_a_sku_past_its_daily_limit_is_refused_before_any_provider_call(
    gw: MerchantApp, admin: httpx.Client
) -> None:
    key = new_key(admin, "paimon-shop", "catalogue:write")["key"]
    with gw.sessions() as session:
        already = (
            session.scalar(select(func.count()).select_from(Order).where(Order.sku == "genshin-980")) or 0
        )
    with gw.client(key) as client, gw.client() as anonymous:
        limits = {"buyer_daily_limit": 1, "daily_limit": already + 2}
        assert client.patch("/v1/merchant/skus/genshin-980", json=limits).status_code == 200
        assert _quote(anonymous, "genshin-980", buyer=5).status_code == 201
        refused = _quote(anonymous, "genshin-980", buyer=5)
        assert "this wallet" in assert_problem(refused, 503)["detail"]
        assert int(refused.headers["Retry-After"]) > 0
        assert _quote(anonymous, "genshin-980", buyer=8).status_code == 201
        assert "sold out" in assert_problem(_quote(anonymous, "genshin-980", buyer=9), 503)["detail"]
        cleared = {"buyer_daily_limit": None, "daily_limit": None}
        assert client.patch("/v1/merchant/skus/genshin-980", json=cleared).json()["daily_limit"] is None
    with gw.sessions() as session:
        count = session.scalar(select(func.count()).select_from(Order).where(Order.sku == "genshin-980"))
        assert count == already + 2


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        (
            "post",
            "/v1/merchants",
            {"id": INJECTION, "name": "n", "address": "0x" + "ab" * 20, "fee_bps": 1},
            "id",
        ),
        ("post", "/v1/merchants/paimon-shop/keys", {"name": "k", "scopes": [INJECTION]}, "scopes.0"),
        (
            "post",
            "/v1/merchants/paimon-shop/keys",
            {"name": "k", "scopes": ["orders:read"], "rate_limit": INJECTION},
            "rate_limit",
        ),
        ("post", "/v1/merchants/paimon-shop/payout-address", {"payout_address": INJECTION}, "payout_address"),
        ("post", "/v1/auth/siwe", {"message": INJECTION, "signature": "0x00"}, None),
    ],
)
def test_injection_in_a_constrained_field_is_refused_naming_it(
    gw: MerchantApp, admin: httpx.Client, method: str, path: str, body: dict[str, Any], field: str | None
) -> None:
    client = admin if path != "/v1/auth/siwe" else gw.client()
    response = client.request(method, path, json=body)
    assert_problem(response, 422, field)
    with gw.sessions() as session:
        assert session.execute(text("SELECT count(*) FROM merchants")).scalar_one() >= 2


def test_injection_in_free_text_is_kept_as_text(gw: MerchantApp, admin: httpx.Client) -> None:
    merchant = new_merchant(admin)
    disabled = admin.post(f"/v1/merchants/{merchant['id']}/disable", json={"reason": INJECTION})
    assert disabled.json()["disabled_reason"] == INJECTION
    key = new_key(admin, "paimon-shop", "catalogue:write")["key"]
    with gw.client(key) as client:
        updated = client.patch("/v1/merchant/skus/genshin-980", json={"title": INJECTION})
        assert updated.json()["title"] == INJECTION
        client.patch("/v1/merchant/skus/genshin-980", json={"title": "Genshin Impact · 980 Genesis Crystals"})
    with gw.client() as anonymous:  # served as JSON data, never as markup
        response = anonymous.get("/v1/catalogue")
        assert response.headers["content-type"] == "application/json"
