"""POST /v1/quotes against the embedded system: the signed quote, and every way a quote is refused.

A refused quote is a clear problem+json naming the field at fault (or, for a provider outage, a 503
with the reason and Retry-After) and leaves nothing behind: no order row, no timeline event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from sqlalchemy import make_url
from web3 import HTTPProvider, Web3

from cardless import protocol
from cardless.cli.keys import KEYSTORE_FILES
from cardless.cli.system import System
from cardless.protocol import NATIVE_TOKEN
from gateway.catalogue import load_catalogue
from tests.support.shop import Shop, assert_problem, dev_wallet

BUYER = dev_wallet(3)
# ---------------------------------------------------------------------------------------- issued


def test_quote_is_signed_by_an_authorised_quote_signer_over_the_returned_eip712_payload(shop: Shop) -> None:
    response = shop.quote(BUYER, sku="genshin-60", token="tUSDC")
    assert response.status_code == 201, response.text
    quote = response.json()

    # The payload is complete EIP-712 typed data: a wallet or eth-account verifies it without Cardless code.
    typed = quote["eip712"]
    assert typed["primaryType"] == "Order"
    assert set(typed["types"]) == {"EIP712Domain", "Order"}
    assert typed["domain"] == {
        "name": "CardlessEscrow",
        "version": "2",
        "chainId": shop.chain_id,
        "verifyingContract": shop.escrow.address,
    }
    signature = bytes.fromhex(quote["quote_signature"][2:])
    assert protocol.recover_signer(encode_typed_data(full_message=typed), signature) == quote["quote_signer"]
    assert shop.escrow.functions.isQuoteSigner(quote["quote_signer"]).call()

    # ... and it is the order the contract will hash: same digest on chain.
    order = quote["order"]
    assert typed["message"] == order
    as_tuple = (
        order["orderId"],
        order["buyer"],
        order["merchant"],
        order["token"],
        int(order["amount"]),
        order["feeBps"],
        order["quoteExpiry"],
        order["fulfilmentDeadline"],
        order["skuHash"],
        order["accountCommitment"],
    )
    signable = encode_typed_data(full_message=typed)
    digest = keccak(b"\x19" + signable.version + signable.header + signable.body)
    assert shop.escrow.functions.quoteDigest(as_tuple).call() == digest


def test_quote_binds_the_catalogue_price_merchant_sku_and_deadlines(shop: Shop, system: System) -> None:
    before = shop.chain_now()
    quote = shop.quote(BUYER, sku="genshin-300", token="tUSDC").json()
    order = quote["order"]
    catalogue = load_catalogue(system.settings.catalogue_file)
    sku = catalogue.sku("genshin-300")
    assert sku is not None
    merchant = catalogue.merchant(sku.merchant)

    assert order["orderId"] == quote["order_id"]
    assert order["buyer"] == BUYER.address
    assert order["merchant"] == merchant.address
    assert order["feeBps"] == merchant.fee_bps
    assert order["amount"] == str(sku.prices["tUSDC"]) == "4990000"  # an integer string, base units
    tusdc = next(t for t in system.deployment.tokens if t.symbol == "tUSDC")  # type: ignore[union-attr]
    assert order["token"] == tusdc.address
    assert quote["token"] == {"symbol": "tUSDC", "address": tusdc.address, "decimals": 6}
    assert order["skuHash"] == Web3.to_hex(keccak(text="genshin-300"))
    ttl, window = system.settings.quote_ttl_seconds, system.settings.fulfilment_window_seconds
    assert before + ttl <= order["quoteExpiry"] <= shop.chain_now() + ttl
    assert order["fulfilmentDeadline"] - order["quoteExpiry"] == window - ttl


def test_quote_commits_to_the_account_with_the_returned_salt_and_stores_it_encrypted(
    shop: Shop, system: System
) -> None:
    # Surrounding whitespace is not part of the account: it is trimmed before the commitment.
    quote = shop.quote(BUYER, account="  12345678 ").json()
    salt = bytes.fromhex(quote["account_salt"][2:])
    assert len(salt) == 32
    commitment = Web3.to_hex(protocol.account_commitment("12345678", salt))
    assert quote["order"]["accountCommitment"] == commitment

    row = shop.row(quote["order_id"])
    assert row is not None
    assert row.state == "quoted"
    assert row.account_commitment == commitment
    assert system.cipher is not None
    assert system.cipher.salt(row.id) == salt  # derived from the account key, not stored
    assert b"12345678" not in row.account_ciphertext
    assert system.cipher is not None
    assert system.cipher.decrypt(row.account_ciphertext, row.id) == "12345678"
    assert row.quote_signature == quote["quote_signature"]
    # Written with plain INSERTs: every column as the ledger's constructor and defaults make it.
    order = quote["order"]
    assert (row.amount, row.fee_bps, row.quote_expiry, row.fulfilment_deadline) == (
        int(order["amount"]),
        order["feeBps"],
        order["quoteExpiry"],
        order["fulfilmentDeadline"],
    )
    assert (row.buyer, row.merchant, row.token, row.sku_hash) == (
        order["buyer"],
        order["merchant"],
        order["token"],
        order["skuHash"],
    )
    assert (row.chain_id, row.escrow, row.sku) == (shop.chain_id, shop.escrow.address, "genshin-60")
    assert (row.provider_index, row.attempts, row.providers[0]) == (0, 0, "simulator")
    assert row.created_at is not None and row.updated_at is not None and row.account_hash is not None
    status = shop.order(quote["order_id"])
    assert status["state"] == "quoted"
    assert [(e["from"], e["to"]) for e in status["timeline"]] == [(None, "quoted")]
    assert status["timeline"][0]["reason"] == "quote issued; account validated by simulator"


def test_a_copy_of_the_database_alone_cannot_confirm_the_account_the_buyer_can(
    shop: Shop, system: System, tmp_path: Path
) -> None:
    """Brute force over candidate accounts needs the salt: nothing in the database file holds it.

    The copy is what an attacker who reads the file gets; every value of every column of every table
    is tried as the salt (and every 32-byte window of every binary value), with the *true* account:
    none reproduces the commitment. The buyer, with the salt from the quote, does."""
    account = "87654321"
    quote = shop.quote(BUYER, account=account).json()
    salt = bytes.fromhex(quote["account_salt"][2:])
    commitment = bytes.fromhex(quote["order"]["accountCommitment"][2:])
    assert protocol.account_commitment(account, salt) == commitment  # the buyer can

    database = Path(make_url(system.settings.effective_database_url).database or "")
    for name in (database, Path(f"{database}-wal")):  # the raw files, WAL included
        if name.exists():
            raw = name.read_bytes()
            assert salt not in raw and salt.hex().encode() not in raw, name
    copy = tmp_path / "copy.db"
    with sqlite3.connect(database) as source, sqlite3.connect(copy) as target:
        source.backup(target)

    candidates: set[bytes] = set()
    found_order = False
    with sqlite3.connect(copy) as connection:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                found_order |= quote["order_id"] in row
                for value in row:
                    data = value if isinstance(value, bytes) else str(value).encode()
                    assert salt not in data and salt.hex().encode() not in data.lower(), (table, value)
                    text_value = data.decode("latin-1").removeprefix("0x")
                    if len(text_value) == 64:
                        with contextlib.suppress(ValueError):
                            candidates.add(bytes.fromhex(text_value))
                    candidates.update(data[i : i + 32] for i in range(max(len(data) - 31, 0)))
    assert found_order  # the scan did see the order
    assert commitment.hex() in {c.hex() for c in candidates}  # ... and its commitment, as a control
    assert all(protocol.account_commitment(account, c) != commitment for c in candidates)


def test_the_files_the_system_created_are_owner_only(shop: Shop, system: System) -> None:
    shop.quote(BUYER)  # the database has been written: its -wal and -shm exist
    settings = system.settings
    database = Path(make_url(settings.effective_database_url).database or "")
    keys = settings.effective_keystore_dir
    directories = [settings.var_dir, keys, database.parent]
    files = [
        keys / "password",
        *(keys / name for name in KEYSTORE_FILES.values()),
        settings.account_key_file,
        database,
        Path(f"{database}-wal"),
        Path(f"{database}-shm"),
    ]
    modes = {str(p): stat.S_IMODE(p.stat().st_mode) for p in [*directories, *files]}
    assert modes == {**{str(d): 0o700 for d in directories}, **{str(f): 0o600 for f in files}}


def test_token_quote_carries_approve_then_pay_calldata(shop: Shop) -> None:
    quote = shop.quote(BUYER, token="tUSDC").json()
    approve, pay = quote["transactions"]
    token = shop.w3.eth.contract(address=quote["token"]["address"], abi=shop.erc20_abi)
    function, args = token.decode_function_input(approve["data"])
    assert (approve["step"], approve["to"], approve["value"]) == ("approve", quote["token"]["address"], "0")
    assert function.fn_name == "approve"
    assert (args["spender"], args["value"]) == (shop.escrow.address, 990_000)

    function, args = shop.escrow.decode_function_input(pay["data"])
    assert (pay["step"], pay["to"], pay["value"]) == ("pay", shop.escrow.address, "0")
    assert function.fn_name == "pay"
    assert args["quoteSigner"] == quote["quote_signer"]
    assert Web3.to_hex(args["quoteSignature"]) == quote["quote_signature"]
    assert Web3.to_hex(args["order"]["orderId"]) == quote["order_id"]
    assert args["order"]["amount"] == 990_000
    assert quote["permit"]["spender"] == shop.escrow.address
    assert quote["permit"]["value"] == "990000"


def test_native_quote_pays_the_exact_amount_in_one_transaction(shop: Shop) -> None:
    quote = shop.quote(BUYER, sku="pubg-60uc", token="ETH").json()
    assert quote["order"]["token"] == NATIVE_TOKEN
    assert quote["token"] == {"symbol": "ETH", "address": NATIVE_TOKEN, "decimals": 18}
    (pay,) = quote["transactions"]
    assert (pay["step"], pay["to"], pay["value"]) == ("pay", shop.escrow.address, "330000000000000")
    assert quote["permit"] is None


def test_each_quote_is_a_new_order(shop: Shop) -> None:
    first, second = (shop.quote(BUYER).json() for _ in range(2))
    assert first["order_id"] != second["order_id"]
    assert first["account_salt"] != second["account_salt"]
    assert first["order"]["accountCommitment"] != second["order"]["accountCommitment"]


# ---------------------------------------------------------------------------------------- bad input


GOOD = {"sku": "genshin-60", "account": "12345678", "token": "tUSDC", "buyer": BUYER.address}


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        pytest.param({"sku": "genshin-9999"}, 404, "sku", id="unknown-sku"),
        pytest.param({"sku": ""}, 422, "sku", id="empty-sku"),
        pytest.param({"sku": "genshin-980", "token": "ETH"}, 422, "token", id="token-not-sold-for-sku"),
        pytest.param({"token": "DOGE"}, 422, "token", id="unknown-token"),
        pytest.param({"buyer": "0x12"}, 422, "buyer", id="short-buyer"),
        pytest.param({"buyer": "alice.eth"}, 422, "buyer", id="ens-name-buyer"),
        # Mixed case with a wrong EIP-55 checksum is a typo, not an address.
        pytest.param(
            {"buyer": BUYER.address[:-1] + ("a" if BUYER.address[-1] != "a" else "b")},
            422,
            "buyer",
            id="bad-checksum-buyer",
        ),
        pytest.param({"account": ""}, 422, "account", id="empty-account"),
        pytest.param({"account": "   "}, 422, "account", id="blank-account"),
        pytest.param({"account": "1" * 65}, 422, "account", id="too-long-account"),
        pytest.param({"account": "1234\x005678"}, 422, "account", id="nul-in-account"),
        pytest.param({"account": "1234\n5678"}, 422, "account", id="newline-in-account"),
        pytest.param({"account": "1234\u200b5678"}, 422, "account", id="zero-width-space-in-account"),
        pytest.param({"account": 12345678}, 422, "account", id="account-not-a-string"),
        pytest.param({"colour": "red"}, 422, "colour", id="unknown-field"),
    ],
)
def test_bad_input_is_a_problem_naming_the_field_and_writes_nothing(
    shop: Shop, change: dict[str, Any], status: int, field: str
) -> None:
    before = shop.counts()
    response = shop.api.post("/v1/quotes", json={**GOOD, **change})
    assert_problem(response, status, field)
    assert shop.counts() == before


@pytest.mark.parametrize("missing", ["sku", "account", "token", "buyer"])
def test_missing_field_is_named(shop: Shop, missing: str) -> None:
    before = shop.counts()
    body = {k: v for k, v in GOOD.items() if k != missing}
    assert_problem(shop.api.post("/v1/quotes", json=body), 422, missing)
    assert shop.counts() == before


def test_a_body_that_is_not_json_is_a_problem_about_the_body(shop: Shop) -> None:
    before = shop.counts()
    response = shop.api.post("/v1/quotes", content=b"{not json", headers={"content-type": "application/json"})
    assert_problem(response, 422, "body")
    assert shop.counts() == before


@pytest.mark.parametrize(
    "account",
    [
        pytest.param("abc", id="letters"),
        pytest.param("123", id="too-short"),
        pytest.param("1234567890123", id="too-long-for-the-provider"),
        pytest.param("12345-678", id="punctuation"),
        pytest.param("99999999", id="banned"),
    ],
)
def test_account_the_provider_rejects_is_422_on_account_and_writes_no_order(shop: Shop, account: str) -> None:
    """The provider files declare 5 to 12 ASCII digits (the gateway refuses other shapes before asking);
    the simulator also refuses banned accounts (99999999)."""
    before = shop.counts()
    body = assert_problem(shop.quote(BUYER, account=account), 422, "account")
    assert "genshin-60" in body["detail"]
    assert shop.counts() == before


def test_mistyped_account_of_a_valid_shape_is_accepted_and_shows_the_providers_nickname(shop: Shop) -> None:
    """A typo that still looks like an account (12345679 for 12345678) cannot be caught by format: the
    simulator, like a real publisher, accepts any well-formed account that is not banned, and answers
    with the player's nickname (``player_`` + the last four characters). The quote passes that nickname
    on, so the buyer can see whose account will be credited before paying."""
    quote = shop.quote(BUYER, account="12345679").json()
    assert quote["account_check"] == {
        "account": "12345679",
        "provider": "simulator",
        "nickname": "player_5679",
    }
    intended = shop.quote(BUYER, account="12345678").json()
    assert intended["account_check"]["nickname"] == "player_5678"


# ---------------------------------------------------------------------------------------- providers


@pytest.mark.parametrize(
    ("typed", "understood"),
    [
        pytest.param("\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19", "123456789", id="full-width"),
        pytest.param(
            "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669", "123456789", id="arabic-indic"
        ),
        pytest.param("1234\u200d56789", "123456789", id="zero-width-joiner"),
    ],
)
def test_look_alike_account_is_refused_showing_what_was_understood(
    shop: Shop, typed: str, understood: str
) -> None:
    """Full-width 123456789 was quoted, paid and topped up to that string while the buyer's account
    123456789 got nothing. Now the buyer is told what we read, and confirms by sending it."""
    before = shop.counts()
    body = assert_problem(shop.quote(BUYER, account=typed), 422, "account")
    assert f"send exactly '{understood}'" in body["detail"]
    assert shop.counts() == before
    confirmed = shop.quote(BUYER, account=understood)
    assert confirmed.status_code == 201, confirmed.text
    assert confirmed.json()["account_check"]["account"] == understood


def test_quote_returns_the_trimmed_account_it_committed_to(shop: Shop) -> None:
    quote = shop.quote(BUYER, account=" 12345678\t ").json()
    assert quote["account_check"]["account"] == "12345678"
    salt = bytes.fromhex(quote["account_salt"][2:])
    assert quote["order"]["accountCommitment"] == Web3.to_hex(protocol.account_commitment("12345678", salt))


@pytest.mark.parametrize("who", ["zero", "escrow", "token"])
def test_an_address_that_cannot_pay_is_refused_as_buyer(shop: Shop, system: System, who: str) -> None:
    deployment = system.deployment
    assert deployment is not None
    address = {
        "zero": "0x" + "0" * 40,
        "escrow": deployment.escrow,
        "token": next(t.address for t in deployment.tokens if not t.is_native),
    }[who]
    before = shop.counts()
    for spelled in (address, address.lower()):
        assert_problem(shop.quote(spelled), 422, "buyer")
    assert shop.counts() == before


def test_provider_down_is_503_with_the_reason_and_retry_after_and_writes_nothing(faults: Shop) -> None:
    """Of the simulator's faults, ``error_5xx_before_commit``, ``timeout`` and ``latency`` act on every
    /api/v1 request, validate included (docs/design/simulator-api.md); the others act on top-ups only.
    A 5xx is used here: ``timeout`` would hold each validate for the adapter's 10 s read timeout."""
    # Both providers of genshin-60 are the simulator (two merchant accounts): a 5xx on every validate
    # for the SKU makes both unreachable.
    faults.arm("error_5xx_before_commit", sku="genshin-60")
    before = faults.counts()
    response = faults.quote(BUYER, sku="genshin-60")
    body = assert_problem(response, 503)
    assert int(response.headers["retry-after"]) > 0
    assert "simulator: validate: HTTP 500" in body["detail"]
    assert "simulator-md5: validate: HTTP 500" in body["detail"]
    assert faults.counts() == before

    faults.clear_faults()
    assert faults.quote(BUYER, sku="genshin-60").status_code == 201


