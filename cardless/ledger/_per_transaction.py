"""State a session keeps for its current transaction only (rows staged for its flush or commit)."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

__all__ = ["per_transaction"]


class _Kept(Protocol):
    transaction: Any


K = TypeVar("K", bound=_Kept)


def per_transaction(session: Session, key: str, kind: type[K]) -> K:
    """``session.info[key]``, a ``kind(transaction)`` made afresh whenever the session's transaction is
    not the one it was made for: what a rolled-back or committed transaction staged is never seen again."""
    transaction = session.get_transaction()
    kept = session.info.get(key)
    if not isinstance(kept, kind) or kept.transaction is not transaction:
        kept = session.info[key] = kind(transaction)  # type: ignore[call-arg]
    return kept
