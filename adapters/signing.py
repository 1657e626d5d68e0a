"""Request and callback signing schemes a provider file can name.

Both parameter schemes sign the same *sign string* (docs/design/simulator-api.md, "Signing"):
``k1=v1&k2=v2...`` over every top-level field except the sign field, keys sorted bytewise (UTF-8),
fields whose value is ``None`` or ``""`` omitted, values rendered as plain strings (integers in
decimal, booleans as ``true``/``false``).

- ``hmac-sha256``: lowercase hex ``HMAC-SHA256(secret, sign_string)``.
- ``md5-sorted-params``: uppercase hex ``MD5(sign_string + "&key=" + secret)``; the scheme many
  publishers' direct top-up APIs use. MD5 is the provider's choice, not ours; it is only as strong
  as the secret is long.

Callbacks signed in a header use ``hmac-sha256`` over a message built from the header timestamp and
the raw body (``hmac_sha256_message``). All comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

__all__ = [
    "ParamScheme",
    "callback_message",
    "hmac_sha256_hex",
    "render_value",
    "sign_params",
    "sign_string",
    "verify_params",
]

ParamScheme = Literal["hmac-sha256", "md5-sorted-params"]


def render_value(key: str, value: object) -> str:
    """A field value as the sign string (and a query string) spells it."""
    # bool before int: bool is an int subclass and must not render as 1/0.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"cannot sign field {key!r}: {type(value).__name__} values have no agreed rendering")


def sign_string(params: Mapping[str, object], *, sign_field: str = "sign") -> str:
    """The canonical ``k=v&...`` string the parameter schemes sign."""
    items = [
        (key, render_value(key, value))
        for key, value in params.items()
        if key != sign_field and value is not None and value != ""
    ]
    items.sort(key=lambda item: item[0].encode("utf-8"))
    return "&".join(f"{key}={value}" for key, value in items)


def sign_params(
    scheme: ParamScheme, secret: str, params: Mapping[str, object], *, sign_field: str = "sign"
) -> str:
    """The signature of ``params`` (the sign field itself, if present, is ignored)."""
    message = sign_string(params, sign_field=sign_field)
    if scheme == "hmac-sha256":
        return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()
    if scheme == "md5-sorted-params":
        return hashlib.md5(f"{message}&key={secret}".encode(), usedforsecurity=False).hexdigest().upper()
    raise ValueError(f"unknown signing scheme {scheme!r}")


def verify_params(
    scheme: ParamScheme, secret: str, params: Mapping[str, object], *, sign_field: str = "sign"
) -> bool:
    """True if ``params[sign_field]`` is the right signature for the other fields."""
    given = params.get(sign_field)
    if not isinstance(given, str) or not given:
        return False
    try:
        expected = sign_params(scheme, secret, params, sign_field=sign_field)
    except TypeError:
        return False  # a nested or float value: not something this provider could have signed
    # The MD5 scheme is uppercase by definition; accept either case for both, as providers vary.
    return hmac.compare_digest(expected.lower(), given.lower())


def callback_message(template: str, timestamp: str, raw_body: bytes) -> bytes:
    """Fill a template such as ``{timestamp}.{body}`` with the header timestamp and the raw body.

    Works on bytes so the body is signed exactly as received, whatever its encoding.
    """
    head, sep, tail = template.partition("{body}")
    if not sep:
        raise ValueError("a callback message template must contain {body}")
    return (
        head.replace("{timestamp}", timestamp).encode("utf-8")
        + raw_body
        + tail.replace("{timestamp}", timestamp).encode("utf-8")
    )


def hmac_sha256_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