def test_first_provider_down_the_second_validates_and_comes_first_in_the_order(faults: Shop) -> None:
    faults.arm("error_5xx_before_commit", sku="genshin-60", count=1)  # only the first validate fails
    response = faults.quote(BUYER, sku="genshin-60")
    assert response.status_code == 201, response.text
    quote = response.json()
    assert quote["account_check"]["provider"] == "simulator-md5"
    row = faults.row(quote["order_id"])
    assert row is not None
    assert row.providers == ["simulator-md5", "simulator"]


def test_sold_out_sku_is_503_and_writes_nothing(shop: Shop) -> None:
    before = shop.counts()
    response = shop.quote(BUYER, sku="pubg-660uc", token="tUSDC")
    body = assert_problem(response, 503)
    assert "out_of_stock" in body["detail"]
    assert "retry-after" in response.headers
    assert shop.counts() == before


# ---------------------------------------------------------------------------------------- chain time


class _CountingProvider(HTTPProvider):
    """The node's own JSON-RPC over HTTP, counting the calls made."""

    calls = 0

    def make_request(self, method: Any, params: Any) -> Any:
        type(self).calls += 1
        return super().make_request(method, params)


def test_the_chain_time_is_reused_for_its_ttl_and_read_again_after(system: System) -> None:
    """Quotes are priced from the chain's time; outside development a read serves the quotes of the
    next second (``CARDLESS_CHAIN_TIME_CACHE_SECONDS``), and a reused time is never newer than the node's."""
    assert system.gateway_context is not None and system.deployment is not None
    w3 = Web3(_CountingProvider(system.deployment.rpc_url))
    quotes = dataclasses.replace(system.gateway_context.quotes, w3=w3, chain_time_ttl=0.3)
    node_now = int(system.w3.eth.get_block("latest")["timestamp"]) if system.w3 else 0
    first = asyncio.run(quotes._now())
    second = asyncio.run(quotes._now())
    assert _CountingProvider.calls == 1
    assert node_now <= first == second <= int(w3.eth.get_block("latest")["timestamp"])
    time.sleep(0.35)
    asyncio.run(quotes._now())
    assert _CountingProvider.calls == 3  # the get_block above, and a new read once the TTL ran out
    fresh = dataclasses.replace(quotes, chain_time_ttl=0.0)
    asyncio.run(fresh._now())
    asyncio.run(fresh._now())
    assert _CountingProvider.calls == 5  # development's default: every quote reads the node

    async def together() -> list[int]:
        return list(await asyncio.gather(*(quotes._now() for _ in range(12))))

    time.sleep(0.35)
    times = asyncio.run(together())
    assert _CountingProvider.calls == 6  # twelve quotes found the time stale at once: one read
    assert len(set(times)) == 1 and times[0] >= first


