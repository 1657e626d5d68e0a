"""Orders through the embedded system: a quote paid from a dev wallet with the quote's own transactions,
followed through GET /v1/orders/{id} to settlement; a wrong payment and a late payment, which revert and
leave nothing recorded; provider callbacks, forged and replayed; the order and OpenAPI endpoints.

The test that moves the chain's clock (the expired quote) is last in this module: the chain stays ahead
of the wall clock for the rest of the session, which no later test depends on.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from web3 import Web3
from web3.logs import DISCARD

from adapters.simulator.signing import callback_signature
from cardless import protocol
from cardless.cli.system import System
from cardless.protocol import Fulfilment, OrderStatus
from gateway import services
from gateway.catalogue import load_catalogue
from tests.support.books import Books
from tests.support.shop import PROBLEM, Shop, assert_problem, dev_wallet

SETTLED_PATH = ["quoted", "paid", "risk_checked", "submitting", "succeeded", "proof_pending", "settled"]


def _books(shop: Shop, token: str, buyer: str, merchant: str) -> dict[str, int]:
    """The balances an order moves: the buyer's wallet, the merchant's money, the fees, the escrow's."""
    books = Books(shop.w3, shop.escrow)
    return {
        "buyer": books.wallet(token, buyer),
        "merchant": books.merchant(token, merchant),
        "fees": books.fees(token),
        "escrow": books.wallet(token, shop.escrow.address),
    }


def _order_status(shop: Shop, order_id: str) -> OrderStatus:
    return OrderStatus(shop.escrow.functions.orderStatus(bytes.fromhex(order_id[2:])).call())


# ---------------------------------------------------------------------------------------- settled


def test_quote_paid_with_its_own_transactions_settles_with_receipt_proof_and_timeline(
    shop: Shop, system: System
) -> None:
    buyer = dev_wallet(4)
    account = "20240601"
    response = shop.quote(buyer, sku="genshin-60", token="tUSDC", account=account)
    assert response.status_code == 201, response.text
    quote = response.json()
    order_id, token, amount = quote["order_id"], quote["order"]["token"], int(quote["order"]["amount"])
    merchant = quote["order"]["merchant"]
    before = _books(shop, token, buyer.address, merchant)

    paid = shop.pay(buyer, quote)  # approve, then pay: exactly what a wallet would send
    status = shop.wait_for(order_id, "settled")

    # The timeline: every state, in order, each with a reason and a UTC time.
    assert [e["to"] for e in status["timeline"]] == SETTLED_PATH
    assert [e["from"] for e in status["timeline"]] == [None, *SETTLED_PATH[:-1]]
    times = [datetime.fromisoformat(e["at"]) for e in status["timeline"]]
    assert all(t.utcoffset() == timedelta(0) for t in times)
    assert times == sorted(times)
    assert all(e["reason"] for e in status["timeline"])
    assert status["last_error"] is None
    assert status["refund_reason"] is None

    # Chain references: the pay transaction we sent, and the oracle's settle transaction.
    chain = status["chain"]
    assert chain["paid_tx"] == Web3.to_hex(paid["transactionHash"])
    assert chain["paid_block"] == paid["blockNumber"]
    assert chain["refund_tx"] is None
    settle = shop.w3.eth.get_transaction_receipt(chain["settle_tx"])
    assert settle["status"] == 1
    assert settle["to"] == shop.escrow.address
    (event,) = shop.escrow.events.OrderSettled().process_receipt(settle, errors=DISCARD)
    assert Web3.to_hex(event["args"]["orderId"]) == order_id
    assert Web3.to_hex(event["args"]["receiptHash"]) == status["receipt_hash"]
    assert event["args"]["fulfilledAt"] == status["proof"]["fulfilled_at"]
    assert {"purpose": "settle", "tx_hash": chain["settle_tx"], "state": "confirmed"}.items() <= next(
        t for t in chain["transactions"] if t["tx_hash"] == chain["settle_tx"]
    ).items()
    assert _order_status(shop, order_id) is OrderStatus.SETTLED

    # The receipt: what the provider credited, hashed canonically; the account only as its commitment.
    receipt = status["receipt"]
    commitment = Web3.to_hex(protocol.account_commitment(account, bytes.fromhex(quote["account_salt"][2:])))
    assert receipt == {
        "version": 1,
        "order_id": order_id,
        "provider": "simulator",
        "provider_ref": status["provider_ref"],
        "sku": "genshin-60",
        "credited": 60,
        "account_commitment": commitment,
        "completed_at": receipt["completed_at"],
    }
    assert status["account_commitment"] == quote["order"]["accountCommitment"] == commitment
    assert status["receipt_hash"] == Web3.to_hex(protocol.receipt_hash(receipt))
    assert account not in json.dumps(status)

    # The proof: an authorised oracle signer's EIP-712 signature over (order id, receipt hash, time).
    proof = status["proof"]
    fulfilment = Fulfilment(
        bytes.fromhex(order_id[2:]), bytes.fromhex(proof["receipt_hash"][2:]), proof["fulfilled_at"]
    )
    assert system.deployment is not None
    signer = protocol.recover_signer(
        protocol.fulfilment_typed_data(system.deployment.domain, fulfilment),
        bytes.fromhex(proof["signature"][2:]),
    )
    assert shop.escrow.functions.isOracleSigner(signer).call()

    # The money: the buyer paid the price; the merchant got it less the fee; the fee went to the fee balance.
    after = _books(shop, token, buyer.address, merchant)
    fee = amount * quote["order"]["feeBps"] // 10_000
    assert before["buyer"] - after["buyer"] == amount
    assert after["merchant"] - before["merchant"] == amount - fee
    assert after["fees"] - before["fees"] == fee

    # The provider credited the account exactly once.
    assert shop.credits(order_id) == 1
    points = shop.sim.get(f"/_sim/accounts/{account}").raise_for_status().json()["points"]
    assert points["genshin"] >= 60

    # Without credentials, the same order shows no more than the chain does.
    public = shop.api.get(f"/v1/orders/{order_id}")
    assert public.status_code == 200, public.text
    assert public.json() == {
        "order_id": order_id,
        "state": "settled",
        "chain": {k: chain[k] for k in ("paid_tx", "paid_block", "settle_tx", "refund_tx")},
        "receipt_hash": status["receipt_hash"],
        "proof": status["proof"],
        "refund_reason": None,
    }


