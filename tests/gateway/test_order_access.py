"""Order lists and order reads by party (operator, merchant key, SIWE buyer session), Sign-In with
Ethereum's checks, and Idempotency-Key on POST; through a real HTTP server over a database of its own
(tests/gateway/merchant_app.py), with order rows written straight into it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from sqlalchemy import func, select

from cardless.cli.system import System
from cardless.ledger.models import IdempotencyRecord, Merchant, OrderState
from gateway.services.siwe import parse_message
from tests.gateway.merchant_app import SIWE_DOMAIN, MerchantApp, merchant_app
from tests.support.orders import add_order
from tests.support.shop import assert_problem, dev_wallet

PAIMON = "0xE57bFE9F44b819898F47BF37E5AF72a0783e1141"
CHICKEN = "0xd41c057fd1c78805AAC12B0A94a405c0461A6FBb"
ALICE = dev_wallet(20)
BOB = dev_wallet(21)
T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def gw(system: System, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MerchantApp]:
    with merchant_app(system, tmp_path_factory.mktemp("orders")) as app:
        yield app


@pytest.fixture(scope="module")
def orders(gw: MerchantApp) -> dict[str, list[str]]:
    """25 paimon-shop orders (alice's, oldest first, alternating states), 5 chicken-dinner (bob's)."""
    made: dict[str, list[str]] = {"paimon": [], "chicken": []}
    with gw.sessions() as session:
        for i in range(25):
            state = OrderState.SETTLED if i % 2 else OrderState.PAID
            row = add_order(
                session,
                state=state,
                merchant=PAIMON,
                buyer=ALICE.address,
                sku="genshin-60" if i < 20 else "genshin-300",
                created_at=T0 + timedelta(minutes=i),
            )
            made["paimon"].append(row.id)
        for i in range(5):
            row = add_order(
                session, merchant=CHICKEN, buyer=BOB.address, created_at=T0 + timedelta(minutes=i)
            )
            made["chicken"].append(row.id)
        session.commit()
    return made


@pytest.fixture(scope="module")
def admin(gw: MerchantApp) -> Iterator[httpx.Client]:
    with gw.client(**gw.operator) as client:
        yield client


def _key(admin: httpx.Client, merchant: str, *scopes: str) -> str:
    response = admin.post(f"/v1/merchants/{merchant}/keys", json={"name": "k", "scopes": list(scopes)})
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


# ---------------------------------------------------------------------------------------- lists


def test_a_merchant_pages_through_its_own_orders_newest_first(
    gw: MerchantApp, admin: httpx.Client, orders: dict[str, list[str]]
) -> None:
    key = _key(admin, "paimon-shop", "orders:read")
    seen: list[str] = []
    after: str | None = None
    with gw.client(key) as client:
        while True:
            params: dict[str, Any] = {"limit": 10, **({"starting_after": after} if after else {})}
            page = client.get("/v1/orders", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            assert body["object"] == "list" and len(body["data"]) <= 10
            seen += [o["order_id"] for o in body["data"]]
            if not body["has_more"]:
                break
            after = body["data"][-1]["order_id"]
        assert seen == list(reversed(orders["paimon"]))
        assert all(o not in seen for o in orders["chicken"])

        settled = client.get("/v1/orders", params={"state": "settled", "limit": 100}).json()["data"]
        assert {o["state"] for o in settled} == {"settled"} and len(settled) == 12
        by_sku = client.get("/v1/orders", params={"sku": "genshin-300"}).json()["data"]
        assert [o["order_id"] for o in by_sku] == list(reversed(orders["paimon"][20:]))
        window = {
            "created_gte": (T0 + timedelta(minutes=5)).isoformat(),
            "created_lt": "2026-12-01T08:10:00+08:00",
        }
        timed = client.get("/v1/orders", params=window).json()["data"]
        assert [o["order_id"] for o in timed] == list(reversed(orders["paimon"][5:10]))  # 00:05 .. 00:09 UTC
        assert client.get("/v1/orders", params={"buyer": BOB.address}).json()["data"] == []


def test_order_list_refusals(gw: MerchantApp, admin: httpx.Client, orders: dict[str, list[str]]) -> None:
    reader = _key(admin, "paimon-shop", "orders:read")
    writer = _key(admin, "paimon-shop", "catalogue:write")
    with gw.client() as anonymous:
        assert_problem(anonymous.get("/v1/orders"), 401)
    with gw.client(writer) as client:
        assert_problem(client.get("/v1/orders"), 403)
        assert_problem(client.get(f"/v1/orders/{orders['paimon'][0]}"), 403)
    with gw.client(reader) as client:
        for limit in (0, 101, 10**12, -1):
            assert_problem(client.get("/v1/orders", params={"limit": limit}), 422, "query.limit")
        assert_problem(client.get("/v1/orders", params={"state": "lost"}), 422, "query.state")
        assert_problem(client.get("/v1/orders", params={"buyer": "0x12"}), 422, "query.buyer")
        assert_problem(
            client.get("/v1/orders", params={"created_gte": "yesterday"}), 422, "query.created_gte"
        )
        # Another merchant's order as a cursor reads like an unknown one.
        theirs = client.get("/v1/orders", params={"starting_after": orders["chicken"][0]})
        unknown = client.get("/v1/orders", params={"starting_after": "0x" + "ab" * 32})
        assert (
            assert_problem(theirs, 422, "starting_after")["detail"] == assert_problem(unknown, 422)["detail"]
        )


def test_order_detail_for_the_merchant_is_its_own_orders_only(
    gw: MerchantApp, admin: httpx.Client, orders: dict[str, list[str]]
) -> None:
    key = _key(admin, "paimon-shop", "orders:read")
    with gw.client(key) as client:
        mine = client.get(f"/v1/orders/{orders['paimon'][0]}")
        assert mine.status_code == 200 and mine.json()["buyer"] == ALICE.address and "timeline" in mine.json()
        theirs = client.get(f"/v1/orders/{orders['chicken'][0]}")
        missing = client.get("/v1/orders/0x" + "cd" * 32)
        assert assert_problem(theirs, 404, "order_id")["detail"].replace(orders["chicken"][0], "X") == (
            assert_problem(missing, 404)["detail"].replace("0x" + "cd" * 32, "X")
        )
    with gw.client() as anonymous:  # the public view is unchanged
        assert set(anonymous.get(f"/v1/orders/{orders['chicken'][0]}").json()) == {
            "order_id",
            "state",
            "chain",
            "receipt_hash",
            "proof",
            "refund_reason",
        }


# ---------------------------------------------------------------------------------------- SIWE


def _message(nonce: str, address: str, **fields: Any) -> str:
    values = {
        "domain": SIWE_DOMAIN,
        "uri": f"https://{SIWE_DOMAIN}/login",
        "chain_id": 31337,
        "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **fields,
    }
    lines = [
        f"{values['domain']} wants you to sign in with your Ethereum account:",
        address,
        "",
        "Sign in to see your Cardless orders.",
        "",
        f"URI: {values['uri']}",
        "Version: 1",
        f"Chain ID: {values['chain_id']}",
        f"Nonce: {nonce}",
        f"Issued At: {values['issued_at']}",
    ]
    if "expiration" in values:
        lines.append(f"Expiration Time: {values['expiration']}")
    return "\n".join(lines)


def _sign(account: Any, message: str) -> str:
    return "0x" + account.sign_message(encode_defunct(text=message)).signature.hex().removeprefix("0x")


def _nonce(client: httpx.Client) -> str:
    response = client.post("/v1/auth/siwe/nonce")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["domain"], body["chain_id"]) == (SIWE_DOMAIN, 31337)
    nonce: str = body["nonce"]
    return nonce


def test_a_buyer_signs_in_and_reads_only_its_own_orders(
    gw: MerchantApp, orders: dict[str, list[str]]
) -> None:
    with gw.client() as anonymous:
        message = _message(_nonce(anonymous), ALICE.address)
        signed = anonymous.post(
            "/v1/auth/siwe", json={"message": message, "signature": _sign(ALICE, message)}
        )
        assert signed.status_code == 201, signed.text
        session = signed.json()
        assert session["address"] == ALICE.address and session["token"].startswith("cs_sess_")
        # The nonce works once.
        again = anonymous.post("/v1/auth/siwe", json={"message": message, "signature": _sign(ALICE, message)})
        assert "nonce" in assert_problem(again, 401)["detail"]
    with gw.client(session["token"]) as alice:
        listed = alice.get("/v1/orders", params={"limit": 100}).json()["data"]
        assert {o["order_id"] for o in listed} == set(orders["paimon"])
        assert alice.get(f"/v1/orders/{orders['paimon'][3]}").json()["buyer"] == ALICE.address
        assert_problem(alice.get(f"/v1/orders/{orders['chicken'][0]}"), 404, "order_id")
        assert_problem(alice.get("/v1/merchants"), 403)
    with gw.client("cs_sess_" + "A" * 43) as forged:
        assert_problem(forged.get("/v1/orders"), 401)


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"domain": "evil.example"}, 401, "evil.example"),
        ({"chain_id": 1}, 401, "chain 1"),
        ({"expiration": "2020-01-01T00:00:00Z"}, 401, "expired"),
        ({"issued_at": "2999-01-01T00:00:00Z"}, 401, "future"),
        ({"issued_at": "last tuesday"}, 422, "Issued At"),
        ({"uri": "not a uri"}, 422, "URI"),
    ],
)
def test_sign_in_refuses_messages_for_elsewhere_or_another_time(
    gw: MerchantApp, change: dict[str, Any], status: int, words: str
) -> None:
    with gw.client() as anonymous:
        message = _message(_nonce(anonymous), ALICE.address, **change)
        response = anonymous.post(
            "/v1/auth/siwe", json={"message": message, "signature": _sign(ALICE, message)}
        )
        body = assert_problem(response, status, "message" if status == 422 else None)
        assert words in body["detail"]


def test_sign_in_refuses_a_foreign_signature_unknown_nonce_and_malformed_input(gw: MerchantApp) -> None:
    with gw.client() as anonymous:
        message = _message(_nonce(anonymous), ALICE.address)
        by_bob = anonymous.post("/v1/auth/siwe", json={"message": message, "signature": _sign(BOB, message)})
        assert_problem(by_bob, 401)
        # The nonce survived the failed attempt: the owner can still use it.
        ok = anonymous.post("/v1/auth/siwe", json={"message": message, "signature": _sign(ALICE, message)})
        assert ok.status_code == 201
        made_up = _message("abcdef0123456789", ALICE.address)
        assert_problem(
            anonymous.post("/v1/auth/siwe", json={"message": made_up, "signature": _sign(ALICE, made_up)}),
            401,
        )
        garbage = {"message": message, "signature": "0x" + "00" * 65}
        assert_problem(anonymous.post("/v1/auth/siwe", json=garbage), 401)
        assert_problem(
            anonymous.post("/v1/auth/siwe", json={"message": "hello", "signature": "0x00"}), 422, "message"
        )
        assert_problem(
            anonymous.post("/v1/auth/siwe", json={"message": "x" * 5000, "signature": "0x"}), 422, "message"
        )
        lower = message.replace(ALICE.address, ALICE.address.lower())
        assert_problem(
            anonymous.post("/v1/auth/siwe", json={"message": lower, "signature": _sign(ALICE, lower)}), 422
        )


def test_the_parser_reads_a_message_without_a_statement_and_with_resources() -> None:
    address = Account.from_key(b"\x01" * 32).address
    text = "\n".join(
        [
            f"https://{SIWE_DOMAIN} wants you to sign in with your Ethereum account:",
            address,
            "",
            "",
            "URI: https://shop.example",
            "Version: 1",
            "Chain ID: 31337",
            "Nonce: 0123456789abcdef",
            "Issued At: 2026-12-03T12:00:00.000Z",
            "Request ID: r-1",
            "Resources:",
            "- https://shop.example/orders",
        ]
    )
    parsed = parse_message(text)
    assert (parsed.domain, parsed.statement, parsed.request_id) == (SIWE_DOMAIN, None, "r-1")
    assert parsed.resources == ("https://shop.example/orders",)
    with pytest.raises(Exception, match="unexpected line"):
        parse_message(text + "\nExtra: line")


# ---------------------------------------------------------------------------------------- idempotency


def _merchant_body(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"idem-{n}",
        "name": f"Idem {n}",
        "address": "0x" + f"{n + 7_000:040x}",
        "fee_bps": 1,
        **fields,
    }


def test_a_retried_post_replays_the_first_answer_and_creates_once(
    gw: MerchantApp, admin: httpx.Client
) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = admin.post("/v1/merchants", json=_merchant_body(1), headers=key)
    assert first.status_code == 201, first.text
    second = admin.post("/v1/merchants", json=_merchant_body(1), headers=key)
    assert (second.status_code, second.json()) == (201, first.json())
    assert second.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    with gw.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Merchant).where(Merchant.id == "idem-1")) == 1

    changed = admin.post("/v1/merchants", json=_merchant_body(1, name="Other"), headers=key)
    assert_problem(changed, 409, "header.Idempotency-Key")
    # Without a key, the same request is a new one: the id is now taken.
    assert_problem(admin.post("/v1/merchants", json=_merchant_body(1)), 409, "id")


def test_an_error_is_stored_and_replayed_too(gw: MerchantApp, admin: httpx.Client) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    bad = _merchant_body(2, fee_bps=10_000)
    first = admin.post("/v1/merchants", json=bad, headers=key)
    assert_problem(first, 422, "fee_bps")
    replay = admin.post("/v1/merchants", json=bad, headers=key)
    assert (replay.status_code, replay.json(), replay.headers["Idempotent-Replayed"]) == (
        422,
        first.json(),
        "true",
    )
    with gw.sessions() as session:
        record = session.scalar(
            select(IdempotencyRecord).where(IdempotencyRecord.key == key["Idempotency-Key"])
        )
        assert record is not None and record.response_status == 422
        assert record.expires_at.replace(tzinfo=UTC) - record.created_at.replace(tzinfo=UTC) == timedelta(
            hours=24
        )


def test_a_stored_answer_is_sealed_and_a_new_account_key_cannot_replay_it(
    gw: MerchantApp, admin: httpx.Client
) -> None:
    """A new API key is in its creation's answer: a copy of the database must not hold it in clear,
    and a stored answer that no longer decrypts is a 409, never a second key."""
    from cardless.ledger.cipher import AccountCipher
    from gateway.services import idempotency

    merchant = admin.post("/v1/merchants", json=_merchant_body(7)).json()["id"]
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"name": "server", "scopes": ["orders:read"]}
    first = admin.post(f"/v1/merchants/{merchant}/keys", json=body, headers=key)
    assert first.status_code == 201, first.text
    secret = first.json()["key"]
    assert secret.startswith("ck_")
    replay = admin.post(f"/v1/merchants/{merchant}/keys", json=body, headers=key)
    assert (replay.json()["key"], replay.headers["Idempotent-Replayed"]) == (secret, "true")
    with gw.sessions() as session:
        record = session.scalar(
            select(IdempotencyRecord).where(IdempotencyRecord.key == key["Idempotency-Key"])
        )
        assert record is not None and record.response_body is not None
        assert secret.encode() not in record.response_body and b"ck_" not in record.response_body
        scope, print_ = record.scope, record.fingerprint

    other = AccountCipher(bytes(range(100, 132)))  # the account key rotated since
    assert isinstance(
        idempotency.claim(gw.sessions, other, scope, key["Idempotency-Key"], print_), idempotency.Unreadable
    )
    with gw.sessions() as session:
        record = session.scalar(
            select(IdempotencyRecord).where(IdempotencyRecord.key == key["Idempotency-Key"])
        )
        assert record is not None
        record.response_body = other.seal(b"{}", f"idempotency/{record.id}")
        session.commit()
    unreadable = admin.post(f"/v1/merchants/{merchant}/keys", json=body, headers=key)
    assert_problem(unreadable, 409, "header.Idempotency-Key")
    assert len(admin.get(f"/v1/merchants/{merchant}/keys").json()) == 1


def test_keys_are_scoped_to_their_sender(gw: MerchantApp, admin: httpx.Client) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    assert admin.post("/v1/merchants", json=_merchant_body(3), headers=key).status_code == 201
    with gw.client(**key) as anonymous:  # someone else with the same key replays nothing of the operator's
        assert_problem(anonymous.post("/v1/merchants", json=_merchant_body(3)), 401)


def test_concurrent_duplicates_create_one_resource(gw: MerchantApp, admin: httpx.Client) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    answers: list[httpx.Response] = []
    start = threading.Barrier(6)

    def post() -> None:
        with gw.client(**gw.operator, **key) as client:
            start.wait()
            answers.append(client.post("/v1/merchants", json=_merchant_body(4)))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(201) >= 1 and set(statuses) <= {201, 409}, statuses
    created = [a.json() for a in answers if a.status_code == 201]
    assert all(c == created[0] for c in created)
    with gw.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Merchant).where(Merchant.id == "idem-4")) == 1


def test_a_malformed_idempotency_key_is_422_naming_the_header(admin: httpx.Client) -> None:
    response = admin.post("/v1/merchants", json=_merchant_body(5), headers={"Idempotency-Key": "x" * 256})
    assert_problem(response, 422, "header.Idempotency-Key")
    assert admin.get("/v1/merchants/idem-5").status_code == 404


def test_credentials_are_checked_before_any_idempotency_key(gw: MerchantApp, admin: httpx.Client) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    assert admin.post("/v1/merchants", json=_merchant_body(6), headers=key).status_code == 201
    with gw.client("wrong-" + "k" * 40, **key) as wrong, gw.client(**key) as anonymous:
        # The same key with other parameters would be 409 for the operator; a stranger learns nothing.
        assert_problem(wrong.post("/v1/merchants", json=_merchant_body(7)), 401)
        assert_problem(anonymous.post("/v1/merchants", json=_merchant_body(7)), 401)


def test_a_path_served_by_two_routes_allows_both_methods(admin: httpx.Client) -> None:
    response = admin.delete("/v1/merchants")
    assert_problem(response, 405)
    assert response.headers["Allow"] == "GET, POST"
    assert admin.put("/v1/merchant/skus/genshin-60").headers["Allow"] == "GET, PATCH"


def test_expired_idempotency_records_are_purged_and_a_key_is_reusable_after_a_day(gw: MerchantApp) -> None:
    from gateway.services import idempotency

    now = datetime.now(UTC)
    cipher = gw.context.quotes.cipher
    first = idempotency.claim(gw.sessions, cipher, "test", "k-1", "print-a", now - timedelta(days=2))
    assert isinstance(first, idempotency.Claimed)
    idempotency.complete(gw.sessions, cipher, first.record_id, 201, {}, b"{}")
    # A day later the key is free again, even with other parameters.
    again = idempotency.claim(gw.sessions, cipher, "test", "k-1", "print-b", now)
    assert isinstance(again, idempotency.Claimed)
    old = idempotency.claim(gw.sessions, cipher, "test", "k-2", "print-a", now - timedelta(days=2))
    assert isinstance(old, idempotency.Claimed)
    assert idempotency.purge(gw.sessions, now) >= 1
    with gw.sessions() as session:
        keys = set(session.scalars(select(IdempotencyRecord.key).where(IdempotencyRecord.scope == "test")))
    assert keys == {"k-1"}


def test_the_anonymous_order_read_in_front_of_the_framework_answers_exactly_as_the_route(
    gw: MerchantApp,
) -> None:
    """gateway.api.order_status answers GET /v1/orders/{id} without credentials; a query string sends
    the same request to the FastAPI route, whose answer must be the same bytes and headers."""
    with gw.sessions.begin() as session:
        settled = add_order(
            session,
            state=OrderState.SETTLED,
            paid_tx="0x" + "a1" * 32,
            paid_block=12,
            settle_tx="0x" + "a2" * 32,
            receipt_hash="0x" + "a3" * 32,
            proof_signature="0x" + "a4" * 65,
            fulfilled_at=1_700_000_000,
        ).id
        refunding = add_order(session, state=OrderState.PAID, refund_reason=2, paid_tx="0x" + "b1" * 32).id
    with gw.client() as anonymous:
        for order_id in (settled, refunding, settled.upper().replace("0X", "0x")):
            fast = anonymous.get(f"/v1/orders/{order_id}")
            framework = anonymous.get(f"/v1/orders/{order_id}?via=framework")
            assert fast.status_code == framework.status_code == 200
            assert fast.content == framework.content
            assert [(k, v) for k, v in fast.headers.items() if k not in ("date", "server")] == [
                (k, v) for k, v in framework.headers.items() if k not in ("date", "server")
            ]
        body = anonymous.get(f"/v1/orders/{settled}").json()
        assert body["order_id"] == settled and body["state"] == "settled"
        assert body["proof"] == {
            "signature": "0x" + "a4" * 65,
            "fulfilled_at": 1_700_000_000,
            "receipt_hash": "0x" + "a3" * 32,
        }
        assert anonymous.get(f"/v1/orders/{refunding}").json()["proof"] is None
        # Not found, a malformed id, another method: the framework's problems, as before.
        assert_problem(anonymous.get("/v1/orders/0x" + "cd" * 32), 404, "order_id")
        assert_problem(anonymous.get("/v1/orders/0x" + "cd" * 31), 422)
        assert_problem(anonymous.delete(f"/v1/orders/{settled}"), 405)
    # Credentials of any kind are never passed over for the public view.
    with gw.client("not-a-key") as wrong:
        assert_problem(wrong.get(f"/v1/orders/{settled}"), 401)
    with gw.client(Cookie="session=x") as cookie:  # left to the framework, which reads no cookie here
        assert cookie.get(f"/v1/orders/{settled}").content == framework.content
