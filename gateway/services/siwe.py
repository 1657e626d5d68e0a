"""Sign-In with Ethereum (EIP-4361): a single-use nonce, a strictly parsed message, its domain, chain
and times checked, the signature recovered with eth-account (:func:`verify`); then a bearer session.
Buyers' sessions are made here; merchants' (the dashboard) in ``gateway.services.merchant_sessions``,
through the same :func:`verify` and the same nonces.

The ``siwe`` package on PyPI pins web3 < 8 (we run 8), so the message is parsed here, to the EIP's
ABNF: the lines in their order, nothing else. Only externally owned accounts sign in (EIP-191
``personal_sign``); contract wallets (EIP-1271) are not accepted yet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_checksum_address
from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from cardless.ledger.models import BuyerSession, MerchantSession, SiweNonce, utcnow
from gateway.merchant_schemas import SiweNonceOut, SiweSessionOut
from gateway.services._exceptions import InvalidField, Unauthorized

__all__ = [
    "NONCE_TTL",
    "SESSION_PREFIX",
    "SESSION_TTL",
    "SiweMessage",
    "authenticate_session",
    "issue_nonce",
    "new_token",
    "parse_message",
    "session_expiry",
    "sign_in",
    "token_hash",
    "verify",
]

NONCE_TTL = timedelta(minutes=10)
SESSION_TTL = timedelta(hours=24)
SESSION_PREFIX = "cs_sess_"
_SESSION = re.compile(r"^cs_sess_[A-Za-z0-9_-]{43}$")

_HEADER = re.compile(
    r"^(?:(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://)?(?P<domain>[^\s/?#]+) wants you to sign in with your "
    r"Ethereum account:$"
)
_FIELDS = (
    ("uri", "URI", True),
    ("version", "Version", True),
    ("chain_id", "Chain ID", True),
    ("nonce", "Nonce", True),
    ("issued_at", "Issued At", True),
    ("expiration_time", "Expiration Time", False),
    ("not_before", "Not Before", False),
    ("request_id", "Request ID", False),
)
_NONCE = re.compile(r"^[A-Za-z0-9]{8,}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@dataclasses.dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str
    statement: str | None
    uri: str
    version: str
    chain_id: int
    nonce: str
    issued_at: datetime
    expiration_time: datetime | None
    not_before: datetime | None
    request_id: str | None
    resources: tuple[str, ...]


def _bad(why: str) -> InvalidField:
    return InvalidField("message", f"not an EIP-4361 message: {why}")


def _time(value: str, name: str) -> datetime:
    if not _DATETIME.match(value):
        raise _bad(f"{name} is not an RFC 3339 date-time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"{name} is not a valid date-time") from None
    return parsed.astimezone(UTC)


def parse_message(text: str) -> SiweMessage:
    """Parse ``text`` strictly; raises :class:`InvalidField` on ``message`` naming the first fault."""
    if "\r" in text:
        raise _bad("lines end with LF only")
    lines = text.split("\n")
    header = _HEADER.match(lines[0])
    if header is None:
        raise _bad("the first line must be '<domain> wants you to sign in with your Ethereum account:'")
    if len(lines) < 4:
        raise _bad("too short")
    address = lines[1]
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", address) or not is_checksum_address(address):
        raise _bad("the address must be EIP-55 checksummed")
    if lines[2] != "":
        raise _bad("an empty line must follow the address")
    index = 3
    statement = None
    # Optional statement: "<statement>\n\n" before the URI line; without one, another empty line.
    if lines[index] == "":
        index += 1
    elif not lines[index].startswith("URI: "):
        statement = lines[index]
        if len(lines) <= index + 1 or lines[index + 1] != "":
            raise _bad("an empty line must follow the statement")
        index += 2
    values: dict[str, str] = {}
    for name, label, required in _FIELDS:
        line = lines[index] if index < len(lines) else ""
        if line.startswith(f"{label}: "):
            values[name] = line[len(label) + 2 :]
            index += 1
        elif required:
            raise _bad(f"missing '{label}: ' line")
    resources: list[str] = []
    if index < len(lines) and lines[index] == "Resources:":
        index += 1
        while index < len(lines) and lines[index].startswith("- "):
            resources.append(lines[index][2:])
            index += 1
    if index != len(lines):
        raise _bad(f"unexpected line {index + 1}")
    if values["version"] != "1":
        raise _bad("Version must be 1")
    if not re.fullmatch(r"[1-9][0-9]{0,18}", values["chain_id"]):
        raise _bad("Chain ID must be a positive integer")
    if not _NONCE.match(values["nonce"]):
        raise _bad("Nonce must be at least 8 letters or digits")
    if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*:\S+", values["uri"]):
        raise _bad("URI must be an absolute URI")
    return SiweMessage(
        domain=header.group("domain"),
        address=address,
        statement=statement,
        uri=values["uri"],
        version=values["version"],
        chain_id=int(values["chain_id"]),
        nonce=values["nonce"],
        issued_at=_time(values["issued_at"], "Issued At"),
        expiration_time=_time(values["expiration_time"], "Expiration Time")
        if "expiration_time" in values
        else None,
        not_before=_time(values["not_before"], "Not Before") if "not_before" in values else None,
        request_id=values.get("request_id"),
        resources=tuple(resources),
    )


def issue_nonce(session: Session, *, domain: str, chain_id: int) -> SiweNonceOut:
    now = utcnow()
    nonce = secrets.token_hex(16)
    row = SiweNonce(nonce=nonce, issued_at=now, expires_at=now + NONCE_TTL)
    session.add(row)
    # Expired nonces and sessions are useless: sweep them as new ones are made.
    session.execute(delete(SiweNonce).where(SiweNonce.expires_at < now - NONCE_TTL))
    session.execute(delete(BuyerSession).where(BuyerSession.expires_at < now))
    session.execute(delete(MerchantSession).where(MerchantSession.expires_at < now))
    session.commit()
    return SiweNonceOut(
        nonce=nonce, domain=domain, chain_id=chain_id, issued_at=now, expires_at=row.expires_at
    )


def verify(
    session: Session, *, message: str, signature: str, domain: str, chain_id: int, now: datetime
) -> SiweMessage:
    """Check ``message`` and its ``signature`` and spend its nonce (flushed, not committed: the caller
    commits with the session it makes). Shared by the buyers' and the merchants' sign-in.

    422 names ``message`` when it is not an EIP-4361 message; 401 when it is one but does not sign in
    here and now (wrong domain or chain, unknown, used or expired nonce, outside its validity window, or
    a signature by another key)."""
    parsed = parse_message(message)
    if parsed.domain != domain:
        raise Unauthorized(f"the message is for {parsed.domain!r}, not this gateway ({domain!r})")
    if parsed.chain_id != chain_id:
        raise Unauthorized(f"the message is for chain {parsed.chain_id}, not {chain_id}")
    if parsed.expiration_time is not None and parsed.expiration_time <= now:
        raise Unauthorized("the message has expired")
    if parsed.not_before is not None and parsed.not_before > now:
        raise Unauthorized("the message is not valid yet")
    if parsed.issued_at > now + timedelta(minutes=1):
        raise Unauthorized("the message is issued in the future")
    try:
        raw = bytes.fromhex(signature[2:])
        signer = Account.recover_message(encode_defunct(text=message), signature=raw)
    except Exception:  # malformed signature bytes of any kind: it does not verify
        raise Unauthorized("the signature does not verify") from None
    if signer != parsed.address:
        raise Unauthorized("the signature is not the message's address's")
    # Single use, whichever process sees it first: a conditional update, not a read-then-write.
    used = session.execute(
        update(SiweNonce)
        .where(SiweNonce.nonce == parsed.nonce, SiweNonce.used_at.is_(None), SiweNonce.expires_at > now)
        .values(used_at=now)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise Unauthorized("the nonce is unknown, already used or expired; ask for a new one")
    return parsed


def session_expiry(parsed: SiweMessage, now: datetime, ttl: timedelta) -> datetime:
    """``now + ttl``, or the message's own Expiration Time if sooner."""
    expires = now + ttl
    if parsed.expiration_time is not None:
        expires = min(expires, parsed.expiration_time)
    return expires


