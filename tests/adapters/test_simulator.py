"""The simulated provider, started as a real HTTP server (uvicorn on a free loopback port) and driven with
a real httpx client; callbacks land on a second real server (the stdlib's ThreadingHTTPServer)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from adapters.simulator import SimulatorConfig, SimulatorServer, create_app, default_config, load_config
from adapters.simulator._state import SimulatorState
from adapters.simulator.signing import (
    UnsignableValueError,
    sign,
    sign_string,
    signed,
    verify_callback,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Merchant:
    id: str
    secret: str
    scheme: Any
    callback_secret: str


HMAC = Merchant("cardless-hmac", "sim-hmac-secret", "hmac-sha256", "sim-hmac-callback-secret")
MD5 = Merchant("cardless-md5", "sim-md5-secret", "md5-sorted-params", "sim-md5-callback-secret")
ACCOUNT = "123456789"
MD5_BALANCE = 1_000  # below genshin-980's cost, so INSUFFICIENT_BALANCE needs no fault


def _config() -> SimulatorConfig:
    base = default_config()
    merchants = tuple(
        m.model_copy(update={"balance_cents": MD5_BALANCE}) if m.id == MD5.id else m for m in base.merchants
    )
    return base.model_copy(update={"merchants": merchants, "async_delay_ms": 250, "timeout_hold_s": 5.0})


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(_config()) as server:
        yield server


# httpx builds a TLS context (~25 ms, the CA bundle read again) for every client made without one.
TLS = httpx.create_ssl_context()


@pytest.fixture
def client(sim: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=5.0, verify=TLS) as http:
        assert http.post("/_sim/reset").json() == {"code": "OK"}
        yield http


def call(
    http: httpx.Client, path: str, merchant: Merchant = HMAC, *, ts: int | None = None, **fields: Any
) -> httpx.Response:
    body = {"merchant_id": merchant.id, "timestamp": int(time.time()) if ts is None else ts, **fields}
    return http.post(f"/api/v1/{path}", json=signed(body, merchant.secret, merchant.scheme))


def topup(
    http: httpx.Client, order_no: str, sku: str = "genshin-60", merchant: Merchant = HMAC, **extra: Any
) -> Any:
    reply = call(
        http, "topup", merchant, order_no=order_no, sku=sku, account=extra.pop("account", ACCOUNT), **extra
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def query(http: httpx.Client, merchant: Merchant = HMAC, **by: Any) -> Any:
    return call(http, "query", merchant, **by).json()


def credits(http: httpx.Client) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = http.get("/_sim/ledger").json()["credits"]
    return entries


def balance(http: httpx.Client, merchant: Merchant = HMAC) -> int:
    value: int = call(http, "balance", merchant).json()["balance"]
    return value


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def arm(http: httpx.Client, mode: str, **options: Any) -> None:
    assert http.post("/_sim/faults", json={"mode": mode, **options}).status_code == 200


# -- signing -----------------------------------------------------------------------------------------


def test_sign_string_sorts_keys_bytewise_and_leaves_out_empty_values() -> None:
    fields = {"b": "2", "a": 10, "B": "x", "empty": "", "none": None, "sign": "ignored"}
    assert sign_string(fields) == "B=x&a=10&b=2"


def test_both_schemes_match_digests_computed_from_the_spec() -> None:
    fields = {"merchant_id": "m", "timestamp": 1700000000, "sku": "genshin-60"}
    base = b"merchant_id=m&sku=genshin-60&timestamp=1700000000"
    assert sign(fields, "k", "hmac-sha256") == hmac.new(b"k", base, hashlib.sha256).hexdigest()
    assert sign(fields, "k", "md5-sorted-params") == hashlib.md5(base + b"&key=k").hexdigest().upper()


@pytest.mark.parametrize("value", [True, 1.5, [1], {"a": 1}])
def test_values_without_an_agreed_rendering_cannot_be_signed(value: object) -> None:
    with pytest.raises(UnsignableValueError):
        sign_string({"x": value})


# -- validate and synchronous top-ups ----------------------------------------------------------------


def test_validate_reports_nickname_or_the_refusal(client: httpx.Client) -> None:
    ok = call(client, "validate", sku="genshin-60", account=ACCOUNT).json()
    assert ok == {"code": "OK", "account": ACCOUNT, "sku": "genshin-60", "nickname": "player_6789"}
    for sku, account, code in [
        ("genshin-60", "12ab", "INVALID_ACCOUNT"),
        ("genshin-60", "123456\n", "INVALID_ACCOUNT"),
        ("genshin-60", "99999999", "INVALID_ACCOUNT"),
        ("nope", ACCOUNT, "UNKNOWN_SKU"),
        ("pubg-660uc", ACCOUNT, "OUT_OF_STOCK"),
    ]:
        assert call(client, "validate", sku=sku, account=account).json()["code"] == code


def test_sync_topup_credits_once_and_charges_the_merchant(client: httpx.Client) -> None:
    before = balance(client)
    reply = topup(client, "ord-1")
    assert reply["code"] == "OK" and reply["status"] == "SUCCESS"
    assert reply["credited"] == 60 and isinstance(reply["completed_at"], int) and reply["provider_ref"]
    assert reply["reason"] is None
    [entry] = credits(client)
    assert (
        entry["order_no"] == "ord-1"
        and entry["points"] == 60
        and entry["provider_ref"] == reply["provider_ref"]
    )
    assert client.get(f"/_sim/accounts/{ACCOUNT}").json()["points"] == {"genshin": 60}
    assert balance(client) == before - 99


def test_repeated_order_no_returns_the_first_result_and_credits_nothing_more(client: httpx.Client) -> None:
    first = topup(client, "ord-1")
    again = topup(client, "ord-1")
    assert again == first
    assert len(credits(client)) == 1
    assert client.get(f"/_sim/accounts/{ACCOUNT}").json()["points"] == {"genshin": 60}


@pytest.mark.parametrize("change", [{"sku": "genshin-300"}, {"account": "555555"}])
def test_same_order_no_with_other_sku_or_account_is_409(client: httpx.Client, change: dict[str, str]) -> None:
    topup(client, "ord-1")
    fields: dict[str, Any] = {"order_no": "ord-1", "sku": "genshin-60", "account": ACCOUNT, **change}
    reply = call(client, "topup", **fields)
    assert reply.status_code == 409 and reply.json()["code"] == "IDEMPOTENCY_CONFLICT"
    assert len(credits(client)) == 1


def test_bad_signatures_are_401_and_change_nothing(client: httpx.Client) -> None:
    before = balance(client)
    fields = {"merchant_id": HMAC.id, "timestamp": int(time.time()), "order_no": "o", "sku": "genshin-60"}
    good = signed({**fields, "account": ACCOUNT}, HMAC.secret, HMAC.scheme)
    attempts = [
        {**good, "account": "555555"},  # tampered after signing
        signed({**fields, "account": ACCOUNT}, "wrong", HMAC.scheme),
        signed({**fields, "account": ACCOUNT}, HMAC.secret, "md5-sorted-params"),  # wrong scheme
        {**good, "sign": str(good["sign"]).upper()},
        {**good, "merchant_id": "nobody"},
        {key: value for key, value in good.items() if key != "sign"},
    ]
    for body in attempts:
        reply = client.post("/api/v1/topup", json=body)
        assert reply.status_code == 401 and reply.json()["code"] == "BAD_SIGNATURE", body
    assert credits(client) == [] and balance(client) == before
    assert query(client, order_no="o")["code"] == "NOT_FOUND"


def test_md5_signature_must_be_uppercase(client: httpx.Client) -> None:
    body = signed({"merchant_id": MD5.id, "timestamp": int(time.time())}, MD5.secret, MD5.scheme)
    body["sign"] = str(body["sign"]).lower()
    assert client.post("/api/v1/balance", json=body).status_code == 401


# The tolerance is 300 s and the server reads a whole-second clock, which may tick once between our
# reading and its own: 302 is past the line whichever second each side sees (301 failed CI once).
@pytest.mark.parametrize("skew", [-302, 302, -10_000])
def test_timestamp_too_far_from_the_server_clock_is_401(client: httpx.Client, skew: int) -> None:
    reply = call(client, "topup", ts=int(time.time()) + skew, order_no="o", sku="genshin-60", account=ACCOUNT)
    assert reply.status_code == 401 and reply.json()["code"] == "BAD_SIGNATURE"
    assert credits(client) == []


def test_timestamp_within_tolerance_and_as_a_string_is_accepted(client: httpx.Client) -> None:
    assert call(client, "balance", ts=int(time.time()) - 250).status_code == 200
    body = signed({"merchant_id": HMAC.id, "timestamp": str(int(time.time()))}, HMAC.secret, HMAC.scheme)
    assert client.post("/api/v1/balance", json=body).json()["code"] == "OK"


@pytest.mark.parametrize(
    "render",
    [
        lambda now: now.translate(
            {ord("0") + i: 0xFF10 + i for i in range(10)}
        ),  # full-width: int() takes it
        lambda now: f" {now}",
        lambda now: f"{now[:4]}_{now[4:]}",
        lambda now: now[:-1] + "\xb2",
    ],
    ids=["full-width", "leading-space", "underscore", "superscript"],
)
def test_timestamp_string_must_be_ascii_digits(client: httpx.Client, render: Callable[[str], str]) -> None:
    body = signed(
        {"merchant_id": HMAC.id, "timestamp": render(str(int(time.time())))}, HMAC.secret, HMAC.scheme
    )
    reply = client.post("/api/v1/balance", json=body)
    assert reply.status_code == 401 and reply.json()["code"] == "BAD_SIGNATURE"


@pytest.mark.parametrize(
    ("merchant", "sku", "account", "code"),
    [
        (HMAC, "genshin-60", "12ab", "INVALID_ACCOUNT"),
        (HMAC, "genshin-60", "99999999", "INVALID_ACCOUNT"),
        (HMAC, "nope", ACCOUNT, "UNKNOWN_SKU"),
        (HMAC, "pubg-660uc", ACCOUNT, "OUT_OF_STOCK"),
        (MD5, "genshin-980", ACCOUNT, "INSUFFICIENT_BALANCE"),
    ],
)
def test_refusals_charge_nothing_and_are_final(
    client: httpx.Client, merchant: Merchant, sku: str, account: str, code: str
) -> None:
    before = balance(client, merchant)
    reply = topup(client, "ord-r", sku, merchant, account=account)
    assert reply["code"] == code and reply["status"] == "FAILED" and reply["reason"] == code
    assert reply["credited"] == 0 and reply["provider_ref"]
    assert balance(client, merchant) == before and credits(client) == []
    assert client.get(f"/_sim/accounts/{account}").status_code == 404
    found = query(client, merchant, order_no="ord-r")
    assert found["code"] == "OK" and found["status"] == "FAILED" and found["reason"] == code
    assert topup(client, "ord-r", sku, merchant, account=account) == reply


def test_md5_merchant_tops_up_and_sees_its_balance(client: httpx.Client) -> None:
    reply = topup(client, "ord-md5", "pubg-60uc", MD5)
    assert reply["status"] == "SUCCESS"
    assert balance(client, MD5) == MD5_BALANCE - 99
    assert credits(client)[0]["merchant_id"] == MD5.id
    assert client.get(f"/_sim/accounts/{ACCOUNT}").json()["points"] == {"pubg": 60}


def test_query_by_order_no_or_provider_ref_only_within_the_merchant(client: httpx.Client) -> None:
    reply = topup(client, "ord-q")
    by_ref = query(client, provider_ref=reply["provider_ref"])
    assert by_ref == query(client, order_no="ord-q") == reply
    assert query(client, order_no="ord-q", provider_ref="SIM-other")["code"] == "NOT_FOUND"
    assert query(client, MD5, order_no="ord-q")["code"] == "NOT_FOUND"
    assert query(client, MD5, provider_ref=reply["provider_ref"])["code"] == "NOT_FOUND"
    assert query(client, order_no="never")["code"] == "NOT_FOUND"


def test_malformed_requests_are_400(client: httpx.Client) -> None:
    missing = call(client, "topup", order_no="o", sku="genshin-60")
    assert missing.status_code == 400 and missing.json()["field"] == "account"
    assert client.post("/api/v1/topup", content=b"not json").status_code == 400
    assert call(client, "query").status_code == 400


# -- async top-ups and callbacks ---------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    timestamp: str
    signature: str
    raw: bytes

    def valid(self, merchant: Merchant) -> bool:
        return verify_callback(merchant.callback_secret, self.timestamp, self.raw, self.signature)


class CallbackReceiver:
    """A tiny real HTTP server that records every callback POSTed to it."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._arrived:
                    receiver.deliveries.append(
                        Delivery(self.headers["X-Sim-Timestamp"], self.headers["X-Sim-Signature"], raw)
                    )
                    receiver._arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/callback"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Delivery]:
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.deliveries) >= count, timeout), self.deliveries
            return list(self.deliveries)

    def assert_no_more(self, count: int, within: float = 0.3) -> None:
        """No delivery beyond the first ``count`` arrives within ``within`` seconds (a duplicate callback
        is sent right after the first; the wait ends as soon as one arrives)."""
        with self._arrived:
            extra = self._arrived.wait_for(lambda: len(self.deliveries) > count, within)
        assert not extra, self.deliveries

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver()
    yield server
    server.close()


