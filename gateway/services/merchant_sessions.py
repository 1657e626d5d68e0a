"""Merchants' dashboard sessions: Sign-In with Ethereum by the merchant's settlement address.

Who may sign in: the wallet of a merchant's ``address``, the account the escrow credits on settlement.
That account is the merchant's on-chain identity: it is unique among merchants, and only its key can
move the merchant's money elsewhere (``setPayoutAddress``). The payout address is not accepted: it is
only where withdrawals go (often an exchange deposit or a cold wallet that signs nothing), several
merchants may share one, and the gateway's copy is a record, not the authority.

The message is checked by :func:`gateway.services.siwe.verify` (the same parser, nonces and checks as
the buyers' sign-in) and must carry :data:`STATEMENT`, so a signature a buyer-facing page obtained for
this domain cannot open a merchant session: the wallet showed the merchant what they were signing.

The session (``cm_sess_<token>``) acts for that merchant with :data:`WALLET_SCOPES`: what the dashboard
uses, nothing more. It is stored as the token's SHA-256, lasts :data:`SESSION_TTL` (or less, to the
message's Expiration Time), ends at once on sign-out, and stops working when the merchant is disabled.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cardless.ledger.models import Merchant, MerchantSession, utcnow
from gateway.merchant_schemas import MerchantSessionOut, MerchantSignOutOut, Scope
from gateway.services._exceptions import Forbidden, Unauthorized
from gateway.services.api_keys import MerchantKey
from gateway.services.siwe import SiweMessage, new_token, session_expiry, token_hash, verify

__all__ = [
    "SESSION_PREFIX",
    "SESSION_TTL",
    "STATEMENT",
    "WALLET_SCOPES",
    "authenticate_merchant_session",
    "sign_in_merchant",
    "sign_out_merchant",
]

SESSION_PREFIX = "cm_sess_"
SESSION_TTL = timedelta(hours=8)
"""A working day, then sign in again: shorter than a buyer's 24 h, as this session can change the shop."""
STATEMENT = "Sign in to the Cardless merchant dashboard."
WALLET_SCOPES: tuple[Scope, ...] = ("catalogue:write", "orders:read", "payouts:read", "webhooks:write")
"""The dashboard's scopes. Not ``risk:review`` or ``audit:read`` (the dashboard has no page for them;
a key with them can be made), and no key management: a session cannot rotate or mint API keys."""
_TOKEN = re.compile(r"^cm_sess_[A-Za-z0-9_-]{43}$")


def sign_in_merchant(
    session: Session,
    *,
    message: str,
    signature: str,
    domain: str,
    chain_id: int,
    now: datetime | None = None,
) -> MerchantSessionOut:
    """A session for the merchant whose settlement address signed ``message``.

    As :func:`gateway.services.siwe.verify` (422 on ``message``, 401); then 403 when the message lacks
    :data:`STATEMENT`, or the address is no merchant's settlement address or the merchant is disabled.
    The nonce is spent in every case past the signature check."""
    now = now or utcnow()
    parsed = verify(session, message=message, signature=signature, domain=domain, chain_id=chain_id, now=now)
    try:
        merchant = _signing_merchant(session, parsed)
    except Forbidden:
        session.commit()  # the nonce stays spent: a refused message is not tried again
        raise
    token, hashed = new_token(SESSION_PREFIX)
    expires = session_expiry(parsed, now, SESSION_TTL)
    session.add(
        MerchantSession(
            token_hash=hashed,
            merchant_id=merchant.id,
            address=parsed.address,
            created_at=now,
            expires_at=expires,
        )
    )
    session.commit()
    return MerchantSessionOut(
        token=token,
        merchant=merchant.id,
        address=parsed.address,
        scopes=list(WALLET_SCOPES),
        expires_at=expires,
    )


def _signing_merchant(session: Session, parsed: SiweMessage) -> Merchant:
    if parsed.statement != STATEMENT:
        raise Forbidden(f"a merchant signs in with the statement {STATEMENT!r}")
    merchant = session.scalar(select(Merchant).where(Merchant.address == parsed.address))
    if merchant is None:
        raise Forbidden(f"{parsed.address} is not a merchant's settlement address")
    if merchant.disabled_at is not None:
        raise Forbidden(f"merchant {merchant.id!r} is disabled")
    return merchant


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def authenticate_merchant_session(session: Session, token: str, now: datetime | None = None) -> MerchantKey:
    """The merchant credential ``token`` stands for; :class:`Unauthorized` otherwise (unknown, signed
    out, expired, or its merchant disabled), with the same wording as a refused API key."""
    now = now or utcnow()
    hashed = token_hash(token)
    row = session.get(MerchantSession, hashed) if _TOKEN.match(token) else None
    if row is None:
        raise Unauthorized("invalid session token")
    if row.revoked_at is not None:
        raise Unauthorized("this session is signed out; sign in again")
    if _utc(row.expires_at) <= now:
        raise Unauthorized("the session has expired; sign in again")
    merchant = session.get(Merchant, row.merchant_id)
    if merchant is None or merchant.disabled_at is not None:
        raise Unauthorized("this session's merchant account is disabled")
    return MerchantKey(
        key_id=None,
        prefix=None,
        merchant_id=merchant.id,
        merchant_address=merchant.address,
        scopes=frozenset(WALLET_SCOPES),
        rate_limit=None,
        session=hashed,
    )


def sign_out_merchant(
    session: Session, credential: MerchantKey, now: datetime | None = None
) -> MerchantSignOutOut:
    """End the wallet session ``credential`` at once; 403 for an API key (the operator revokes those)."""
    if credential.session is None:
        raise Forbidden("an API key does not sign out; the operator revokes keys")
    now = now or utcnow()
    session.execute(
        update(MerchantSession)
        .where(MerchantSession.token_hash == credential.session, MerchantSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    session.commit()
    return MerchantSignOutOut(
        merchant=credential.merchant_id, address=credential.merchant_address, signed_out_at=now
    )
