"""The generic HTTP adapter: signing vectors, reply mapping and status rules against
``httpx.MockTransport``, provider-file validation, the circuit breaker — and the conformance suite run
against the real simulated provider (uvicorn on a loopback port) through ``simulator.toml`` and
``simulator-md5.toml``, with callbacks delivered to a real stdlib HTTP server."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import anyio
import httpx
import pytest

from adapters import (
    AccountRejected,
    AuthenticationFailed,
    ConfigError,
    ForgedCallback,
    IdempotencyConflict,
    MissingSecret,
    ProviderFileError,
    ProviderRefused,
    ProviderUnavailable,
    ProviderUnreachable,
    Refusal,
    RequestRejected,
    RerouteError,
    StaleCallback,
    TopupRequest,
    TopupReversed,
    TopupStatus,
)
from adapters.health import BreakerState, CircuitBreaker
from adapters.http import HttpAdapter
from adapters.provider_file import (
    Timeouts,
    bundled_provider_file,
    load_provider_file,
    parse_provider_file,
)
from adapters.signing import callback_message, sign_params, sign_string, verify_params
from adapters.simulator import signing as simulator_signing
from adapters.simulator.config import default_config
from adapters.simulator.server import SimulatorServer
from adapters.transport import LeanTransport
from tests.adapters.conformance import AdapterConformance, Callback, Fault

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- signing: vectors computed by hand (and checked with `openssl dgst -sha256 -hmac`, `md5sum`) ------

VECTOR_PARAMS: dict[str, Any] = {
    "timestamp": 1700000000,
    "b": 2,
    "merchant_id": "m1",
    "a": "x",
    "empty": "",
    "missing": None,
    "sign": "ignored",
}
VECTOR_STRING = "a=x&b=2&merchant_id=m1&timestamp=1700000000"


def test_sign_string_sorts_bytewise_and_drops_empty_null_and_sign() -> None:
    assert sign_string(VECTOR_PARAMS) == VECTOR_STRING
    # Bytewise: uppercase before "_" before lowercase before non-ASCII.
    assert sign_string({"é": "1", "a": "2", "_": "3", "Z": "4"}) == "Z=4&_=3&a=2&é=1"
    assert sign_string({"flag": True, "off": False}) == "flag=true&off=false"


def test_sign_string_refuses_values_without_an_agreed_rendering() -> None:
    with pytest.raises(TypeError, match="'amount'"):
        sign_string({"amount": 1.5})
    with pytest.raises(TypeError, match="'data'"):
        sign_string({"data": {"nested": 1}})


def test_hmac_sha256_vector() -> None:
    expected = "674663eaa2483814a9fa6b96c64ab573ff8329712127fbfcebaaed21f35e0988"
    assert hmac.new(b"k3y", VECTOR_STRING.encode(), hashlib.sha256).hexdigest() == expected
    assert sign_params("hmac-sha256", "k3y", VECTOR_PARAMS) == expected


def test_md5_sorted_params_vector() -> None:
    expected = "F4D19BC02D5AF8D026FDDE52F33559B8"
    assert hashlib.md5(f"{VECTOR_STRING}&key=k3y".encode()).hexdigest().upper() == expected
    assert sign_params("md5-sorted-params", "k3y", VECTOR_PARAMS) == expected


def test_verify_params_checks_the_sign_field() -> None:
    good = {**VECTOR_PARAMS, "sign": "F4D19BC02D5AF8D026FDDE52F33559B8"}
    assert verify_params("md5-sorted-params", "k3y", good)
    assert not verify_params("md5-sorted-params", "k3y", {**good, "b": 3})
    assert not verify_params("md5-sorted-params", "wrong", good)
    assert not verify_params("md5-sorted-params", "k3y", {**good, "sign": ""})
    assert not verify_params("hmac-sha256", "k3y", {**good, "nested": {"x": 1}})


def test_callback_message_vector() -> None:
    message = callback_message("{timestamp}.{body}", "1700000000", b'{"code":"OK"}')
    assert message == b'1700000000.{"code":"OK"}'
    expected = "e4fd56a0e0f59ed9b79c24eccc55549c70e50221ec34dcde5da00a2c7c72c4da"
    assert hmac.new(b"cb-secret", message, hashlib.sha256).hexdigest() == expected


def test_signing_agrees_with_the_simulators_independent_implementation() -> None:
    fields = {"merchant_id": "m", "timestamp": 1, "order_no": "o-1", "sku": "s", "account": "123", "x": ""}
    for scheme in ("hmac-sha256", "md5-sorted-params"):
        assert sign_params(scheme, "secret", fields) == simulator_signing.sign(fields, "secret", scheme)


# -- a fictional provider exercising every mapping feature ----------------------------------------

NOW = 1_700_000_000
ACME: dict[str, Any] = {
    "name": "acme",
    "base_url": "https://acme.example/api/",
    "body_encoding": "form",
    "signing": {
        "scheme": "md5-sorted-params",
        "secret_env": "ACME_SECRET",
        "merchant_id_env": "ACME_MERCHANT",
        "sign_field": "signature",
        "timestamp_field": "ts",
        "merchant_field": "mch_id",
    },
    "operations": {
        "validate": {"path": "/account/check", "fields": {"sku": "product_id", "account": "uid"}},
        "submit": {
            "path": "/recharge",
            "fields": {
                "order_key": "out_trade_no",
                "sku": "product_id",
                "account": "uid",
                "callback_url": "notify_url",
            },
            "constants": {"version": "2.0", "channel": 7},
            "timeout_seconds": 20,
        },
        "query": {
            "path": "/recharge/status",
            "method": "GET",
            "fields": {"order_key": "out_trade_no", "provider_ref": "trade_no"},
        },
        "balance": {"path": "/wallet"},
    },
    "reply": {
        "code": "ret",
        "status": "data.state",
        "order_key": "data.out_trade_no",
        "provider_ref": "data.trade_no",
        "sku": "data.product_id",
        "account": "data.uid",
        "credited": "data.amount",
        "completed_at": "data.finish_time",
        "balance": "data.wallets.0.available",
        "nickname": "data.nick",
        "reason": "data.fail_code",
        "message": "msg",
    },
    "statuses": {"1": "processing", "2": "succeeded", "3": "failed_not_charged", "4": "reversed"},
    "codes": {
        "0": "ok",
        "1001": "invalid_account",
        "1002": "out_of_stock",
        "1003": "unknown_sku",
        "1004": "insufficient_balance",
        "1005": "rejected",
        "4001": "bad_signature",
        "4002": "bad_request",
        "4009": "idempotency_conflict",
        "4040": "not_found",
    },
    "callback": {
        "scheme": "md5-sorted-params",
        "secret_env": "ACME_NOTIFY_SECRET",
        "signature_in": "body",
        "sign_field": "signature",
        "timestamp_field": "ts",
        "tolerance_seconds": 120,
        "reply": {
            "code": None,
            "status": "state",
            "order_key": "out_trade_no",
            "provider_ref": "trade_no",
            "sku": "product_id",
            "account": "uid",
            "credited": "amount",
            "completed_at": "finish_time",
        },
    },
    "breaker": {"failure_threshold": 3, "open_seconds": 10},
}
ACME_SECRETS = {"ACME_SECRET": "acme-s3cret", "ACME_MERCHANT": "M-77", "ACME_NOTIFY_SECRET": "acme-notify"}
REQUEST = TopupRequest("order-1", "gem-100", "uid-42", callback_url="https://us.example/cb")


def acme_order(state: int = 2, **overrides: Any) -> dict[str, Any]:
    order = {
        "out_trade_no": "order-1",
        "trade_no": "T-9",
        "product_id": "gem-100",
        "uid": "uid-42",
        "amount": 100,
        "finish_time": NOW - 5,
        "state": state,
    }
    order.update(overrides)
    return order


def acme_reply(ret: int = 0, **order: Any) -> dict[str, Any]:
    return {"ret": ret, "msg": "ok", "data": acme_order(**order)}


Handler = Callable[[httpx.Request], httpx.Response]


class Provider:
    """A MockTransport provider that records requests and answers with a queue of handlers."""

    def __init__(self, *replies: Handler | dict[str, Any] | httpx.Response | Exception) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return reply
        if isinstance(reply, dict):
            return httpx.Response(200, json=reply)
        return reply(request)

    def form(self, index: int = -1) -> dict[str, str]:
        request = self.requests[index]
        if request.method == "GET":
            return dict(request.url.params)
        return dict(parse_qsl(request.content.decode()))


@pytest.fixture
async def acme() -> AsyncIterator[Callable[..., tuple[HttpAdapter, Provider]]]:
    clients: list[httpx.AsyncClient] = []

    def make(
        *replies: Any, config: dict[str, Any] | None = None, **kwargs: Any
    ) -> tuple[HttpAdapter, Provider]:
        provider = Provider(*replies)
        client = httpx.AsyncClient(transport=httpx.MockTransport(provider.handle))
        clients.append(client)
        kwargs.setdefault("secrets", ACME_SECRETS)
        kwargs.setdefault("clock", lambda: NOW + 0.9)
        return HttpAdapter(parse_provider_file(config or ACME), client, **kwargs), provider

    yield make
    for client in clients:
        await client.aclose()


# -- requests --------------------------------------------------------------------------------------


async def test_submit_sends_mapped_signed_form_fields(acme) -> None:
    adapter, provider = acme(acme_reply())
    await adapter.submit(REQUEST)

    request = provider.requests[0]
    assert (request.method, str(request.url)) == ("POST", "https://acme.example/api/recharge")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    sent = provider.form()
    assert sent == {
        "out_trade_no": "order-1",
        "product_id": "gem-100",
        "uid": "uid-42",
        "notify_url": "https://us.example/cb",
        "version": "2.0",
        "channel": "7",
        "mch_id": "M-77",
        "ts": str(NOW),
        "signature": sent["signature"],
    }
    expected = hashlib.md5(
        (
            "channel=7&mch_id=M-77&notify_url=https://us.example/cb&out_trade_no=order-1&product_id=gem-100"
            f"&ts={NOW}&uid=uid-42&version=2.0&key=acme-s3cret"
        ).encode()
    ).hexdigest()
    assert sent["signature"] == expected.upper()
    assert request.extensions["timeout"]["read"] == 20


async def test_query_by_get_sends_signed_query_parameters(acme) -> None:
    adapter, provider = acme(acme_reply())
    result = await adapter.query("order-1", None)

    assert result.status is TopupStatus.SUCCEEDED
    assert provider.requests[0].method == "GET"
    params = provider.form()
    assert params["out_trade_no"] == "order-1" and "trade_no" not in params
    assert verify_params("md5-sorted-params", "acme-s3cret", params, sign_field="signature")


async def test_query_by_provider_ref_only(acme) -> None:
    adapter, provider = acme(acme_reply())
    result = await adapter.query(None, "T-9")
    assert provider.form()["trade_no"] == "T-9" and "out_trade_no" not in provider.form()
    assert result.order_key == "order-1" and result.provider_ref == "T-9"


async def test_query_needs_a_key_or_a_reference(acme) -> None:
    adapter, _ = acme(acme_reply())
    with pytest.raises(ValueError, match="order_key or provider_ref"):
        await adapter.query(None, None)


async def test_json_body_encoding_posts_json(acme) -> None:
    config = {**ACME, "body_encoding": "json"}
    adapter, provider = acme(acme_reply(), config=config)
    await adapter.submit(REQUEST)
    body = json.loads(provider.requests[0].content)
    assert body["channel"] == 7 and body["ts"] == NOW
    assert verify_params("md5-sorted-params", "acme-s3cret", body, sign_field="signature")


async def test_callback_url_is_omitted_when_absent(acme) -> None:
    adapter, provider = acme(acme_reply())
    await adapter.submit(TopupRequest("order-1", "gem-100", "uid-42"))
    assert "notify_url" not in provider.form()


# -- secrets ---------------------------------------------------------------------------------------


async def test_missing_secret_names_the_variable(acme) -> None:
    with pytest.raises(MissingSecret, match="ACME_NOTIFY_SECRET") as caught:
        acme(acme_reply(), secrets={"ACME_SECRET": "s", "ACME_MERCHANT": "m"})
    assert caught.value.variable == "ACME_NOTIFY_SECRET"
    assert isinstance(caught.value, ConfigError)


async def test_secrets_fall_back_to_the_environment(acme, monkeypatch) -> None:
    for name, value in ACME_SECRETS.items():
        monkeypatch.setenv(name, value)
    adapter, provider = acme(acme_reply(), secrets=None)
    await adapter.submit(REQUEST)
    assert provider.form()["mch_id"] == "M-77"


# -- replies -> outcomes ---------------------------------------------------------------------------


async def test_success_reply_maps_nested_fields_into_the_receipt(acme) -> None:
    adapter, _ = acme(acme_reply())
    result = await adapter.submit(REQUEST)

    assert result.status is TopupStatus.SUCCEEDED
    assert result.receipt is not None
    assert result.receipt.as_dict() == {
        "provider": "acme",
        "provider_ref": "T-9",
        "order_id": "order-1",
        "sku": "gem-100",
        "credited": 100,
        "account": "uid-42",
        "completed_at": NOW - 5,
    }
    assert result.raw is not None and result.raw["msg"] == "ok"


async def test_integer_fields_accept_decimal_strings_not_floats(acme) -> None:
    adapter, _ = acme(acme_reply(amount="100", finish_time=str(NOW)))
    assert (await adapter.submit(REQUEST)).receipt.credited == 100

    adapter, _ = acme(acme_reply(amount=100.0))
    result = await adapter.submit(REQUEST)
    assert result.status is TopupStatus.UNKNOWN
    assert "receipt field" in result.detail


async def test_processing_reply(acme) -> None:
    adapter, _ = acme(acme_reply(state=1, amount=0, finish_time=None))
    result = await adapter.submit(REQUEST)
    assert result.status is TopupStatus.PROCESSING
    assert result.provider_ref == "T-9" and result.receipt is None


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        (httpx.Response(500, json={"ret": 1002}), "HTTP 500"),
        (httpx.Response(503, text="maintenance"), "HTTP 503"),
        (httpx.Response(200, text="<html>gateway</html>"), "not JSON"),
        (httpx.Response(200, json=[1, 2]), "not a JSON object"),
        (httpx.ReadTimeout("read timed out"), "ReadTimeout"),
        (httpx.ConnectError("connection refused"), "ConnectError"),
        (httpx.RemoteProtocolError("peer closed connection"), "RemoteProtocolError"),
        ({"ret": 777, "msg": "new code"}, "unrecognised reply"),
        (acme_reply(state=9), "unrecognised status"),
        (acme_reply(amount=None), "receipt field"),
        (acme_reply(out_trade_no="order-2"), "about order 'order-2'"),
        (acme_reply(uid="uid-43"), "account"),
        (acme_reply(product_id="gem-5"), "sku"),
        ({"ret": 4040}, "does not know"),
        (httpx.Response(400, json={"ret": 0, "data": acme_order()}), "HTTP 400"),
    ],
    ids=lambda value: type(value).__name__,
)
async def test_anything_but_a_clear_answer_to_submit_is_unknown(acme, reply, fragment) -> None:
    adapter, _ = acme(reply)
    result = await adapter.submit(REQUEST)
    assert result.status is TopupStatus.UNKNOWN
    assert result.order_key == "order-1"
    assert fragment in result.detail
    assert result.error() is None


@pytest.mark.parametrize(
    ("ret", "error", "refusal"),
    [
        (1001, AccountRejected, Refusal.INVALID_ACCOUNT),
        (1002, ProviderRefused, Refusal.OUT_OF_STOCK),
        (1003, ProviderRefused, Refusal.UNKNOWN_SKU),
        (1004, ProviderRefused, Refusal.INSUFFICIENT_BALANCE),
        (1005, ProviderRefused, Refusal.REJECTED),
    ],
)
async def test_refusal_codes_raise_the_class_that_decides(acme, ret, error, refusal) -> None:
    adapter, _ = acme({"ret": ret, "msg": "no"})
    with pytest.raises(error) as caught:
        await adapter.submit(REQUEST)
    result = caught.value.result
    assert result is not None
    assert (result.status, result.refusal, result.provider_code) == (
        TopupStatus.FAILED_NOT_CHARGED,
        refusal,
        str(ret),
    )
    assert result.order_key == "order-1" and result.detail == "no"
    assert caught.value.code == str(ret)


async def test_failed_status_takes_its_reason_from_the_reason_field(acme) -> None:
    adapter, _ = acme(acme_reply(state=3, amount=0, fail_code=1001))
    with pytest.raises(AccountRejected):
        await adapter.submit(REQUEST)

    adapter, _ = acme(acme_reply(state=3, amount=0))
    with pytest.raises(ProviderRefused) as caught:
        await adapter.submit(REQUEST)
    assert caught.value.result.refusal is Refusal.REJECTED


async def test_reversed_status_raises_on_submit_and_is_returned_by_query(acme) -> None:
    adapter, _ = acme(acme_reply(state=4))
    with pytest.raises(TopupReversed):
        await adapter.submit(REQUEST)
    result = await adapter.query("order-1", None)
    assert result.status is TopupStatus.REVERSED
    assert isinstance(result.error(), TopupReversed)


async def test_query_returns_failures_instead_of_raising(acme) -> None:
    adapter, _ = acme(acme_reply(state=3, fail_code=1002))
    result = await adapter.query("order-1", None)
    assert result.status is TopupStatus.FAILED_NOT_CHARGED and result.refusal is Refusal.OUT_OF_STOCK
    assert isinstance(result.error(), ProviderRefused)


async def test_query_ignores_a_bare_refusal_code_that_names_no_order(acme) -> None:
    adapter, _ = acme({"ret": 1002})
    assert (await adapter.query("order-1", None)).status is TopupStatus.UNKNOWN


async def test_query_transport_failure_is_unknown(acme) -> None:
    adapter, _ = acme(httpx.ReadTimeout("slow"))
    result = await adapter.query("order-1", None)
    assert result.status is TopupStatus.UNKNOWN and result.order_key == "order-1"


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (httpx.Response(401, json={"ret": 4001}), AuthenticationFailed),
        (httpx.Response(400, json={"ret": 4002}), RequestRejected),
        (httpx.Response(409, json={"ret": 4009}), IdempotencyConflict),
    ],
)
async def test_config_codes_raise_from_every_operation(acme, reply, error) -> None:
    adapter, _ = acme(reply)
    for call in (
        adapter.submit(REQUEST),
        adapter.query("order-1", None),
        adapter.validate("g", "u"),
        adapter.balance(),
    ):
        with pytest.raises(error):
            await call
    assert adapter.health().consecutive_failures == 0  # a provider saying no is a healthy provider


async def test_validate_outcomes(acme) -> None:
    adapter, provider = acme({"ret": 0, "data": {"nick": "Ayaka"}}, {"ret": 1001}, {"ret": 1003})
    ok = await adapter.validate("gem-100", "uid-42")
    assert (ok.ok, ok.nickname) == (True, "Ayaka")
    assert provider.form(0)["uid"] == "uid-42" and provider.form(0)["product_id"] == "gem-100"
    bad = await adapter.validate("gem-100", "nobody")
    assert (bad.ok, bad.refusal, bad.provider_code) == (False, Refusal.INVALID_ACCOUNT, "1001")
    assert (await adapter.validate("nothing", "uid-42")).refusal is Refusal.UNKNOWN_SKU


@pytest.mark.parametrize("reply", [httpx.ReadTimeout("slow"), httpx.Response(502), {"ret": 777}])
async def test_validate_without_an_answer_is_unreachable(acme, reply) -> None:
    adapter, _ = acme(reply)
    with pytest.raises(ProviderUnreachable):
        await adapter.validate("gem-100", "uid-42")


async def test_balance_reads_a_dotted_path_with_a_list_index(acme) -> None:
    adapter, _ = acme({"ret": 0, "data": {"wallets": [{"available": "12345"}]}})
    assert await adapter.balance() == 12345

    adapter, _ = acme({"ret": 0, "data": {"wallets": []}})
    with pytest.raises(ProviderUnreachable):
        await adapter.balance()


@pytest.mark.parametrize(
    "amount", ["\xb2", "1\xb2", "\uff11\uff12", "\u0661\u0662", "1_000", "+12", "1" * 79]
)
async def test_balance_is_ascii_digits_only(acme, amount) -> None:
    """int() takes '１２' and '1_000', str.isdigit() takes '²' which int() then refuses: none is an
    amount a provider meant, and none may crash the adapter."""
    adapter, _ = acme({"ret": 0, "data": {"wallets": [{"available": amount}]}})
    with pytest.raises(ProviderUnreachable):
        await adapter.balance()


async def test_a_list_index_in_a_reply_path_is_ascii_digits_only(acme) -> None:
    config = copy.deepcopy(ACME)
    config["reply"]["balance"] = "data.wallets.\xb2.available"
    adapter, _ = acme({"ret": 0, "data": {"wallets": [{"available": "1"}] * 3}}, config=config)
    with pytest.raises(ProviderUnreachable):
        await adapter.balance()


# -- callbacks -------------------------------------------------------------------------------------


def body_signed_callback(secret: str = "acme-notify", ts: int = NOW, **changes: Any) -> bytes:
    body: dict[str, Any] = {**acme_order(), "ts": ts}
    body["signature"] = sign_params("md5-sorted-params", secret, body, sign_field="signature")
    body.update(changes)
    return json.dumps(body).encode()


async def test_body_signed_callback_with_its_own_field_mapping(acme) -> None:
    adapter, provider = acme(acme_reply())
    result = await adapter.verify_callback(body_signed_callback(), {}, NOW + 30)
    assert result.status is TopupStatus.SUCCEEDED
    assert result.receipt is not None and result.receipt.order_id == "order-1"
    assert provider.requests == []  # verifying a callback never calls the provider


@pytest.mark.parametrize(
    ("raw", "now", "error"),
    [
        (body_signed_callback(secret="guess"), NOW, ForgedCallback),
        (body_signed_callback(amount=100_000), NOW, ForgedCallback),
        (body_signed_callback(signature=""), NOW, ForgedCallback),
        (b"out_trade_no=order-1&state=2", NOW, ForgedCallback),
        (b"[1]", NOW, ForgedCallback),
        (body_signed_callback(ts="\xb2"), NOW, ForgedCallback),  # type: ignore[arg-type]
        (body_signed_callback(ts="\uff11"), NOW, ForgedCallback),  # type: ignore[arg-type]
        (body_signed_callback(), NOW + 121, StaleCallback),
        (body_signed_callback(), NOW - 121, StaleCallback),
    ],
)
async def test_body_signed_callback_rejections(acme, raw, now, error) -> None:
    adapter, _ = acme(acme_reply())
    with pytest.raises(error):
        await adapter.verify_callback(raw, {}, now)


def simulator_config_dict() -> dict[str, Any]:
    import tomllib

    return tomllib.loads(bundled_provider_file("simulator").read_text())


SIM_SECRETS = {"CARDLESS_SIM_SECRET": "s", "CARDLESS_SIM_CALLBACK_SECRET": "cb-secret"}


def header_signed(raw: bytes, ts: str = "1700000000", secret: str = "cb-secret") -> dict[str, str]:
    signature = hmac.new(secret.encode(), ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
    return {"X-Sim-Timestamp": ts, "X-Sim-Signature": signature}


CALLBACK = json.dumps(
    {
        "code": "OK",
        "order_no": "o-1",
        "provider_ref": "SIM1",
        "status": "SUCCESS",
        "sku": "genshin-60",
        "account": "123456",
        "credited": 60,
        "completed_at": 1699999990,
        "timestamp": 1700000000,
    }
).encode()


async def test_header_signed_callback_accepts_genuine_in_any_header_case(acme) -> None:
    adapter, _ = acme(config=simulator_config_dict(), secrets=SIM_SECRETS)
    headers = {key.lower(): value for key, value in header_signed(CALLBACK).items()}
    result = await adapter.verify_callback(CALLBACK, headers, 1700000000 + 299)
    assert result.status is TopupStatus.SUCCEEDED and result.provider == "simulator"


@pytest.mark.parametrize(
    ("raw", "headers", "now", "error"),
    [
        (CALLBACK, header_signed(CALLBACK, secret="forged-cb-secret"), 1700000000, ForgedCallback),
        (CALLBACK.replace(b"60", b"61"), header_signed(CALLBACK), 1700000000, ForgedCallback),
        (CALLBACK, {**header_signed(CALLBACK), "X-Sim-Timestamp": "1700000001"}, 1700000000, ForgedCallback),
        (CALLBACK, {"X-Sim-Timestamp": "1700000000"}, 1700000000, ForgedCallback),
        (CALLBACK, header_signed(CALLBACK, ts="soon"), 1700000000, ForgedCallback),
        # Digits int() refuses ('²' passes str.isdigit()) or reads though nobody wrote them (full-width,
        # Arabic-Indic), and a number too long for int(): refused as forgeries, never a crash.
        (CALLBACK, header_signed(CALLBACK, ts="\xb2"), 1700000000, ForgedCallback),
        (CALLBACK, header_signed(CALLBACK, ts="17\xb9\xb2"), 1700000000, ForgedCallback),
        (CALLBACK, header_signed(CALLBACK, ts="\uff11\uff17" + "0" * 8), 1700000000, ForgedCallback),
        (CALLBACK, header_signed(CALLBACK, ts="\u0661\u0667" + "0" * 8), 1700000000, ForgedCallback),
        (CALLBACK, header_signed(CALLBACK, ts="1" * 5000), 1700000000, ForgedCallback),
        (b"not json", header_signed(b"not json"), 1700000000, ForgedCallback),
        (CALLBACK, header_signed(CALLBACK), 1700000000 + 301, StaleCallback),
        (CALLBACK, header_signed(CALLBACK), 1700000000 - 301, StaleCallback),
    ],
)
async def test_header_signed_callback_rejections(acme, raw, headers, now, error) -> None:
    adapter, _ = acme(config=simulator_config_dict(), secrets=SIM_SECRETS)
    with pytest.raises(error):
        await adapter.verify_callback(raw, headers, now)


# -- provider files --------------------------------------------------------------------------------


def broken(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(ACME)
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [
        (
            lambda d: d["operations"]["submit"].update(method="PUT"),
            "operations.submit.method",
            "'GET' or 'POST'",
        ),
        (lambda d: d["operations"].pop("balance"), "operations.balance", "required"),
        (lambda d: d["operations"]["query"].update(paht="/x"), "operations.query.paht", "Extra inputs"),
        (lambda d: d["signing"].update(scheme="sha1"), "signing.scheme", "hmac-sha256"),
        (lambda d: d["signing"].update(merchant_id="M-1"), "signing", "exactly one of merchant_id"),
        (lambda d: d["reply"].update(status="data..state"), "reply.status", "pattern"),
        (lambda d: d["statuses"].update({"2": "done"}), "statuses.2", "succeeded"),
        (lambda d: d["codes"].update({"0": "fine"}), "codes.0", "'ok'"),
        (lambda d: d.update(base_url="ftp://acme"), "base_url", "pattern"),
        (
            lambda d: d["timeouts"].update(read=0) if "timeouts" in d else d.update(timeouts={"read": 0}),
            "timeouts.read",
            "greater than 0",
        ),
        (
            lambda d: d["operations"]["validate"]["fields"].update(order_key="x"),
            "operations.validate.fields",
            "order_key cannot be sent by validate",
        ),
        (
            lambda d: d["operations"]["submit"]["fields"].pop("account"),
            "operations.submit.fields",
            "must map account",
        ),
        (lambda d: d["callback"].update(signature_in="header"), "callback.scheme", "header signatures"),
        (lambda d: d["reply"].pop("balance"), "reply.balance", "required"),
        (
            lambda d: d["statuses"].update({"2": "processing"}),
            "statuses",
            "no provider status maps to 'succeeded'",
        ),
        (lambda d: d["signing"].update(secret="hunter2"), "signing.secret", "secrets must not be written"),
        (
            lambda d: d.update(account={"pattern": "[0-9"}),
            "account.pattern",
            "not a valid regular expression",
        ),
        (lambda d: d.update(account={"patern": "[0-9]+"}), "account.patern", "Extra inputs"),
        (lambda d: d.update(account={"max_length": 65}), "account.max_length", "less than or equal to 64"),
        (
            lambda d: d.update(account={"min_length": 9, "max_length": 8}),
            "account.min_length",
            "9 is more than max_length 8",
        ),
        (
            lambda d: d.update(account={"skus": {"gem-100": {"pattern": "(?P<"}}}),
            "account.skus.gem-100.pattern",
            "not a valid regular expression",
        ),
        (
            lambda d: d["operations"]["submit"]["constants"].update(app_secret="x"),
            "operations.submit.constants.app_secret",
            "secret_env",
        ),
    ],
)
def test_provider_file_errors_name_the_key(change, key, fragment) -> None:
    with pytest.raises(ProviderFileError) as caught:
        parse_provider_file(broken(change), source="acme.toml")
    message = str(caught.value)
    assert message.startswith(f"acme.toml: {key}: ")
    assert fragment in message
    assert caught.value.key == key
    assert "Value error" not in message


def test_provider_file_toml_errors_name_the_file_and_line(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\nbase_url = \n')
    with pytest.raises(ProviderFileError, match=r"bad\.toml: not valid TOML.*line 2"):
        load_provider_file(path)
    with pytest.raises(ProviderFileError, match="cannot read"):
        load_provider_file(tmp_path / "absent.toml")
    with pytest.raises(ProviderFileError, match="bundled: simulator"):
        bundled_provider_file("nope")


def test_bundled_simulator_files_are_valid_and_hold_no_secrets() -> None:
    for name in ("simulator", "simulator-md5"):
        path = bundled_provider_file(name)
        config = load_provider_file(path)
        assert config.name == name
        text = path.read_text()
        assert "sim-hmac-secret" not in text and "sim-md5-secret" not in text
    assert load_provider_file(bundled_provider_file("simulator-md5")).signing.scheme == "md5-sorted-params"


# -- circuit breaker ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, open_seconds=10, clock=clock)
    for _ in range(2):
        assert breaker.acquire()
        breaker.failure()
    assert breaker.acquire()
    breaker.success()  # a success resets the count: failures must be consecutive
    for _ in range(3):
        assert breaker.acquire()
        breaker.failure()
    assert breaker.state is BreakerState.OPEN and not breaker.acquire()

    clock.now += 10
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.acquire()  # the probe
    assert not breaker.acquire()  # only one at a time
    breaker.failure()
    assert breaker.state is BreakerState.OPEN  # a failed probe re-opens for a full interval
    clock.now += 9.9
    assert not breaker.acquire()
    clock.now += 0.1
    assert breaker.acquire()
    breaker.release()  # e.g. cancelled: the slot frees, the circuit stays half-open
    assert breaker.acquire()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot().consecutive_failures == 0


def test_breaker_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(open_seconds=0)


async def test_open_circuit_refuses_without_calling_the_provider(acme) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, open_seconds=10, clock=clock)
    unavailable = [lambda request: httpx.Response(503)] * 3
    adapter, provider = acme(*unavailable, acme_reply(), breaker=breaker)
    for _ in range(3):
        assert (await adapter.submit(REQUEST)).status is TopupStatus.UNKNOWN
    assert adapter.health().state is BreakerState.OPEN

    calls = len(provider.requests)
    with pytest.raises(ProviderUnavailable, match="not sent, nothing was charged") as caught:
        await adapter.submit(REQUEST)
    assert isinstance(caught.value, RerouteError)
    with pytest.raises(ProviderUnavailable):
        await adapter.validate("gem-100", "uid-42")
    with pytest.raises(ProviderUnavailable):
        await adapter.balance()
    queried = await adapter.query("order-1", None)
    assert queried.status is TopupStatus.UNKNOWN and "circuit open" in queried.detail
    assert len(provider.requests) == calls

    clock.now += 10  # half-open: one probe goes out, succeeds, and closes the circuit
    assert (await adapter.submit(REQUEST)).status is TopupStatus.SUCCEEDED
    assert adapter.health().state is BreakerState.CLOSED


async def test_refusals_do_not_trip_the_breaker(acme) -> None:
    adapter, _ = acme({"ret": 1002})
    for _ in range(5):
        with pytest.raises(ProviderRefused):
            await adapter.submit(REQUEST)
    assert adapter.health().state is BreakerState.CLOSED


async def test_cancelled_probe_frees_the_half_open_slot(acme) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, open_seconds=1, clock=clock)
    hang = anyio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await hang.wait()
        return httpx.Response(200, json=acme_reply())

    provider = Provider(httpx.Response(500))
    async with httpx.AsyncClient(transport=httpx.MockTransport(provider.handle)) as client:
        adapter = HttpAdapter(parse_provider_file(ACME), client, secrets=ACME_SECRETS, breaker=breaker)
        await adapter.submit(REQUEST)
        assert breaker.state is BreakerState.OPEN
    clock.now += 1
    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
        adapter = HttpAdapter(parse_provider_file(ACME), client, secrets=ACME_SECRETS, breaker=breaker)
        with anyio.move_on_after(0.05):
            await adapter.submit(REQUEST)
        assert breaker.acquire()  # the cancelled probe gave its slot back


async def test_one_providers_outage_does_not_block_another() -> None:
    hang = anyio.Event()

    async def dead(request: httpx.Request) -> httpx.Response:
        await hang.wait()
        raise httpx.ReadTimeout("never answers", request=request)

    healthy = Provider(acme_reply())
    other = {**ACME, "name": "other"}
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(dead)) as dead_client,
        httpx.AsyncClient(transport=httpx.MockTransport(healthy.handle)) as live_client,
    ):
        down = HttpAdapter(parse_provider_file(ACME), dead_client, secrets=ACME_SECRETS)
        up = HttpAdapter(parse_provider_file(other), live_client, secrets=ACME_SECRETS)
        results: list[Any] = []
        async with anyio.create_task_group() as tasks:
            for _ in range(10):
                tasks.start_soon(down.submit, REQUEST)
            with anyio.fail_after(2):
                for _ in range(5):
                    results.append(await up.submit(REQUEST))
            hang.set()
        assert all(r.status is TopupStatus.SUCCEEDED for r in results)
        # Ten simultaneous timeouts trip `down` (threshold 3); `up` is untouched.
        assert down.health().state is BreakerState.OPEN
        assert up.health().state is BreakerState.CLOSED


# == the conformance suite against the real simulated provider =======================================

# The simulator's fixture credentials (adapters/simulator/config.py `default_config`): local test values
# that guard nothing, passed to the adapter as the explicit secrets mapping.
SIMULATOR_SECRETS = {
    "CARDLESS_SIM_SECRET": "sim-hmac-secret",
    "CARDLESS_SIM_CALLBACK_SECRET": "sim-hmac-callback-secret",
    "CARDLESS_SIM_MD5_SECRET": "sim-md5-secret",
    "CARDLESS_SIM_MD5_CALLBACK_SECRET": "sim-md5-callback-secret",
}


class CallbackReceiver:
    """A real HTTP server (stdlib, own thread) that records every POST it receives."""

    def __init__(self) -> None:
        received: queue.Queue[Callback] = queue.Queue()
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.put(Callback(raw, dict(self.headers.items())))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CallbackReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def drain(self) -> None:
        while not self.received.empty():
            self.received.get_nowait()


class SimulatorBackend:
    """The simulator behind the counter: its fault, ledger and reversal endpoints (no signatures)."""

    valid_sku = "genshin-60"
    unknown_sku = "no-such-sku"
    valid_account = "123456789"
    invalid_account = "abc"

    def __init__(self, http: httpx.AsyncClient, receiver: CallbackReceiver) -> None:
        self.http = http
        self.receiver = receiver
        self.callback_url = receiver.url

    async def arm(self, fault: Fault, *, order_key: str) -> None:
        reply = await self.http.post(
            "/_sim/faults", json={"mode": fault.value, "count": 1, "order_no": order_key}
        )
        reply.raise_for_status()

    async def credits(self, order_key: str) -> int:
        ledger = (await self.http.get("/_sim/ledger")).raise_for_status().json()
        return sum(1 for credit in ledger["credits"] if credit["order_no"] == order_key)

    async def next_callback(self, timeout: float = 5.0) -> Callback:
        return await anyio.to_thread.run_sync(self.receiver.received.get, True, timeout)

    async def reverse(self, order_key: str) -> None:
        # The simulator ships /_sim/reverse: a 404 here is a failure, never a skip.
        reply = await self.http.post("/_sim/reverse", json={"order_no": order_key})
        reply.raise_for_status()


# A short read timeout, so the `timeout` fault costs 0.4 s, not the file's ten: the in-process simulator
# answers everything else within milliseconds (no test here arms a `latency` fault).
SHORT_TIMEOUTS = Timeouts(connect=2, read=0.4, write=2, pool=2)
# httpx builds a TLS context for every client made without one (~25 ms: the CA bundle is read again);
# the suite made two per test. One, as httpx would build it, for all (the simulator is plain HTTP anyway).
TLS = httpx.create_ssl_context()


@pytest.fixture(scope="module")
def simulator() -> Iterator[Any]:
    # Quick async completion, and a `timeout` fault that lets go soon after our client gives up.
    config = default_config().model_copy(update={"async_delay_ms": 50, "timeout_hold_s": 5.0})
    with SimulatorServer(config, host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackReceiver]:
    with CallbackReceiver() as callbacks:
        yield callbacks


class TestSimulatorConformance(AdapterConformance):
    """``simulator.toml``: the HMAC-SHA256 merchant."""

    provider_file = "simulator"

    @pytest.fixture
    async def backend(self, simulator, receiver) -> AsyncIterator[SimulatorBackend]:
        async with httpx.AsyncClient(base_url=simulator.url, timeout=10, verify=TLS) as http:
            (await http.post("/_sim/reset")).raise_for_status()
            receiver.drain()
            yield SimulatorBackend(http, receiver)

    @pytest.fixture
    async def adapter(self, simulator, backend) -> AsyncIterator[HttpAdapter]:
        config = load_provider_file(bundled_provider_file(self.provider_file))
        config = config.model_copy(update={"timeouts": SHORT_TIMEOUTS})
        async with httpx.AsyncClient(verify=TLS) as client:
            yield HttpAdapter(config, client, secrets=SIMULATOR_SECRETS, base_url=simulator.url)

    async def test_wrong_secret_is_an_authentication_failure(self, simulator, backend) -> None:
        config = load_provider_file(bundled_provider_file(self.provider_file))
        secrets = {name: "wrong" for name in SIMULATOR_SECRETS}
        async with httpx.AsyncClient(verify=TLS) as client:
            adapter = HttpAdapter(config, client, secrets=secrets, base_url=simulator.url)
            with pytest.raises(AuthenticationFailed):
                await adapter.submit(TopupRequest("auth-1", backend.valid_sku, backend.valid_account))
        assert await backend.credits("auth-1") == 0

    async def test_clock_skew_beyond_the_providers_window_is_an_authentication_failure(
        self, simulator, backend
    ) -> None:
        config = load_provider_file(bundled_provider_file(self.provider_file))
        async with httpx.AsyncClient(verify=TLS) as client:
            adapter = HttpAdapter(
                config,
                client,
                secrets=SIMULATOR_SECRETS,
                base_url=simulator.url,
                clock=lambda: time.time() - 900,
            )
            with pytest.raises(AuthenticationFailed):
                await adapter.balance()


class TestSimulatorMd5Conformance(TestSimulatorConformance):
    """``simulator-md5.toml``: the same provider through its MD5-of-sorted-params merchant."""

    provider_file = "simulator-md5"


class TestSimulatorConformanceLeanTransport(TestSimulatorConformance):
    """The same suite through ``adapters.transport.LeanTransport``, the transport the oracle and the
    gateway give their provider clients (``cardless.cli.adapters``): every fault mode (timeouts, resets,
    5xx, garbage, lost replies) must mean to the adapter exactly what it means through httpx's own."""

    @pytest.fixture
    async def adapter(self, simulator, backend) -> AsyncIterator[HttpAdapter]:
        config = load_provider_file(bundled_provider_file(self.provider_file))
        config = config.model_copy(update={"timeouts": SHORT_TIMEOUTS})
        async with httpx.AsyncClient(transport=LeanTransport(httpx.Limits(max_connections=8))) as client:
            adapter = HttpAdapter(config, client, secrets=SIMULATOR_SECRETS, base_url=simulator.url)
            assert adapter._raw is not None  # the raw path, as in the gateway and the oracle
            yield adapter


class _HttpxWayOnly(httpx.AsyncBaseTransport):
    """``LeanTransport`` without its ``raw_exchange``: the adapter sends through httpx's client."""

    def __init__(self, inner: LeanTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class TestSimulatorConformanceLeanTransportHttpxWay(TestSimulatorConformance):
    """The suite above goes by the adapter's raw path (a plain client over ``LeanTransport``: the request
    written as bytes, ``LeanTransport.exchange``); this one through httpx's client and
    ``LeanTransport.handle_async_request``, the way a client that adds to requests takes."""

    @pytest.fixture
    async def adapter(self, simulator, backend) -> AsyncIterator[HttpAdapter]:
        config = load_provider_file(bundled_provider_file(self.provider_file))
        config = config.model_copy(update={"timeouts": SHORT_TIMEOUTS})
        transport = _HttpxWayOnly(LeanTransport(httpx.Limits(max_connections=8)))
        async with httpx.AsyncClient(transport=transport) as client:
            adapter = HttpAdapter(config, client, secrets=SIMULATOR_SECRETS, base_url=simulator.url)
            assert adapter._raw is None
            yield adapter