def test_async_topup_is_processing_then_credited_with_a_signed_callback(
    client: httpx.Client, receiver: CallbackReceiver
) -> None:
    arm(client, "async")
    reply = topup(client, "ord-a", callback_url=receiver.url)
    assert reply["status"] == "PROCESSING" and reply["credited"] == 0 and reply["completed_at"] is None
    assert credits(client) == []
    assert balance(client) == 1_000_000 - 99  # charged on acceptance
    [delivery] = receiver.wait_for(1)
    assert delivery.valid(HMAC)
    body = json.loads(delivery.raw)
    assert body["status"] == "SUCCESS" and body["order_no"] == "ord-a" and body["credited"] == 60
    assert body["provider_ref"] == reply["provider_ref"] and body["merchant_id"] == HMAC.id
    assert str(body["timestamp"]) == delivery.timestamp and abs(int(delivery.timestamp) - time.time()) < 5
    assert query(client, order_no="ord-a")["status"] == "SUCCESS"
    assert len(credits(client)) == 1
    receiver.assert_no_more(1)


def test_repeat_while_processing_shows_processing_then_success(client: httpx.Client) -> None:
    arm(client, "async")
    first = topup(client, "ord-a")
    assert topup(client, "ord-a") == first
    assert eventually(lambda: topup(client, "ord-a")["status"] == "SUCCESS")
    assert topup(client, "ord-a")["provider_ref"] == first["provider_ref"]
    assert len(credits(client)) == 1