# ------------------------------------------------------------------- in front of the framework


def _headers(response: Any) -> list[tuple[str, str]]:
    """Names and values in order; a RateLimit value's remaining count and reset blanked (each request
    counts one, and a second may pass between two)."""
    counted = ("ratelimit", "ratelimit-remaining", "ratelimit-reset")
    return [
        (k, "" if k in counted else v) for k, v in response.headers.items() if k not in ("date", "server")
    ]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"sku": "genshin-9999"}, id="404-unknown-sku"),
        pytest.param({"sku": "genshin-980", "token": "ETH"}, id="422-token-not-sold"),
        pytest.param({"token": "DOGE"}, id="422-unknown-token"),
        pytest.param(
            {"buyer": BUYER.address[:-1] + ("a" if BUYER.address[-1] != "a" else "b")}, id="422-checksum"
        ),
        pytest.param({"buyer": "0x" + "00" * 20}, id="422-zero-address"),
        pytest.param({"account": "99999999"}, id="422-provider-refuses-the-account"),
        pytest.param({"account": "   "}, id="422-blank-account"),
        pytest.param({"sku": ""}, id="422-schema-framework"),
        pytest.param({"colour": "red"}, id="422-unknown-field-framework"),
    ],
)
def test_the_quote_path_in_front_of_the_framework_refuses_exactly_as_the_route(
    shop: Shop, change: dict[str, Any]
) -> None:
    """gateway.api.quote_creation answers POST /v1/quotes; a query string sends the same request to the
    FastAPI route. A refusal is the same status, headers and bytes either way."""
    body = {**GOOD, **change}
    fast = shop.api.post("/v1/quotes", json=body)
    framework = shop.api.post("/v1/quotes?via=framework", json=body)
    assert fast.status_code == framework.status_code and fast.status_code in (404, 422)
    assert fast.content == framework.content
    assert _headers(fast) == _headers(framework)


