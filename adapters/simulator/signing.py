"""Request and callback signatures of the simulated provider (docs/design/simulator-api.md, "Signing").

This is the provider's side of the contract. The generic HTTP adapter implements its own signer from
the spec; tests may cross-check the two, but the adapter must not import this module.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal, get_args

__all__ = [
    "SignScheme",
    "UnsignableValueError",
    "callback_signature",
    "sign",
    "sign_string",
    "signed",
    "verify",
    "verify_callback",
]

SignScheme = Literal["hmac-sha256", "md5-sorted-params"]
SIGN_SCHEMES: tuple[SignScheme, ...] = get_args(SignScheme)


class UnsignableValueError(ValueError):
    """A top-level field is not a string, an integer or null, so it has no agreed rendering."""

    def __init__(self, key: str, value: object) -> None:
        super().__init__(
            f"field {key!r} has type {type(value).__name__}; only str, int or null can be signed"
        )
        self.key = key


def _render(key: str, value: object) -> str | None:
    if value is None:
        return None
    # bool is an int subclass; "True" vs "true" is exactly the ambiguity the spec avoids by refusing it.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise UnsignableValueError(key, value)
    text = value if isinstance(value, str) else str(value)
    return text or None


def sign_string(fields: Mapping[str, object]) -> str:
    """`k1=v1&k2=v2...` over all fields but `sign`, keys sorted bytewise, empty and null values left out."""
    pairs: list[tuple[bytes, str, str]] = []
    for key, value in fields.items():
        if key == "sign":
            continue
        text = _render(key, value)
        if text is not None:
            pairs.append((key.encode("utf-8"), key, text))
    pairs.sort()
    return "&".join(f"{key}={text}" for _, key, text in pairs)


def sign(fields: Mapping[str, object], secret: str, scheme: SignScheme) -> str:
    """The `sign` value for `fields` under `scheme`."""
    base = sign_string(fields)
    if scheme == "hmac-sha256":
        return hmac.new(secret.encode("utf-8"), base.encode("utf-8"), hashlib.sha256).hexdigest()
    if scheme == "md5-sorted-params":
        return hashlib.md5(f"{base}&key={secret}".encode()).hexdigest().upper()
    raise ValueError(f"unknown signing scheme {scheme!r}")


def signed(fields: Mapping[str, object], secret: str, scheme: SignScheme) -> dict[str, object]:
    """A copy of `fields` with its `sign` added (what a client POSTs)."""
    body = {key: value for key, value in fields.items() if key != "sign"}
    body["sign"] = sign(body, secret, scheme)
    return body


def verify(fields: Mapping[str, object], secret: str, scheme: SignScheme) -> bool:
    """Whether `fields["sign"]` is the exact signature of `fields` (case matters: the spec fixes it)."""
    claimed = fields.get("sign")
    if not isinstance(claimed, str):
        return False
    try:
        expected = sign(fields, secret, scheme)
    except UnsignableValueError:
        return False
    return hmac.compare_digest(claimed.encode("utf-8"), expected.encode("utf-8"))


def callback_signature(secret: str, timestamp: str, raw_body: bytes) -> str:
    """`X-Sim-Signature`: lowercase hex HMAC-SHA256(callback_secret, timestamp + "." + raw_body)."""
    message = timestamp.encode("utf-8") + b"." + raw_body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify_callback(secret: str, timestamp: str, raw_body: bytes, signature: str) -> bool:
    """Whether `signature` is the callback signature of `raw_body` at `timestamp` (no clock check here)."""
    expected = callback_signature(secret, timestamp, raw_body)
    return hmac.compare_digest(signature.encode("utf-8"), expected.encode("utf-8"))