def test_duplicate_callback_sends_the_same_signed_callback_twice(
    client: httpx.Client, receiver: CallbackReceiver
) -> None:
    arm(client, "async")
    arm(client, "duplicate_callback", count=1)
    topup(client, "ord-d", callback_url=receiver.url)
    first, second = receiver.wait_for(2)
    assert first == second and first.valid(HMAC)
    assert len(credits(client)) == 1


def test_forged_callback_precedes_the_genuine_one_and_fails_verification(
    client: httpx.Client, receiver: CallbackReceiver
) -> None:
    arm(client, "async")
    arm(client, "forged_callback", order_no="ord-f")
    topup(client, "ord-f", "genshin-60", MD5, callback_url=receiver.url)
    forged, genuine = receiver.wait_for(2)
    assert not forged.valid(MD5) and genuine.valid(MD5)
    assert json.loads(forged.raw) == json.loads(genuine.raw)


def test_not_found_in_flight_hides_a_processing_order_until_it_completes(client: httpx.Client) -> None:
    arm(client, "async")
    arm(client, "not_found_in_flight")
    topup(client, "ord-n")
    assert query(client, order_no="ord-n") == {"code": "NOT_FOUND"}
    assert eventually(lambda: query(client, order_no="ord-n").get("status") == "SUCCESS")


