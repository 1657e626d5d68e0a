"""The co-signer's wire format, shared by the service (``oracles.cosigner``) and its HTTP client
(``oracles.proofs.HttpCoSigner``): the two requests, their bounded parsing, the request authentication and
the errors.

Authentication: ``X-Cardless-Signature: v1=<hex HMAC-SHA256>`` over the timestamp, a nonce, the method, the
path and the body, under a secret the oracle and the co-signer share (at least 32 bytes). The co-signer
refuses a timestamp more than ``AUTH_TOLERANCE_SECONDS`` from its clock and a nonce it has seen, so a
captured request cannot be sent again; the MAC is compared in constant time.

Errors::

    OracleError
    └── CoSignerError            root of the co-signer's errors
        ├── CoSignerRefusedError      the co-signer checked and will not sign; ``refusals`` say why, per order
        ├── CoSignerAuthError    a request failed authentication (the server answers 401, no details)
        ├── CoSignerRequestError           a body that is not what the API takes (400, naming the field)
        └── CoSignerUnavailableError  the co-signer could not be reached or answered garbage (client side)
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from cardless.protocol import Fulfilment, RefundReason
from oracles._exceptions import OracleError

__all__ = [
    "AUTH_TOLERANCE_SECONDS",
    "FULFILMENTS_PATH",
    "MAX_BATCH",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "MIN_SECRET_LENGTH",
    "REFUND_PATH",
    "CoSignerAuthError",
    "CoSignerError",
    "CoSignerRefusedError",
    "CoSignerRequestError",
    "CoSignerUnavailableError",
    "FulfilmentRequest",
    "RefundRequest",
    "Refusal",
    "RequestAuth",
    "parse_fulfilments",
    "parse_refund",
    "sign_headers",
]

FULFILMENTS_PATH: Final = "/v1/sign/fulfilments"
REFUND_PATH: Final = "/v1/sign/refund"
MAX_BATCH: Final = 200
"""Fulfilments in one request at most (the oracle's ``max_batch`` is at most 200)."""
MAX_BODY_BYTES: Final = 128 * 1024
"""A request of 200 fulfilments is about 60 KB."""
MAX_JSON_DEPTH: Final = 4
"""``{"fulfilments": [{...}]}`` is 3 levels deep."""
AUTH_TOLERANCE_SECONDS: Final = 30
"""How far a request's timestamp may be from the co-signer's clock (both ways)."""
MIN_SECRET_LENGTH: Final = 32

HEADER_TIMESTAMP: Final = "X-Cardless-Timestamp"
HEADER_NONCE: Final = "X-Cardless-Nonce"
HEADER_SIGNATURE: Final = "X-Cardless-Signature"

_HEX32 = re.compile(r"0x[0-9a-fA-F]{64}")
_NONCE = re.compile(r"[A-Za-z0-9_\-]{16,64}")
_PROVIDER = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class CoSignerError(OracleError):
    """Root of the co-signer's errors."""


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why the co-signer will not sign for one order (safe to show the oracle: no internals)."""

    order_id: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"order_id": self.order_id, "reason": self.reason}


class CoSignerRefusedError(CoSignerError):
    """The co-signer checked the request and will not sign it."""

    def __init__(self, refusals: Sequence[Refusal]) -> None:
        self.refusals = list(refusals)
        super().__init__("; ".join(f"{r.order_id}: {r.reason}" for r in self.refusals) or "refused")


class CoSignerAuthError(CoSignerError):
    """A request failed authentication; the reason is logged, never returned."""


class CoSignerUnavailableError(CoSignerError):
    """The co-signer could not be reached, timed out or answered something that is not a signature."""


# ---------------------------------------------------------------------------------------------- requests


@dataclasses.dataclass(frozen=True)
class FulfilmentRequest:
    """One fulfilment to co-sign, with where to look it up: the payment transaction and the provider."""

    fulfilment: Fulfilment
    paid_tx: bytes
    provider: str

    @property
    def order_hex(self) -> str:
        return "0x" + self.fulfilment.order_id.hex()

    def as_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_hex,
            "receipt_hash": "0x" + self.fulfilment.receipt_hash.hex(),
            "fulfilled_at": self.fulfilment.fulfilled_at,
            "paid_tx": "0x" + self.paid_tx.hex(),
            "provider": self.provider,
        }


@dataclasses.dataclass(frozen=True)
class RefundRequest:
    order_id: bytes
    reason_code: int
    paid_tx: bytes

    @property
    def order_hex(self) -> str:
        return "0x" + self.order_id.hex()

    def as_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_hex,
            "reason_code": self.reason_code,
            "paid_tx": "0x" + self.paid_tx.hex(),
        }


class CoSignerRequestError(CoSignerError, ValueError):
    """A request body that is not what the API takes (the message names the field, nothing else)."""


def _hex32(document: Mapping[str, Any], field: str) -> bytes:
    value = document.get(field)
    if not isinstance(value, str) or not _HEX32.fullmatch(value):
        raise CoSignerRequestError(f"{field}: must be 0x and 64 hex digits")
    return bytes.fromhex(value[2:])


def _int(document: Mapping[str, Any], field: str, maximum: int) -> int:
    value = document.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise CoSignerRequestError(f"{field}: must be an integer from 0 to {maximum}")
    return value


def _exact_keys(document: Any, keys: set[str], where: str) -> Mapping[str, Any]:
    if not isinstance(document, dict) or set(document) != keys:
        raise CoSignerRequestError(f"{where}: must be an object with exactly {sorted(keys)}")
    return document


def parse_fulfilments(document: Any) -> list[FulfilmentRequest]:
    body = _exact_keys(document, {"fulfilments"}, "body")
    items = body["fulfilments"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise CoSignerRequestError(f"fulfilments: must be a list of 1 to {MAX_BATCH}")
    requests = []
    seen: set[bytes] = set()
    for index, item in enumerate(items):
        entry = _exact_keys(
            item, {"order_id", "receipt_hash", "fulfilled_at", "paid_tx", "provider"}, f"fulfilments[{index}]"
        )
        provider = entry["provider"]
        if not isinstance(provider, str) or not _PROVIDER.fullmatch(provider):
            raise CoSignerRequestError(f"fulfilments[{index}].provider: must be a provider name")
        order_id = _hex32(entry, "order_id")
        if order_id in seen:
            raise CoSignerRequestError(f"fulfilments[{index}].order_id: repeated")
        seen.add(order_id)
        requests.append(
            FulfilmentRequest(
                Fulfilment(order_id, _hex32(entry, "receipt_hash"), _int(entry, "fulfilled_at", 2**48 - 1)),
                _hex32(entry, "paid_tx"),
                provider,
            )
        )
    return requests


def parse_refund(document: Any) -> RefundRequest:
    entry = _exact_keys(document, {"order_id", "reason_code", "paid_tx"}, "body")
    reason = _int(entry, "reason_code", 2**16 - 1)
    if reason not in {int(r) for r in RefundReason}:
        raise CoSignerRequestError("reason_code: not a refund reason of the protocol")
    return RefundRequest(_hex32(entry, "order_id"), reason, _hex32(entry, "paid_tx"))


# -------------------------------------------------------------------------------------------------- auth


def _mac(secret: bytes, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    head = f"{timestamp}\n{nonce}\n{method.upper()}\n{path}\n".encode()
    return hmac.new(secret, head + body, hashlib.sha256).hexdigest()


def sign_headers(
    secret: bytes, method: str, path: str, body: bytes, *, now: float | None = None, nonce: str | None = None
) -> dict[str, str]:
    """The authentication headers of one request (a fresh nonce each call: a retry is a new request)."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = nonce or secrets.token_urlsafe(18)
    return {
        HEADER_TIMESTAMP: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: "v1=" + _mac(secret, method, path, timestamp, nonce, body),
    }


class RequestAuth:
    """Checks a request's HMAC (constant-time), its timestamp (within ``tolerance`` seconds) and its nonce
    (never seen within the tolerance window: a captured request cannot be sent again)."""

    def __init__(
        self,
        secret: bytes,
        *,
        tolerance: int = AUTH_TOLERANCE_SECONDS,
        clock: Callable[[], float] = time.time,
        max_nonces: int = 100_000,
    ) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"the co-signer secret must be at least {MIN_SECRET_LENGTH} bytes")
        self.secret = secret
        self.tolerance = tolerance
        self.clock = clock
        self.max_nonces = max_nonces
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> None:
        timestamp = headers.get(HEADER_TIMESTAMP.lower()) or headers.get(HEADER_TIMESTAMP) or ""
        nonce = headers.get(HEADER_NONCE.lower()) or headers.get(HEADER_NONCE) or ""
        given = headers.get(HEADER_SIGNATURE.lower()) or headers.get(HEADER_SIGNATURE) or ""
        if not timestamp.isdigit() or len(timestamp) > 12 or not _NONCE.fullmatch(nonce):
            raise CoSignerAuthError("missing or malformed authentication headers")
        expected = "v1=" + _mac(self.secret, method, path, timestamp, nonce, body)
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise CoSignerAuthError("bad signature")
        now = self.clock()
        if abs(now - int(timestamp)) > self.tolerance:
            raise CoSignerAuthError(f"timestamp {timestamp} is more than {self.tolerance} s from {int(now)}")
        with self._lock:
            # forget nonces whose timestamps can no longer pass the window check
            if len(self._nonces) >= self.max_nonces // 2:
                self._nonces = {n: t for n, t in self._nonces.items() if t > now - 2 * self.tolerance}
            if nonce in self._nonces:
                raise CoSignerAuthError("nonce seen before (a replay)")
            if len(self._nonces) >= self.max_nonces:
                raise CoSignerAuthError("too many requests in the replay window")
            self._nonces[nonce] = now
