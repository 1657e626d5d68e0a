"""Merchants' wallet sessions for the dashboard (POST/DELETE /v1/auth/siwe/merchant): Sign-In with
Ethereum by the merchant's settlement address, through a real HTTP server over a database of its own
(tests/gateway/merchant_app.py); the session used wherever a merchant key is, within its scopes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from eth_account.messages import encode_defunct
from sqlalchemy import select, update

from cardless.cli.system import System
from cardless.ledger.models import IdempotencyRecord, MerchantSession, OrderState
from gateway.services.merchant_sessions import STATEMENT
from tests.gateway.merchant_app import SIWE_DOMAIN, MerchantApp, merchant_app
from tests.support.orders import add_order
from tests.support.shop import assert_problem, dev_wallet

PAIMON_WALLET = dev_wallet(6)  # paimon-shop's settlement address (gateway/catalogue.toml)
CHICKEN = "0xd41c057fd1c78805AAC12B0A94a405c0461A6FBb"
STRANGER = dev_wallet(22)
SIGN_IN = "/v1/auth/siwe/merchant"


@pytest.fixture(scope="module")
def gw(system: System, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MerchantApp]:
    with merchant_app(system, tmp_path_factory.mktemp("merchant-sessions")) as app:
        with app.sessions() as session:
            add_order(session, state=OrderState.SETTLED, merchant=PAIMON_WALLET.address, sku="genshin-60")
            add_order(session, state=OrderState.PAID, merchant=CHICKEN, sku="pubg-60")
            session.commit()
        yield app


def _message(nonce: str, address: str, *, statement: str = STATEMENT, **fields: Any) -> str:
    values = {
        "domain": SIWE_DOMAIN,
        "chain_id": 31337,
        "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **fields,
    }
    lines = [
        f"{values['domain']} wants you to sign in with your Ethereum account:",
        address,
        "",
        statement,
        "",
        f"URI: https://{SIWE_DOMAIN}/merchant",
        "Version: 1",
        f"Chain ID: {values['chain_id']}",
        f"Nonce: {nonce}",
        f"Issued At: {values['issued_at']}",
    ]
    if "expiration" in values:
        lines.append(f"Expiration Time: {values['expiration']}")
    return "\n".join(lines)


def _signed(client: httpx.Client, account: Any, **fields: Any) -> dict[str, str]:
    nonce = client.post("/v1/auth/siwe/nonce")
    assert nonce.status_code == 201, nonce.text
    message = _message(nonce.json()["nonce"], account.address, **fields)
    signature = account.sign_message(encode_defunct(text=message)).signature.hex()
    return {"message": message, "signature": "0x" + signature.removeprefix("0x")}


def _sign_in(gw: MerchantApp, account: Any = PAIMON_WALLET) -> str:
    with gw.client() as anonymous:
        response = anonymous.post(SIGN_IN, json=_signed(anonymous, account))
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def test_the_settlement_wallet_signs_in_and_runs_its_own_shop(gw: MerchantApp) -> None:
    with gw.client(**{"Idempotency-Key": "sign-in-1"}) as anonymous:
        signed = anonymous.post(SIGN_IN, json=_signed(anonymous, PAIMON_WALLET))
    assert signed.status_code == 201, signed.text
    body = signed.json()
    token = body["token"]
    assert token.startswith("cm_sess_") and len(token) == 8 + 43
    assert (body["merchant"], body["address"]) == ("paimon-shop", PAIMON_WALLET.address)
    assert body["scopes"] == ["catalogue:write", "orders:read", "payouts:read", "webhooks:write"]
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(hours=7, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=8)
    with gw.sessions() as session:
        # At rest: the SHA-256 only, and no copy of the answer in the Idempotency-Key store.
        row = session.get(MerchantSession, hashlib.sha256(token.encode()).hexdigest())
        assert row is not None and row.merchant_id == "paimon-shop" and row.revoked_at is None
        stored = session.scalars(select(IdempotencyRecord.response_body)).all()
        assert not any(b and token.encode() in b for b in stored)
    with gw.client(token) as merchant:
        me = merchant.get("/v1/merchant")
        assert me.status_code == 200 and me.json()["id"] == "paimon-shop"
        assert "RateLimit-Policy" in me.headers  # counted like a key
        orders = merchant.get("/v1/orders").json()["data"]
        assert orders and {o["merchant"] for o in orders} == {PAIMON_WALLET.address}
        assert merchant.get("/v1/merchant/balances").status_code == 200  # payouts:read
        skus = merchant.get("/v1/merchant/skus").json()
        assert {s["merchant"] for s in skus} == {"paimon-shop"}
        renamed = merchant.patch("/v1/merchant/skus/genshin-60", json={"title": "Genshin · 60 (wallet)"})
        assert renamed.status_code == 200, renamed.text  # catalogue:write
        hook = merchant.post(
            "/v1/merchant/webhook-endpoints",
            json={"url": "http://127.0.0.1:9/hook", "events": ["order.paid"]},
        )
        assert hook.status_code == 201, hook.text  # webhooks:write


def test_a_session_is_held_to_the_dashboard_scopes_and_its_own_merchant(gw: MerchantApp) -> None:
    with gw.client(_sign_in(gw)) as merchant:
        for response, scope in (
            (merchant.get("/v1/merchant/reviews"), "risk:review"),
            (merchant.get("/v1/audit/receipts"), "audit:read"),
        ):
            assert f"this wallet session lacks the '{scope}' scope" in assert_problem(response, 403)["detail"]
        assert (
            "no API key to rotate"
            in assert_problem(merchant.post("/v1/merchant/keys/current/rotate", json={}), 403)["detail"]
        )
        assert_problem(merchant.get("/v1/merchants"), 403)  # the operator's
        assert_problem(
            merchant.post("/v1/merchants/paimon-shop/keys", json={"name": "x", "scopes": ["orders:read"]}),
            403,
        )
        assert_problem(merchant.get("/v1/merchant/skus/pubg-60"), 404, "sku_id")  # chicken-dinner's
        # A signed-in merchant does not sign in again on top.
        assert_problem(merchant.post(SIGN_IN, json=_signed(merchant, PAIMON_WALLET)), 403)


def test_only_a_merchants_settlement_wallet_signing_the_dashboard_statement_gets_a_session(
    gw: MerchantApp,
) -> None:
    with gw.client() as anonymous:
        by_stranger = _signed(anonymous, STRANGER)
        refused = anonymous.post(SIGN_IN, json=by_stranger)
        assert "is not a merchant's settlement address" in assert_problem(refused, 403)["detail"]
        # The nonce is spent all the same.
        assert "nonce" in assert_problem(anonymous.post(SIGN_IN, json=by_stranger), 401)["detail"]
        # A buyer's sign-in message, by the merchant's own wallet, opens no merchant session.
        buyer_kind = _signed(anonymous, PAIMON_WALLET, statement="Sign in to see your Cardless orders.")
        assert "statement" in assert_problem(anonymous.post(SIGN_IN, json=buyer_kind), 403)["detail"]
        # Someone else's signature over the merchant's message is 401, and leaves the nonce usable.
        signed = _signed(anonymous, PAIMON_WALLET)
        forged = {**signed, "signature": _signed(anonymous, STRANGER)["signature"]}
        assert_problem(anonymous.post(SIGN_IN, json=forged), 401)
        assert anonymous.post(SIGN_IN, json=signed).status_code == 201
        assert "nonce" in assert_problem(anonymous.post(SIGN_IN, json=signed), 401)["detail"]


def test_a_buyers_sign_in_answer_is_not_kept_by_the_idempotency_store_either(gw: MerchantApp) -> None:
    with gw.client(**{"Idempotency-Key": "buyer-sign-in-1"}) as anonymous:
        body = _signed(anonymous, STRANGER, statement="Sign in to see your Cardless orders.")
        signed = anonymous.post("/v1/auth/siwe", json=body)
        assert signed.status_code == 201, signed.text
        # Not replayed: the retry runs, and finds its nonce spent.
        assert "nonce" in assert_problem(anonymous.post("/v1/auth/siwe", json=body), 401)["detail"]
    with gw.sessions() as session:
        stored = session.scalars(select(IdempotencyRecord.response_body)).all()
        assert not any(b and signed.json()["token"].encode() in b for b in stored)


def test_a_message_that_expires_sooner_shortens_the_session(gw: MerchantApp) -> None:
    soon = (datetime.now(UTC) + timedelta(minutes=30)).replace(microsecond=0)
    with gw.client() as anonymous:
        body = _signed(anonymous, PAIMON_WALLET, expiration=soon.strftime("%Y-%m-%dT%H:%M:%SZ"))
        signed = anonymous.post(SIGN_IN, json=body)
    assert signed.status_code == 201, signed.text
    assert datetime.fromisoformat(signed.json()["expires_at"]) == soon


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"domain": "evil.example"}, 401, "evil.example"),
        ({"chain_id": 1}, 401, "chain 1"),
        ({"expiration": "2020-01-01T00:00:00Z"}, 401, "expired"),
        ({"issued_at": "last tuesday"}, 422, "Issued At"),
    ],
)
def test_messages_for_elsewhere_or_another_time_are_refused(
    gw: MerchantApp, change: dict[str, Any], status: int, words: str
) -> None:
    with gw.client() as anonymous:
        response = anonymous.post(SIGN_IN, json=_signed(anonymous, PAIMON_WALLET, **change))
        body = assert_problem(response, status, "message" if status == 422 else None)
        assert words in body["detail"]


def test_a_session_ends_on_sign_out_at_expiry_and_when_the_merchant_is_disabled(gw: MerchantApp) -> None:
    with gw.client(_sign_in(gw)) as merchant:
        ended = merchant.delete(SIGN_IN)
        assert ended.status_code == 200, ended.text
        assert (ended.json()["merchant"], ended.json()["address"]) == ("paimon-shop", PAIMON_WALLET.address)
        assert "signed out" in assert_problem(merchant.get("/v1/merchant"), 401)["detail"]
        assert_problem(merchant.delete(SIGN_IN), 401)
    expiring = _sign_in(gw)
    with gw.sessions() as session:
        session.execute(
            update(MerchantSession)
            .where(MerchantSession.token_hash == hashlib.sha256(expiring.encode()).hexdigest())
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        session.commit()
    with gw.client(expiring) as merchant:
        assert "expired" in assert_problem(merchant.get("/v1/merchant/skus"), 401)["detail"]
    with gw.client() as anonymous:  # issuing a nonce sweeps expired sessions
        assert anonymous.post("/v1/auth/siwe/nonce").status_code == 201
    with gw.sessions() as session:
        assert session.get(MerchantSession, hashlib.sha256(expiring.encode()).hexdigest()) is None
    with gw.client("cm_sess_" + "A" * 43) as forged:
        assert_problem(forged.get("/v1/merchant"), 401)
    # An API key does not sign out (the operator revokes keys).
    with gw.client(**gw.operator) as admin:
        key = admin.post("/v1/merchants/paimon-shop/keys", json={"name": "k", "scopes": ["orders:read"]})
        with gw.client(key.json()["key"]) as keyed:
            assert "API key does not sign out" in assert_problem(keyed.delete(SIGN_IN), 403)["detail"]
        wallet = dev_wallet(23)
        made = admin.post(
            "/v1/merchants",
            json={"id": "wallet-shop", "name": "Wallet Shop", "address": wallet.address, "fee_bps": 100},
        )
        assert made.status_code == 201, made.text
        token = _sign_in(gw, wallet)
        with gw.client(token) as merchant:
            assert merchant.get("/v1/merchant").json()["id"] == "wallet-shop"
            assert admin.post("/v1/merchants/wallet-shop/disable", json={"reason": "test"}).status_code == 200
            assert "disabled" in assert_problem(merchant.get("/v1/merchant"), 401)["detail"]
        with gw.client() as anonymous:
            refused = anonymous.post(SIGN_IN, json=_signed(anonymous, wallet))
            assert "disabled" in assert_problem(refused, 403)["detail"]