def test_an_order_read_with_a_wrong_key_is_refused_not_downgraded(shop: Shop) -> None:
    order_id = shop.quote(dev_wallet(4)).json()["order_id"]
    wrong_key = shop.operator_headers["Authorization"][:-2] + "xx"
    for header in (wrong_key, "Basic b3BlcmF0b3I6c2VjcmV0", "Bearer", b"Bearer \xb2\xb2\xb2"):
        response = shop.api.get(f"/v1/orders/{order_id}", headers={"Authorization": header})
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "buyer" not in response.text
    # A quoted order's buyer is on no chain yet: the public view does not name it.
    public = shop.api.get(f"/v1/orders/{order_id}").json()
    assert public["state"] == "quoted" and "buyer" not in public and "timeline" not in public
    assert shop.order(order_id)["buyer"] == dev_wallet(4).address


def test_order_status_accepts_the_id_in_upper_case(shop: Shop) -> None:
    quote = shop.quote(dev_wallet(4)).json()
    upper = "0x" + quote["order_id"][2:].upper()
    assert shop.order(upper)["order_id"] == quote["order_id"]


# ---------------------------------------------------------------------------------------- wrong payments


def test_underpaid_native_order_reverts_and_nothing_is_recorded_until_paid_exactly(shop: Shop) -> None:
    buyer = dev_wallet(8)
    quote = shop.quote(buyer, sku="pubg-60uc", token="ETH").json()
    order_id, amount = quote["order_id"], int(quote["order"]["amount"])
    (pay,) = quote["transactions"]
    escrow_before = shop.eth_balance(shop.escrow.address)

    for wrong in (amount - 1, amount // 2, 0, amount + 1):
        revert = shop.revert_of(buyer, pay, value=wrong)
        assert revert.name == "IncorrectNativeAmount"
        assert revert.args_ == (bytes.fromhex(order_id[2:]), amount, wrong)

    buyer_before = shop.eth_balance(buyer.address)
    failed = shop.send(buyer, pay, value=amount - 1)
    assert failed["status"] == 0
    gas = int(failed["gasUsed"]) * int(failed["effectiveGasPrice"])
    assert shop.eth_balance(buyer.address) == buyer_before - gas  # only gas was spent
    assert shop.eth_balance(shop.escrow.address) == escrow_before
    assert _order_status(shop, order_id) is OrderStatus.NONE

    # The oracle sees the reverted transaction's block and records nothing for it.
    wait_for_watcher(shop, failed["blockNumber"])
    status = shop.order(order_id)
    assert status["state"] == "quoted"
    assert status["chain"]["paid_tx"] is None
    assert [e["to"] for e in status["timeline"]] == ["quoted"]

    # The same quote paid exactly still goes through: the failed attempt used nothing up.
    paid = shop.pay(buyer, quote)
    status = shop.wait_for(order_id, "settled")
    assert status["chain"]["paid_tx"] == Web3.to_hex(paid["transactionHash"])
    assert [e["to"] for e in status["timeline"]] == SETTLED_PATH
    assert status["provider"] == "simulator-md5"  # pubg-60uc's first provider
    assert shop.credits(order_id) == 1


def wait_for_watcher(shop: Shop, block: int, timeout: float = 10.0) -> None:
    """Until the oracle's chain cursor has passed ``block``."""
    from cardless.ledger.models import ChainCursor

    assert shop.system.sessions is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with shop.system.sessions() as session:
            cursors = session.query(ChainCursor).all()
            if cursors and min(c.block_number for c in cursors) >= block:
                return
        time.sleep(0.05)
    pytest.fail(f"the oracle did not reach block {block}")


# ---------------------------------------------------------------------------------------- callbacks


class CallbackRecorder:
    """Stands in for the simulator's callback sender: sends exactly what it would, and keeps a copy of
    each callback (timestamp, raw body, signature) with the gateway's answer."""

    def __init__(self, shop: Shop) -> None:
        assert shop.system.simulator is not None
        self.runtime = shop.system.simulator.runtime
        self.sent: list[dict[str, Any]] = []

    async def __call__(self, url: str, timestamp: str, raw: bytes, signature: str) -> None:
        headers = {
            "Content-Type": "application/json",
            "X-Sim-Timestamp": timestamp,
            "X-Sim-Signature": signature,
        }
        reply = await self.runtime.http.post(url, content=raw, headers=headers)
        self.sent.append(
            {"url": url, "raw": raw, "headers": headers, "status": reply.status_code, "body": reply.json()}
        )


def test_forged_and_replayed_callbacks_change_nothing(
    faults: Shop, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    shop = faults
    caplog.set_level(logging.WARNING, logger="gateway.services.callbacks")
    recorder = CallbackRecorder(shop)
    monkeypatch.setattr(recorder.runtime, "_post_callback", recorder)

    buyer = dev_wallet(9)
    quote = shop.quote(buyer, sku="genshin-60", token="tUSDC").json()
    order_id = quote["order_id"]
    # The provider completes this top-up asynchronously and calls back: first a forgery (same body,
    # signed with a wrong key), then the genuine callback, then the genuine one again.
    for mode in ("async", "forged_callback", "duplicate_callback"):
        shop.arm(mode, order_no=order_id, count=1)
    shop.pay(buyer, quote)
    status = shop.wait_for(order_id, "settled")
    deadline = time.monotonic() + 5
    while len(recorder.sent) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)

    forged, genuine, duplicate = recorder.sent
    assert forged["url"] == f"{shop.system.gateway_url}/v1/providers/simulator/callback"
    assert forged["raw"] == genuine["raw"] == duplicate["raw"]
    assert forged["status"] == 401
    assert "signature does not match" in forged["body"]["detail"]
    assert (genuine["status"], duplicate["status"]) == (200, 200)
    assert any(
        r.levelno == logging.WARNING and "rejected callback from simulator" in r.getMessage()
        for r in caplog.records
    )
    assert json.loads(genuine["raw"])["order_no"] == order_id

    # Replays after settlement: accepted (they are authentic), and change nothing.
    events = len(status["timeline"])
    for _ in range(2):
        replay = shop.api.post(
            "/v1/providers/simulator/callback", content=genuine["raw"], headers=genuine["headers"]
        )
        assert replay.status_code == 200, replay.text
        assert replay.json() == {"accepted": True}
    time.sleep(0.3)  # give the oracle a few ticks to (not) act on them
    again = shop.order(order_id)
    assert again["state"] == "settled"
    assert len(again["timeline"]) == events
    assert again["chain"]["settle_tx"] == status["chain"]["settle_tx"]
    assert shop.credits(order_id) == 1

    # A forgery built from the genuine callback: the body altered, or the signature.
    caplog.clear()
    tampered = genuine["raw"].replace(b'"credited":60', b'"credited":6000')
    assert tampered != genuine["raw"]
    for raw, headers in (
        (tampered, genuine["headers"]),
        (genuine["raw"], {**genuine["headers"], "X-Sim-Signature": "0" * 64}),
        (genuine["raw"], {"Content-Type": "application/json"}),
    ):
        response = shop.api.post("/v1/providers/simulator/callback", content=raw, headers=headers)
        assert_problem(response, 401)
    rejected = [r for r in caplog.records if "rejected callback from simulator" in r.getMessage()]
    assert len(rejected) == 3
    assert shop.order(order_id)["timeline"] == again["timeline"]


def test_a_replayed_callback_older_than_the_tolerance_is_refused(shop: Shop, system: System) -> None:
    """An authentic callback captured long ago and sent again: the signature is right, the time is not."""
    secret = next(m for m in system.simulator_config.merchants if m.id == "cardless-hmac").callback_secret
    stamp = str(int(time.time()) - 3_600)
    body = {
        "code": "OK",
        "order_no": "0x" + "ab" * 32,
        "status": "SUCCESS",
        "merchant_id": "cardless-hmac",
        "timestamp": int(stamp),
    }
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    headers = {"X-Sim-Timestamp": stamp, "X-Sim-Signature": callback_signature(secret, stamp, raw)}
    response = shop.api.post("/v1/providers/simulator/callback", content=raw, headers=headers)
    problem = assert_problem(response, 401)
    assert "tolerance" in problem["detail"]


def test_an_authentic_callback_for_an_order_we_do_not_have_is_404(
    shop: Shop, system: System, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.services.callbacks")
    secret = next(m for m in system.simulator_config.merchants if m.id == "cardless-hmac").callback_secret
    stamp = str(int(time.time()))
    unknown = "0x" + "cd" * 32
    body = {
        "code": "OK",
        "order_no": unknown,
        "provider_ref": "SIM9999999999",
        "status": "PROCESSING",
        "sku": "genshin-60",
        "account": "12345678",
        "credited": 0,
        "completed_at": None,
        "reason": None,
        "merchant_id": "cardless-hmac",
        "timestamp": int(stamp),
    }
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    headers = {"X-Sim-Timestamp": stamp, "X-Sim-Signature": callback_signature(secret, stamp, raw)}
    before = shop.counts()
    assert_problem(shop.api.post("/v1/providers/simulator/callback", content=raw, headers=headers), 404)
    assert shop.counts() == before
    assert any(unknown in r.getMessage() for r in caplog.records)


def test_callback_for_an_unknown_provider_is_404(shop: Shop) -> None:
    response = shop.api.post("/v1/providers/acme/callback", content=b"{}")
    body = assert_problem(response, 404, "provider")
    assert "acme" in body["detail"]


# ---------------------------------------------------------------------------------------- order endpoint


@pytest.mark.parametrize(
    "bad", ["0x12", "12" * 32, "0x" + "zz" * 32, "0x" + "ab" * 33, "order-1"], ids=lambda v: v[:12]
)
def test_order_id_that_is_not_32_bytes_of_hex_is_422_naming_it(shop: Shop, bad: str) -> None:
    body = assert_problem(shop.api.get(f"/v1/orders/{bad}"), 422)
    assert [e["field"] for e in body["errors"]] == ["path.order_id"]


def test_unknown_order_is_404_problem(shop: Shop) -> None:
    unknown = "0x" + "ef" * 32
    response = shop.api.get(f"/v1/orders/{unknown}")
    body = assert_problem(response, 404, "order_id")
    assert body["title"] == "Not Found"
    assert unknown in body["detail"]


def test_health_reports_chain_database_and_deployment_only(shop: Shop, system: System) -> None:
    health = shop.api.get("/v1/health").raise_for_status().json()
    assert set(health) == {"status", "chain", "database", "deployment", "simulator", "processes"}
    assert health["status"] == "ok"
    # Children's states only from `cardless run` (tests/cli/test_supervision.py); this system has none.
    assert health["processes"] is None
    assert health["chain"] == {"ok": True, "block": health["chain"]["block"]}
    assert health["deployment"]["escrow"] == shop.escrow.address
    assert health["database"] == {"ok": True}
    assert system.deployment is not None
    assert health["deployment"] == system.deployment.model_dump(mode="json")  # the file, every field
    assert system.simulator is not None
    assert health["simulator"] == system.simulator.url


def test_health_of_a_dead_chain_says_degraded_and_nothing_of_why(system: System) -> None:
    assert system.sessions is not None and system.deployment is not None
    dead = Web3(Web3.HTTPProvider("http://user:hunter2@127.0.0.1:9/rpc", request_kwargs={"timeout": 2}))
    with system.sessions() as session:
        health = services.check_health(session, dead, system.deployment, None)
    assert health.status == "degraded"
    assert health.chain.model_dump() == {"ok": False, "block": None}
    assert "hunter2" not in health.model_dump_json()
    assert health.simulator is None


def test_health_names_the_nodes_url_only_when_told_to(system: System) -> None:
    """Outside development the node's URL (often with a provider's API key in it) is not public."""
    assert system.sessions is not None and system.deployment is not None and system.w3 is not None
    secret = system.deployment.model_copy(update={"rpc_url": "https://rpc.example/v3/apikey123"})
    with system.sessions() as session:
        hidden = services.check_health(session, system.w3, secret, None)
        told = services.check_health(session, system.w3, secret, None, "https://public.example/rpc")
    assert hidden.deployment.rpc_url is None and "apikey123" not in hidden.model_dump_json()
    assert told.deployment.rpc_url == "https://public.example/rpc"


def test_openapi_document_lists_the_routes(shop: Shop) -> None:
    response = shop.api.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "Cardless gateway"
    paths = document["paths"]
    assert {
        "/v1/catalogue": {"get"},
        "/v1/quotes": {"post"},
        "/v1/orders/{order_id}": {"get"},
        "/v1/providers/{provider}/callback": {"post"},
        "/v1/health": {"get"},
    }.items() <= {path: set(item) for path, item in paths.items()}.items()
    # The merchants' side (tests/gateway/test_openapi_contract.py lists every operation id).
    assert {"/v1/merchants", "/v1/merchant/skus", "/v1/orders", "/v1/auth/siwe"} <= set(paths)
    schema = document["components"]["schemas"]["QuoteCreate"]
    assert set(schema["required"]) == {"sku", "account", "token", "buyer"}
    assert shop.api.get("/docs").status_code == 200


def test_errors_are_problem_json(shop: Shop) -> None:
    response = shop.api.get("/v1/no-such-route")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    assert shop.api.delete("/v1/quotes").status_code == 405


# ---------------------------------------------------------------------------------------- expired (last)


def test_expired_quote_cannot_be_paid_and_the_oracle_expires_it(shop: Shop, system: System) -> None:
    buyer = dev_wallet(5)
    quote = shop.quote(buyer, sku="genshin-60", token="ETH").json()
    order_id, expiry = quote["order_id"], quote["order"]["quoteExpiry"]
    (pay,) = quote["transactions"]
    escrow_before = shop.eth_balance(shop.escrow.address)
    buyer_before = shop.eth_balance(buyer.address)

    shop.warp(expiry - shop.chain_now() + 1)  # the chain is one second past the quote's expiry
    revert = shop.revert_of(buyer, pay)
    assert revert.name == "QuoteExpired"
    order, quoted_expiry, timestamp = revert.args_
    assert (Web3.to_hex(order), quoted_expiry) == (order_id, expiry)
    assert timestamp > expiry

    failed = shop.send(buyer, pay)
    assert failed["status"] == 0
    gas = int(failed["gasUsed"]) * int(failed["effectiveGasPrice"])
    assert shop.eth_balance(buyer.address) == buyer_before - gas
    assert shop.eth_balance(shop.escrow.address) == escrow_before
    assert _order_status(shop, order_id) is OrderStatus.NONE

    # The oracle closes quotes that can no longer be paid (after a grace period for a payment already
    # in flight), so an unpaid order does not stay open forever.
    shop.warp(120)
    status = shop.wait_for(order_id, "expired")
    assert [(e["from"], e["to"]) for e in status["timeline"]] == [(None, "quoted"), ("quoted", "expired")]
    assert status["timeline"][-1]["reason"] == "quote expired unpaid"
    assert status["chain"]["paid_tx"] is None
    assert shop.credits(order_id) == 0
    assert shop.eth_balance(shop.escrow.address) == escrow_before

    # A fresh quote is priced against the new chain time and is payable again.
    catalogue = load_catalogue(system.settings.catalogue_file)
    sku = catalogue.sku("genshin-60")
    assert sku is not None
    fresh = shop.quote(buyer, sku="genshin-60", token="ETH").json()
    assert fresh["order"]["quoteExpiry"] > shop.chain_now()
    assert int(fresh["order"]["amount"]) == sku.prices["ETH"]
