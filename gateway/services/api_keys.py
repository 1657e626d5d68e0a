"""Merchants' API keys: ``ck_live_<prefix>_<secret>``, stored as a SHA-256, scoped, expiring, rotated
with an overlap, revoked at once; and the per-key request quota.

The prefix (12 hex characters) finds the row and is what listings and logs show; the secret (32 random
bytes) is returned once, at creation or rotation, and never again. A fast hash is enough: the secret is
256 random bits, so there is nothing to brute-force that a slow hash would protect.

Authentication failures all read the same (401 "invalid API key") whether the prefix is unknown, the
secret wrong, the key expired or revoked, or its merchant disabled: the detail says which only for a
key that verified (expired, revoked, disabled), so a guesser learns nothing about prefixes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cardless.ledger.models import ApiKey, Merchant, utcnow
from gateway.merchant_schemas import ApiKeyCreate, ApiKeyCreatedOut, ApiKeyOut
from gateway.services._exceptions import Forbidden, NotFound, RateLimited, Unauthorized
from gateway.services.ratelimits import Allowance

__all__ = [
    "KEY_PREFIX",
    "KeyQuota",
    "MerchantKey",
    "authenticate_key",
    "create_key",
    "list_keys",
    "require_scope",
    "revoke_key",
    "rotate_key",
]

KEY_PREFIX = "ck_live_"
_KEY = re.compile(r"^ck_live_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is written at most once a minute per key: a busy key must not cost a write per request."""


@dataclasses.dataclass(frozen=True)
class MerchantKey:
    """A merchant credential that verified: whose, what it may do, and its quota. Either an API key
    (``key_id`` and ``prefix``) or a dashboard wallet session (``session``: the token's SHA-256; see
    ``gateway.services.merchant_sessions``); routes that act on "the calling key" refuse the latter."""

    key_id: int | None
    prefix: str | None
    merchant_id: str
    merchant_address: str
    scopes: frozenset[str]
    rate_limit: str | None
    session: str | None = None

    @property
    def noun(self) -> str:
        return "wallet session" if self.session is not None else "API key"

    @property
    def actor(self) -> str:
        """Who acted, for records: ``key <prefix>`` or ``wallet <address> (session <hash prefix>)``."""
        if self.session is not None:
            return f"wallet {self.merchant_address} (session {self.session[:12]})"
        return f"key {self.prefix}"

    @property
    def quota_id(self) -> str:
        """Whose quota a request counts against: the key's, or the wallet session's."""
        return f"session:{self.session}" if self.session is not None else str(self.key_id)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _status(row: ApiKey, now: datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    expires = _utc(row.expires_at)
    if expires is not None and expires <= now:
        return "expired"
    return "active"


def key_out(row: ApiKey, now: datetime | None = None) -> ApiKeyOut:
    now = now or utcnow()
    return ApiKeyOut(
        id=row.id,
        merchant=row.merchant_id,
        prefix=f"{KEY_PREFIX}{row.prefix}",
        name=row.name,
        scopes=row.scopes,
        rate_limit=row.rate_limit,
        status=_status(row, now),
        created_at=_utc(row.created_at),
        expires_at=_utc(row.expires_at),
        revoked_at=_utc(row.revoked_at),
        last_used_at=_utc(row.last_used_at),
        rotated_to=row.rotated_to,
    )


def _merchant(session: Session, merchant_id: str) -> Merchant:
    row = session.get(Merchant, merchant_id)
    if row is None:
        raise NotFound("merchant_id", f"merchant {merchant_id!r} not found")
    return row


def _new_key(
    merchant_id: str, name: str, scopes: Iterable[str], expires_at: datetime | None, rate_limit: str | None
) -> tuple[ApiKey, str]:
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        merchant_id=merchant_id,
        prefix=prefix,
        key_hash=_hash(key),
        name=name,
        scopes=list(scopes),
        rate_limit=rate_limit,
        expires_at=expires_at,
    )
    return row, key


def create_key(session: Session, merchant_id: str, body: ApiKeyCreate) -> ApiKeyCreatedOut:
    _merchant(session, merchant_id)
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    row, key = _new_key(merchant_id, body.name, body.scopes, expires, body.rate_limit)
    session.add(row)
    session.commit()
    return ApiKeyCreatedOut(**key_out(row).model_dump(), key=key)


