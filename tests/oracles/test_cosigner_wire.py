"""The co-signer's wire rules without a server: request authentication (HMAC, clock window, nonces) and
the bounded parsing of the two requests (``oracles.cosigner_wire``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from oracles.cosigner_wire import (
    FULFILMENTS_PATH,
    MAX_BATCH,
    REFUND_PATH,
    CoSignerAuthError,
    CoSignerRequestError,
    RequestAuth,
    parse_fulfilments,
    parse_refund,
    sign_headers,
)

SECRET = b"s" * 32
NOW = 1_900_000_000.0
BODY = b'{"order_id": "0x00"}'


def _auth(**kwargs: Any) -> RequestAuth:
    return RequestAuth(SECRET, clock=lambda: NOW, **kwargs)


def test_a_signed_request_passes_once_and_its_replay_is_refused() -> None:
    auth = _auth()
    headers = sign_headers(SECRET, "POST", REFUND_PATH, BODY, now=NOW)
    auth.verify("POST", REFUND_PATH, headers, BODY)
    with pytest.raises(CoSignerAuthError, match="replay"):
        auth.verify("POST", REFUND_PATH, headers, BODY)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"secret": b"t" * 32}, "bad signature"),
        ({"path": FULFILMENTS_PATH}, "bad signature"),
        ({"body": BODY + b" "}, "bad signature"),
        ({"now": NOW - 31}, "more than 30 s"),
        ({"now": NOW + 31}, "more than 30 s"),
    ],
)
def test_another_secret_path_body_or_a_clock_outside_the_window_is_refused(
    change: dict[str, Any], why: str
) -> None:
    headers = sign_headers(
        change.get("secret", SECRET),
        "POST",
        change.get("path", REFUND_PATH),
        change.get("body", BODY),
        now=change.get("now", NOW),
    )
    with pytest.raises(CoSignerAuthError, match=why):
        _auth().verify("POST", REFUND_PATH, headers, BODY)


def test_missing_or_malformed_headers_are_refused_and_short_secrets_are_not_accepted() -> None:
    good = sign_headers(SECRET, "POST", REFUND_PATH, BODY, now=NOW)
    for broken in ({}, {**good, "X-Cardless-Nonce": "short"}, {**good, "X-Cardless-Timestamp": "-1"}):
        with pytest.raises(CoSignerAuthError, match="malformed"):
            _auth().verify("POST", REFUND_PATH, broken, BODY)
    with pytest.raises(ValueError, match="at least 32"):
        RequestAuth(b"x" * 31)


def test_the_nonce_memory_is_bounded() -> None:
    auth = _auth(max_nonces=4)
    for _ in range(4):
        auth.verify("POST", REFUND_PATH, sign_headers(SECRET, "POST", REFUND_PATH, BODY, now=NOW), BODY)
    with pytest.raises(CoSignerAuthError, match="too many"):
        auth.verify("POST", REFUND_PATH, sign_headers(SECRET, "POST", REFUND_PATH, BODY, now=NOW), BODY)


def _item(**overrides: Any) -> dict[str, Any]:
    return {
        "order_id": "0x" + "11" * 32,
        "receipt_hash": "0x" + "22" * 32,
        "fulfilled_at": 1_700_000_000,
        "paid_tx": "0x" + "33" * 32,
        "provider": "simulator",
        **overrides,
    }


def test_fulfilment_requests_parse_and_every_malformed_field_is_named() -> None:
    (request,) = parse_fulfilments({"fulfilments": [_item()]})
    assert request.as_json() == _item()
    cases: list[tuple[Any, str]] = [
        ([], "body"),
        ({"fulfilments": [_item()], "x": 1}, "body"),
        ({"fulfilments": []}, f"1 to {MAX_BATCH}"),
        ({"fulfilments": [_item(order_id=f"0x{i:064x}") for i in range(MAX_BATCH + 1)]}, f"1 to {MAX_BATCH}"),
        ({"fulfilments": [_item(), _item()]}, r"fulfilments\[1\].order_id: repeated"),
        ({"fulfilments": [_item(order_id="0x11")]}, "order_id: must be 0x and 64 hex digits"),
        ({"fulfilments": [_item(fulfilled_at=True)]}, "fulfilled_at: must be an integer"),
        ({"fulfilments": [_item(fulfilled_at=2**48)]}, "fulfilled_at: must be an integer"),
        ({"fulfilments": [_item(provider="../etc")]}, "provider: must be a provider name"),
        ({"fulfilments": [{**_item(), "debug": 1}]}, r"fulfilments\[0\]: must be an object"),
    ]
    for document, message in cases:
        with pytest.raises(CoSignerRequestError, match=message):
            parse_fulfilments(json.loads(json.dumps(document)))


def test_refund_requests_take_only_the_protocols_reasons() -> None:
    body = {"order_id": "0x" + "11" * 32, "reason_code": 1, "paid_tx": "0x" + "22" * 32}
    assert parse_refund(body).as_json() == body
    with pytest.raises(CoSignerRequestError, match="not a refund reason"):
        parse_refund({**body, "reason_code": 999})
    with pytest.raises(CoSignerRequestError, match="paid_tx"):
        parse_refund({**body, "paid_tx": None})
