"""Domain errors become problem+json in one place (gateway.api.errors): each class's status, its body
(RFC 9457 fields, the field at fault named in ``errors`` and at the start of ``detail``) and headers.

The first half raises each error from a bare route on an app with only the gateway's handlers; the
second provokes the ones no other test module does through the running gateway (unknown SKU, order
and provider, refused fields and provider outages are in test_quotes and test_orders_api).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

import httpx
import pytest
from fastapi import FastAPI

import gateway.services
from adapters.simulator.signing import callback_signature
from cardless.cli.system import System
from cardless.protocol import CardlessError
from gateway.api.errors import STATUS, install_error_handlers, status_of
from gateway.services import (
    Allowance,
    CallbackRejected,
    Conflict,
    Forbidden,
    GatewayError,
    InvalidField,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)
from tests.support.shop import Shop, assert_problem


class _Gone(NotFound):
    """A subclass nobody mapped: it takes its parent's status."""


class _UnmappedError(GatewayError):
    pass


RAISED: dict[str, GatewayError] = {
    "not-found": NotFound("sku", "unknown SKU 'x'"),
    "invalid": InvalidField("token", "not sold in 'DOGE'"),
    "callback": CallbackRejected("callback rejected: signature does not match"),
    "unavailable": ServiceUnavailable("no provider can deliver this order now", retry_after=7),
    "limited": RateLimited(
        "too many quotes per client; retry after 9 s",
        retry_after=9,
        allowances=[Allowance(policy="client", limit=2, window=60, remaining=0, reset=9)],
    ),
    "subclass": _Gone("order_id", "order 0x01 not found"),
    "unmapped": _UnmappedError("something new"),
}


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{kind}")
    def _raise(kind: str) -> None:
        if kind == "bug":
            raise RuntimeError("secret internals")
        raise RAISED[kind]

    return app


def _get(path: str) -> httpx.Response:
    """GET ``path`` from the bare app in process (an unexpected exception answers 500, not raises)."""

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(_app(), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            return await http.get(path)

    return asyncio.run(call())


@pytest.mark.parametrize(
    ("kind", "status", "field"),
    [
        ("not-found", 404, "sku"),
        ("invalid", 422, "token"),
        ("callback", 401, None),
        ("unavailable", 503, None),
        ("limited", 429, None),
        ("subclass", 404, "order_id"),
        ("unmapped", 500, None),
    ],
)
def test_each_domain_error_has_its_status_and_problem_body(kind: str, status: int, field: str | None) -> None:
    response = _get(f"/raise/{kind}")
    body = assert_problem(response, status, field)
    error = RAISED[kind]
    assert body["type"] == "about:blank"
    assert body["detail"] == str(error)
    if field is None:
        assert "errors" not in body
    else:
        assert body["errors"] == [{"field": field, "message": error.message}]
    assert ("retry-after" in response.headers) is (kind in ("unavailable", "limited"))
    assert ("ratelimit" in response.headers) is (kind == "limited")


def test_a_wrong_method_is_a_405_problem_naming_the_allowed_methods(api: httpx.Client) -> None:
    for method, path, allowed in [
        ("POST", "/v1/catalogue", "GET"),
        ("DELETE", "/v1/orders/0x" + "0e" * 32, "GET"),
        ("GET", "/v1/quotes", "POST"),
    ]:
        response = api.request(method, path)
        body = assert_problem(response, 405)
        assert body["detail"] == "Method Not Allowed"
        assert response.headers["Allow"] == allowed


def test_service_unavailable_says_when_to_retry() -> None:
    assert _get("/raise/unavailable").headers["retry-after"] == "7"


def test_an_unexpected_exception_is_a_500_problem_that_discloses_nothing() -> None:
    body = assert_problem(_get("/raise/bug"), 500)
    assert "secret" not in json.dumps(body)


def test_every_public_domain_error_is_mapped_and_shares_the_cardless_root() -> None:
    public = {
        value
        for name in gateway.services.__all__
        if isinstance(value := getattr(gateway.services, name), type) and issubclass(value, BaseException)
    }
    assert public == {
        GatewayError,
        NotFound,
        InvalidField,
        CallbackRejected,
        Unauthorized,
        Forbidden,
        Conflict,
        ServiceUnavailable,
        RateLimited,
    }
    assert all(issubclass(cls, CardlessError) for cls in public)
    assert set(STATUS) == public - {GatewayError}
    assert status_of(_Gone("x", "y")) == 404


# ---------------------------------------------------------------------------------------- the real routes


def test_forged_callback_is_401_without_a_field(shop: Shop) -> None:
    response = shop.api.post("/v1/providers/simulator/callback", content=b"{}")
    body = assert_problem(response, 401)
    assert "errors" not in body


@pytest.mark.parametrize("stamp", [b"\xb2", b"17\xb9\xb2", "\uff11\uff17".encode(), b"1" * 5000])
def test_callback_timestamp_that_is_not_ascii_digits_is_401_not_a_crash(
    shop: Shop, system: System, stamp: bytes
) -> None:
    """'²' passes str.isdigit() and then fails int(): it used to answer 500 with a traceback. Signed
    with the real secret, so only the timestamp can be what is refused."""
    secret = next(m for m in system.simulator_config.merchants if m.id == "cardless-hmac").callback_secret
    raw = json.dumps({"code": "OK", "status": "SUCCESS", "timestamp": 1}).encode()
    signature = hmac.new(secret.encode(), stamp + b"." + raw, hashlib.sha256).hexdigest()
    headers = {"X-Sim-Timestamp": stamp, "X-Sim-Signature": signature}
    response = shop.api.post("/v1/providers/simulator/callback", content=raw, headers=headers)
    assert_problem(response, 401)
    assert "unix seconds" in response.json()["detail"]


def test_authentic_callback_naming_no_order_is_invalid_naming_the_body(shop: Shop, system: System) -> None:
    secret = next(m for m in system.simulator_config.merchants if m.id == "cardless-hmac").callback_secret
    stamp = str(int(time.time()))
    raw = json.dumps({"code": "OK", "status": "SUCCESS", "timestamp": int(stamp)}).encode()
    headers = {"X-Sim-Timestamp": stamp, "X-Sim-Signature": callback_signature(secret, stamp, raw)}
    before = shop.counts()
    response = shop.api.post("/v1/providers/simulator/callback", content=raw, headers=headers)
    assert_problem(response, 422, "body")
    assert shop.counts() == before