def list_keys(session: Session, merchant_id: str) -> list[ApiKeyOut]:
    _merchant(session, merchant_id)
    now = utcnow()
    rows = session.scalars(select(ApiKey).where(ApiKey.merchant_id == merchant_id).order_by(ApiKey.id))
    return [key_out(r, now) for r in rows]


def _key(session: Session, merchant_id: str, key_id: int) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None or row.merchant_id != merchant_id:
        raise NotFound("key_id", f"API key {key_id} not found")
    return row


def revoke_key(session: Session, merchant_id: str, key_id: int) -> ApiKeyOut:
    """Revoke at once (the next request with it is 401). Revoking twice keeps the first time."""
    row = _key(session, merchant_id, key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return key_out(row)


def rotate_key(session: Session, merchant_id: str, key_id: int, overlap_seconds: int) -> ApiKeyCreatedOut:
    """A new key with the same name, scopes and quota; the old one keeps working for ``overlap_seconds``
    (or until its own expiry, if sooner), so a deployment can switch without a failed request."""
    old = _key(session, merchant_id, key_id)
    now = utcnow()
    if _status(old, now) != "active":
        raise NotFound("key_id", f"API key {key_id} is {_status(old, now)}; only an active key rotates")
    if old.rotated_to is not None:
        raise NotFound("key_id", f"API key {key_id} was already rotated to key {old.rotated_to}")
    new, key = _new_key(merchant_id, old.name, old.scopes, _utc(old.expires_at), old.rate_limit)
    session.add(new)
    session.flush()
    end = now + timedelta(seconds=overlap_seconds)
    old_expiry = _utc(old.expires_at)
    old.expires_at = end if old_expiry is None or end < old_expiry else old_expiry
    old.rotated_to = new.id
    session.commit()
    return ApiKeyCreatedOut(**key_out(new, now).model_dump(), key=key)


def authenticate_key(session: Session, key: str, now: datetime | None = None) -> MerchantKey:
    """The merchant key ``key`` stands for. Raises :class:`Unauthorized` for anything else."""
    now = now or utcnow()
    match = _KEY.match(key)
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == match.group(1))) if match else None
    if row is None or not hmac.compare_digest(row.key_hash, _hash(key)):
        raise Unauthorized("invalid API key")
    status = _status(row, now)
    if status != "active":
        raise Unauthorized(f"this API key is {status}")
    merchant = session.get(Merchant, row.merchant_id)
    if merchant is None or merchant.disabled_at is not None:
        raise Unauthorized("this API key's merchant account is disabled")
    last = _utc(row.last_used_at)
    if last is None or now - last >= LAST_USED_RESOLUTION:
        session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
        session.commit()
    return MerchantKey(
        key_id=row.id,
        prefix=row.prefix,
        merchant_id=row.merchant_id,
        merchant_address=merchant.address,
        scopes=frozenset(row.scopes),
        rate_limit=row.rate_limit,
    )


def require_scope(key: MerchantKey, scope: str) -> None:
    if scope not in key.scopes:
        raise Forbidden(f"this {key.noun} lacks the {scope!r} scope")


class KeyQuota:
    """Requests per API key (moving window, this process's memory, like the quote limits): each key's
    own ``rate_limit`` or ``default``. The allowance goes back in RateLimit headers on every answer."""

    def __init__(self, *, default: str, clock: Callable[[], float] = time.time) -> None:
        self.default = default
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._items: dict[str, RateLimitItem] = {}
        self._clock = clock

    def _item(self, rate: str) -> RateLimitItem:
        if rate not in self._items:
            self._items[rate] = parse(rate)
        return self._items[rate]

    def hit(self, key: MerchantKey) -> list[Allowance]:
        item = self._item(key.rate_limit or self.default)
        ident = key.quota_id
        allowed = self._limiter.hit(item, "api_key", ident)
        stats = self._limiter.get_window_stats(item, "api_key", ident)
        allowance = Allowance(
            policy="api_key",
            limit=item.amount,
            window=item.get_expiry(),
            remaining=stats.remaining,
            reset=max(0, math.ceil(stats.reset_time - self._clock())),
        )
        if not allowed:
            raise RateLimited(
                f"this {key.noun}'s quota is spent; retry after {max(allowance.reset, 1)} s",
                retry_after=max(allowance.reset, 1),
                allowances=[allowance],
            )
        return [allowance]