# -- transport faults --------------------------------------------------------------------------------


def test_timeout_holds_the_request_past_the_client_timeout_without_committing(client: httpx.Client) -> None:
    arm(client, "timeout", count=1)
    body = signed(
        {"merchant_id": HMAC.id, "timestamp": int(time.time()), "order_no": "ord-t", "sku": "genshin-60",
         "account": ACCOUNT},
        HMAC.secret,
        HMAC.scheme,
    )  # fmt: skip
    with pytest.raises(httpx.ReadTimeout):
        client.post("/api/v1/topup", json=body, timeout=0.3)
    assert credits(client) == [] and query(client, order_no="ord-t")["code"] == "NOT_FOUND"
    assert topup(client, "ord-t")["status"] == "SUCCESS"


def test_5xx_before_commit_charges_nothing_and_a_retry_succeeds(client: httpx.Client) -> None:
    arm(client, "error_5xx_before_commit", count=1)
    reply = call(client, "topup", order_no="ord-5", sku="genshin-60", account=ACCOUNT)
    assert reply.status_code == 500 and reply.json() == {"code": "INTERNAL_ERROR"}
    assert credits(client) == [] and query(client, order_no="ord-5")["code"] == "NOT_FOUND"
    assert topup(client, "ord-5")["status"] == "SUCCESS"
    assert len(credits(client)) == 1


