"""Webhook signatures and destinations: what a merchant's receiver and Cardless agree on (no I/O).

A delivery is an HTTP POST whose body is the event's JSON, exactly as stored when the event was
written (the bytes never change between attempts). It carries::

    Cardless-Event-Id: evt_...           the event's stable id: a redelivery repeats it (de-duplicate on it)
    Cardless-Event-Type: order.paid
    Cardless-Signature: t=1764760000,v1=5257a8...[,v1=...]

``v1`` is ``hex(HMAC-SHA256(secret, f"{t}." + body))``; during a secret rotation there is one ``v1`` per
live secret (the new one first). A receiver accepts the delivery when one ``v1`` matches a secret it
holds and ``t`` is within :data:`TOLERANCE_SECONDS` of its clock (a replay of an old delivery fails).
This is the scheme Stripe uses, so receivers written for it port directly. docs/webhooks.md shows a
verifier in Python and in Node; :func:`verify` is the reference.

Destinations: a webhook URL must not let a merchant make Cardless call into its own network, so
outside development every address its host resolves to must be public (:func:`address_refusal`);
the caller resolves (this module does no I/O) at registration and again at every delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Sequence

from cardless.protocol._exceptions import ProtocolBaseError

__all__ = [
    "EVENT_HEADER",
    "EVENT_TYPES",
    "SIGNATURE_HEADER",
    "TOLERANCE_SECONDS",
    "TYPE_HEADER",
    "SignatureMismatch",
    "address_refusal",
    "generate_secret",
    "sign",
    "signature_header",
    "verify",
]

EVENT_TYPES: tuple[str, ...] = (
    "order.paid",
    "order.fulfilled",
    "order.settled",
    "order.refunded",
    "order.reclaimed",
    "payout.sent",
)
SIGNATURE_HEADER = "Cardless-Signature"
EVENT_HEADER = "Cardless-Event-Id"
TYPE_HEADER = "Cardless-Event-Type"
TOLERANCE_SECONDS = 300
SECRET_PREFIX = "whsec_"


class SignatureMismatch(ProtocolBaseError):  # noqa: N818 - the outcome, like ContractRevert
    """A delivery's signature header is malformed, stale or signed by no secret the receiver holds."""


def generate_secret() -> str:
    """A new endpoint secret: ``whsec_`` and 32 random bytes in base64url (43 characters)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``hex(HMAC-SHA256(secret, f"{timestamp}." + body))``: one ``v1`` value."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(live_secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """``t=<timestamp>,v1=<sig>[,v1=<sig>...]``, one ``v1`` per secret (the newest first)."""
    if not live_secrets:
        raise ValueError("at least one secret is needed to sign")
    return ",".join([f"t={timestamp}", *(f"v1={sign(s, timestamp, body)}" for s in live_secrets)])


def verify(
    body: bytes,
    header: str,
    accepted_secrets: Sequence[str],
    *,
    now: int,
    tolerance: int = TOLERANCE_SECONDS,
) -> int:
    """Check ``header`` against ``body`` and any of ``accepted_secrets``; returns the signed timestamp.

    Raises :class:`SignatureMismatch` when the header is malformed, its timestamp is more than
    ``tolerance`` seconds from ``now`` (either way), or no ``v1`` matches any accepted secret."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureMismatch(f"malformed signature header element {part!r}")
        if key == "t":
            if timestamp is not None:
                raise SignatureMismatch("the signature header has more than one t=")
            if not (value.isascii() and value.isdigit()) or len(value) > 12:
                raise SignatureMismatch("the signature timestamp is not unix seconds")
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureMismatch("the signature header needs t= and at least one v1=")
    if abs(now - timestamp) > tolerance:
        raise SignatureMismatch(f"the signature timestamp is {now - timestamp} s away from now")
    for secret in accepted_secrets:
        expected = sign(secret, timestamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return timestamp
    raise SignatureMismatch("no v1 signature matches")


def address_refusal(address: str) -> str | None:
    """Why a webhook may not be sent to ``address`` (an IP address as text), or None if it is public.

    Refused: loopback, private (RFC 1918, ULA), link-local (cloud metadata at 169.254.169.254),
    shared (100.64/10), unspecified, multicast, reserved and documentation ranges, and IPv6 forms
    that embed such an IPv4 address (``::ffff:10.0.0.1``, NAT64 aside)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            refusal = address_refusal(str(embedded))
            if refusal is not None:
                return f"{ip} embeds {refusal}"
    for kind, flag in (
        ("a loopback", ip.is_loopback),
        ("an unspecified", ip.is_unspecified),
        ("a link-local", ip.is_link_local),
        ("a multicast", ip.is_multicast),
        ("a private", ip.is_private),
        ("a reserved", ip.is_reserved),
    ):
        if flag:
            return f"{ip} is {kind} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None