def test_the_quote_path_in_front_of_the_framework_issues_the_routes_answer(shop: Shop) -> None:
    fast = shop.api.post("/v1/quotes", json=GOOD)
    framework = shop.api.post("/v1/quotes?via=framework", json=GOOD)
    assert fast.status_code == framework.status_code == 201
    assert _headers(fast) == _headers(framework)
    assert [k for k, _ in _headers(fast)][:2] == ["content-length", "content-type"]
    assert "ratelimit-policy" in fast.headers
    one, other = fast.json(), framework.json()
    # The same document but for what is new in every quote (the order id, its salt, signature and
    # commitment); serialised the same way (compact, keys in the model's order).
    fresh = ("orderId", "accountCommitment", "order_id", "account_salt", "quote_signature", "data")

    def same(a: Any, b: Any) -> None:
        if isinstance(a, dict):
            assert list(a) == list(b)
            for k in a:
                if k not in fresh:
                    same(a[k], b[k])
        elif isinstance(a, list):
            assert len(a) == len(b)
            for x, y in zip(a, b, strict=True):
                same(x, y)
        else:
            assert a == b

    same(one, other)
    for response in (fast, framework):
        assert response.content == json.dumps(response.json(), separators=(",", ":")).encode()
    # Not JSON, another media type, an empty body: the framework's own answers.
    assert_problem(
        shop.api.post("/v1/quotes", content=b"{not json", headers={"content-type": "application/json"}),
        422,
        "body",
    )
    assert (
        shop.api.post(
            "/v1/quotes", content=json.dumps(GOOD).encode(), headers={"content-type": "text/plain"}
        ).status_code
        == 422
    )
    assert_problem(shop.api.post("/v1/quotes"), 422)
    assert_problem(shop.api.put("/v1/quotes", json=GOOD), 405)


def test_a_retried_quote_is_replayed_through_the_path_in_front_of_the_framework(shop: Shop) -> None:
    before = shop.counts()
    headers = {"Idempotency-Key": f"quote-{time.time_ns()}"}
    first = shop.api.post("/v1/quotes", json=GOOD, headers=headers)
    again = shop.api.post("/v1/quotes", json=GOOD, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["order_id"] == first.json()["order_id"]
    assert shop.counts()[0] == before[0] + 1  # one order, created once