def test_lost_after_commit_is_a_transport_error_but_the_credit_happened(client: httpx.Client) -> None:
    arm(client, "lost_after_commit", count=1)
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        call(client, "topup", order_no="ord-l", sku="genshin-60", account=ACCOUNT)
    [entry] = credits(client)
    assert entry["order_no"] == "ord-l"
    found = query(client, order_no="ord-l")
    assert found["status"] == "SUCCESS" and found["provider_ref"] == entry["provider_ref"]
    assert topup(client, "ord-l")["provider_ref"] == entry["provider_ref"]
    assert len(credits(client)) == 1


def test_lost_reply_without_the_uvicorn_hook_still_breaks_the_reply(
    sim: SimulatorServer, client: httpx.Client
) -> None:
    hook, sim.runtime.drop_connection = sim.runtime.drop_connection, None
    try:
        arm(client, "lost_after_commit", count=1)
        with pytest.raises(httpx.TransportError):
            call(client, "topup", order_no="ord-l", sku="genshin-60", account=ACCOUNT)
    finally:
        sim.runtime.drop_connection = hook
    assert len(credits(client)) == 1


def test_latency_delays_the_reply(client: httpx.Client) -> None:
    arm(client, "latency", latency_ms=300, count=1)
    started = time.monotonic()
    assert topup(client, "ord-lat")["status"] == "SUCCESS"
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("invalid_account", "INVALID_ACCOUNT"),
        ("out_of_stock", "OUT_OF_STOCK"),
        ("insufficient_balance", "INSUFFICIENT_BALANCE"),
    ],
)
def test_forced_refusals_charge_nothing(client: httpx.Client, mode: str, code: str) -> None:
    arm(client, mode, count=1)
    reply = topup(client, "ord-x")
    assert reply["code"] == code and reply["status"] == "FAILED"
    assert credits(client) == [] and balance(client) == 1_000_000
    assert topup(client, "ord-y")["status"] == "SUCCESS"


def test_faults_match_their_filters_and_run_out(client: httpx.Client) -> None:
    arm(client, "out_of_stock", order_no="ord-2", count=1)
    arm(client, "error_5xx_before_commit", sku="genshin-300", count=2)
    assert topup(client, "ord-1")["status"] == "SUCCESS"
    assert topup(client, "ord-2")["code"] == "OUT_OF_STOCK"
    for _ in range(2):
        assert call(client, "topup", order_no="ord-3", sku="genshin-300", account=ACCOUNT).status_code == 500
    assert topup(client, "ord-3", "genshin-300")["status"] == "SUCCESS"
    assert client.get("/_sim/faults").json()["faults"] == []
    arm(client, "timeout", probability=0.0)
    assert topup(client, "ord-4")["status"] == "SUCCESS"
    assert client.delete("/_sim/faults").status_code == 200
    assert client.get("/_sim/faults").json()["faults"] == []


def test_unknown_fault_mode_is_400(client: httpx.Client) -> None:
    assert client.post("/_sim/faults", json={"mode": "meteor"}).status_code == 400


# -- reversal, reset, loopback, config, CLI ----------------------------------------------------------


def test_reverse_claws_back_the_points_refunds_and_calls_back(
    client: httpx.Client, receiver: CallbackReceiver
) -> None:
    topup(client, "ord-rv", "genshin-300", callback_url=receiver.url)
    reply = client.post("/_sim/reverse", json={"order_no": "ord-rv"})
    assert reply.status_code == 200 and reply.json()["status"] == "REVERSED"
    assert query(client, order_no="ord-rv")["status"] == "REVERSED"
    assert client.get(f"/_sim/accounts/{ACCOUNT}").json()["points"] == {"genshin": 0}
    assert balance(client) == 1_000_000
    ledger = client.get("/_sim/ledger").json()
    assert len(ledger["credits"]) == 1 and ledger["reversals"][0]["order_no"] == "ord-rv"
    [delivery] = receiver.wait_for(1)
    assert delivery.valid(HMAC) and json.loads(delivery.raw)["status"] == "REVERSED"
    assert client.post("/_sim/reverse", json={"order_no": "ord-rv"}).status_code == 409
    assert client.post("/_sim/reverse", json={"order_no": "never"}).status_code == 404


