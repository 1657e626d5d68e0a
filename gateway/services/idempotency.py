"""Idempotency-Key records: claim a key before the request runs, store its answer after, replay it.

A claim is an INSERT under the unique (scope, key): of two concurrent duplicates, in one process or
two, exactly one inserts and runs; the other finds the row. The outcomes:

- ``Claimed``: run the request, then :func:`complete` (or :func:`release` when it must not be kept);
- ``Replay``: the stored answer, for the same parameters;
- ``Mismatch``: the key was used with other parameters (409);
- ``InFlight``: the first request with this key is still running (409; retry shortly);
- ``Unreadable``: the stored answer no longer decrypts (409; use a new key).

Answer bodies are stored sealed with a subkey of the account key (AES-256-GCM, bound to the row): they
carry new API keys and buyers' game accounts, which a copy of the database must not reveal.

Records live 24 hours. A claim left by a process that died mid-request is taken over after
:data:`STALE_CLAIM`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger.cipher import AccountCipher, CipherError
from cardless.ledger.models import IdempotencyRecord, utcnow

__all__ = [
    "RETENTION",
    "STALE_CLAIM",
    "Claimed",
    "InFlight",
    "Mismatch",
    "Replay",
    "Unreadable",
    "claim",
    "complete",
    "fingerprint",
    "purge",
    "release",
]

RETENTION = timedelta(hours=24)
STALE_CLAIM = timedelta(seconds=120)
PURGE_EVERY = 256
"""Every this many claims, the expired records of every key are deleted (the table stays one day deep)."""


@dataclasses.dataclass(frozen=True)
class Claimed:
    record_id: int


@dataclasses.dataclass(frozen=True)
class Replay:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclasses.dataclass(frozen=True)
class Mismatch:
    pass


@dataclasses.dataclass(frozen=True)
class InFlight:
    pass


@dataclasses.dataclass(frozen=True)
class Unreadable:
    """The stored answer does not decrypt (the account key was rotated since): it cannot be replayed,
    and running the request again could do it twice."""


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _label(record_id: int) -> str:
    return f"idempotency/{record_id}"


def claim(
    sessions: sessionmaker[Session],
    cipher: AccountCipher,
    scope: str,
    key: str,
    print_: str,
    now: datetime | None = None,
) -> Claimed | Replay | Mismatch | InFlight | Unreadable:
    now = now or utcnow()
    for _ in range(3):
        with sessions() as session:
            row = IdempotencyRecord(
                scope=scope, key=key, fingerprint=print_, created_at=now, expires_at=now + RETENTION
            )
            session.add(row)
            try:
                session.commit()
                if row.id % PURGE_EVERY == 0:  # now and then, drop every expired record
                    session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < now))
                    session.commit()
                return Claimed(row.id)
            except IntegrityError:
                session.rollback()
            existing = session.query(IdempotencyRecord).filter_by(scope=scope, key=key).one_or_none()
            if existing is None:
                continue  # released or expired between our insert and our read: try again
            abandoned = existing.response_status is None and _utc(existing.created_at) < now - STALE_CLAIM
            if _utc(existing.expires_at) <= now or abandoned:
                session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == existing.id))
                session.commit()
                continue
            if existing.fingerprint != print_:
                return Mismatch()
            if existing.response_status is None:
                return InFlight()
            try:
                body = cipher.unseal(existing.response_body or b"", _label(existing.id))
            except CipherError:
                return Unreadable()
            return Replay(
                status=existing.response_status, headers=dict(existing.response_headers or {}), body=body
            )
    return InFlight()


def complete(
    sessions: sessionmaker[Session],
    cipher: AccountCipher,
    record_id: int,
    status: int,
    headers: dict[str, str],
    body: bytes,
) -> None:
    """Store the answer, its body sealed: answers carry new API keys and the buyer's game account."""
    with sessions() as session:
        row = session.get(IdempotencyRecord, record_id)
        if row is None:
            return
        row.response_status = status
        row.response_headers = headers
        row.response_body = cipher.seal(body, _label(record_id))
        session.commit()


def release(sessions: sessionmaker[Session], record_id: int) -> None:
    """Forget a claim whose answer must not be replayed (the request may simply be retried)."""
    with sessions() as session:
        session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id))
        session.commit()


def purge(sessions: sessionmaker[Session], now: datetime | None = None) -> int:
    now = now or utcnow()
    with sessions() as session:
        result = session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < now))
        session.commit()
        return int(result.rowcount)  # type: ignore[attr-defined]