def new_token(prefix: str) -> tuple[str, str]:
    """A fresh bearer token (shown once) and its SHA-256 (what is stored)."""
    token = prefix + secrets.token_urlsafe(32)
    return token, token_hash(token)


def sign_in(
    session: Session, *, message: str, signature: str, domain: str, chain_id: int, now: datetime | None = None
) -> SiweSessionOut:
    """Verify ``message`` and its ``signature`` (:func:`verify`); on success a buyer session token
    (shown once, stored hashed)."""
    now = now or utcnow()
    parsed = verify(session, message=message, signature=signature, domain=domain, chain_id=chain_id, now=now)
    token, hashed = new_token(SESSION_PREFIX)
    expires = session_expiry(parsed, now, SESSION_TTL)
    session.add(BuyerSession(token_hash=hashed, address=parsed.address, expires_at=expires))
    session.commit()
    return SiweSessionOut(token=token, address=parsed.address, expires_at=expires)


def authenticate_session(session: Session, token: str, now: datetime | None = None) -> str:
    """The buyer address a session token stands for; :class:`Unauthorized` otherwise."""
    now = now or utcnow()
    row = session.get(BuyerSession, token_hash(token)) if _SESSION.match(token) else None
    if row is None:
        raise Unauthorized("invalid session token")
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
    if expires <= now:
        raise Unauthorized("the session has expired; sign in again")
    return row.address


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