def test_reset_restores_balances_stock_and_clears_everything(client: httpx.Client) -> None:
    for n in range(3):
        topup(client, f"ord-{n}", "genshin-980")
    arm(client, "timeout")
    assert client.post("/_sim/reset").status_code == 200
    assert credits(client) == [] and client.get("/_sim/faults").json()["faults"] == []
    assert balance(client) == 1_000_000
    assert query(client, order_no="ord-0")["code"] == "NOT_FOUND"
    assert client.get(f"/_sim/accounts/{ACCOUNT}").status_code == 404


def test_provider_refs_are_never_reused_across_resets(client: httpx.Client) -> None:
    first = topup(client, "ord-1")["provider_ref"]
    client.post("/_sim/reset")
    assert topup(client, "ord-1")["provider_ref"] != first


def test_stock_runs_out(client: httpx.Client) -> None:
    config = default_config()
    skus = tuple(s.model_copy(update={"stock": 1}) if s.id == "genshin-60" else s for s in config.skus)
    with (
        SimulatorServer(config.model_copy(update={"skus": skus})) as small,
        httpx.Client(base_url=small.url) as http,
    ):
        assert topup(http, "a")["status"] == "SUCCESS"
        assert topup(http, "b")["code"] == "OUT_OF_STOCK"
        assert call(http, "validate", sku="genshin-60", account=ACCOUNT).json()["code"] == "OUT_OF_STOCK"


def test_test_endpoints_refuse_non_loopback_clients() -> None:
    async def from_the_lan() -> tuple[int, Any]:
        transport = httpx.ASGITransport(create_app(), client=("192.0.2.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
            return (await http.get("/_sim/ledger")).status_code, (await http.post("/_sim/reset")).json()

    status, reset = asyncio.run(from_the_lan())
    assert status == 403 and reset["code"] == "FORBIDDEN"


def test_config_loads_from_toml_and_rejects_duplicates(tmp_path: Path) -> None:
    good = tmp_path / "sim.toml"
    good.write_text(
        """
account_pattern = '^[a-z]{3,8}$'
banned_accounts = ["mallory"]
async_mode = true

[[merchants]]
id = "m1"
secret = "s"
scheme = "md5-sorted-params"
callback_secret = "c"
balance_cents = 500

[[skus]]
id = "x-1"
game = "x"
points = 1
cost_cents = 10
stock = 3
"""
    )
    config = load_config(good)
    assert config.async_mode and config.merchants[0].scheme == "md5-sorted-params"
    assert config.banned_accounts == frozenset({"mallory"})
    bad = tmp_path / "bad.toml"
    bad.write_text(
        good.read_text() + '\n[[skus]]\nid = "x-1"\ngame = "x"\npoints = 1\ncost_cents = 1\nstock = 1\n'
    )
    with pytest.raises(ValidationError, match="duplicate sku ids: x-1"):
        load_config(bad)


@pytest.mark.slow  # a child Python process that imports the whole simulator: ~2 s
def test_python_dash_m_serves_the_simulator() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "adapters.simulator", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        # ~2 s on an idle machine; the bound is for a loaded one (importing is CPU-bound)
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/_sim/ledger", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, f"the simulator exited with {process.returncode}"
                assert time.monotonic() < deadline, "the simulator did not answer within 60 s"
                time.sleep(0.1)
        assert reply.json() == {"credits": [], "reversals": []}
    finally:
        process.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert process.wait(timeout=10) in (0, -signal.SIGTERM)


def test_a_restarted_simulator_never_repeats_a_provider_ref() -> None:
    """`cardless run` restarts a dead simulator with empty books; the refs its previous life gave out
    are in the database, so the new life's must differ (they carry the state's birth)."""
    lives = [SimulatorState(_config(), clock=lambda t=t: t) for t in (1_700_000_000.0, 1_700_000_000.5)]
    refs = [life.topup(HMAC.id, "o-1", "genshin-60", ACCOUNT, None).order for life in lives]
    assert refs[0] is not None and refs[1] is not None
    assert refs[0].provider_ref != refs[1].provider_ref
    assert refs[0].provider_ref.startswith("SIM") and refs[0].provider_ref.endswith("-0000000001")
