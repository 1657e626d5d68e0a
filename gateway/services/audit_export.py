"""The receipts export: what an auditor feeds to ``cardless audit --receipts`` to recompute every
``receiptHash`` (RFC 8785) and account commitment against the chain.

Only settled orders have a receipt the chain committed to, so only they are exported, oldest
settlement first, keyed on ``(closed_at, id)`` (the indexes ``ix_orders_state_closed`` and
``ix_orders_merchant_state_closed``). The plaintext account is personal data: it is decrypted only
when the caller may read the order in full (the operator, or the merchant that owns it) and asks for
it; the salt is derived from the account key, never stored
(:mod:`cardless.ledger.cipher`). This module never imports the auditor (``cardless.audit``): the
format is the contract between them, and ``tests/audit/test_receipts_export.py`` holds both to it.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

from eth_utils import to_checksum_address
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from cardless.ledger.cipher import AccountCipher, CipherError
from cardless.ledger.models import Order, OrderState
from gateway.audit_schemas import ReceiptEntry, ReceiptsOut
from gateway.services._exceptions import InvalidField

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "ExportCursor", "export_receipts", "parse_cursor"]

DEFAULT_PAGE = 100
MAX_PAGE = 1000
_ORDER_ID = re.compile(r"^0x[0-9a-fA-F]{64}$")
_FIELD = "query.from"


@dataclasses.dataclass(frozen=True)
class ExportCursor:
    """Where a page starts: after an exported order (exclusive), or at a settlement time (inclusive)."""

    after_order: str | None = None
    since: datetime | None = None


def parse_cursor(value: str | None) -> ExportCursor:
    """``from``: an order id (a previous page's ``next``) or an RFC 3339 time (no zone: UTC)."""
    if value is None or value == "":
        return ExportCursor()
    if _ORDER_ID.match(value):
        return ExportCursor(after_order=value.lower())
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidField(_FIELD, "must be an order id (0x + 64 hex) or an RFC 3339 date-time") from None
    return ExportCursor(since=at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC))


def export_receipts(
    session: Session,
    cipher: AccountCipher,
    *,
    merchant: str | None,
    cursor: ExportCursor,
    limit: int,
    accounts: bool,
) -> ReceiptsOut:
    """One page of settled orders' receipts; ``merchant`` None is the operator's view (all)."""
    query = select(Order).where(Order.state == OrderState.SETTLED.value, Order.closed_at.is_not(None))
    if merchant is not None:
        query = query.where(Order.merchant == to_checksum_address(merchant))
    if cursor.after_order is not None:
        after = session.get(Order, cursor.after_order)
        if (
            after is None
            or after.state != OrderState.SETTLED.value
            or after.closed_at is None
            or (merchant is not None and after.merchant.lower() != merchant.lower())
        ):
            # Another merchant's order reads exactly like an unknown one: nothing leaks existence.
            raise InvalidField(_FIELD, "is not an order in this export")
        query = query.where(
            or_(
                Order.closed_at > after.closed_at,
                and_(Order.closed_at == after.closed_at, Order.id > after.id),
            )
        )
    if cursor.since is not None:
        query = query.where(Order.closed_at >= cursor.since)
    rows = list(session.scalars(query.order_by(Order.closed_at, Order.id).limit(limit + 1)))
    entries = [_entry(row, cipher if accounts else None) for row in rows[:limit]]
    return ReceiptsOut(receipts=entries, next=rows[limit - 1].id if len(rows) > limit else None)


def _entry(row: Order, cipher: AccountCipher | None) -> ReceiptEntry:
    entry = ReceiptEntry(order_id=row.id, receipt=dict(row.receipt or {}))
    if cipher is None:
        return entry
    try:
        account = cipher.decrypt(row.account_ciphertext, row.id)
        salt = cipher.salt(row.id)
    except CipherError:
        # Encrypted under an account key since rotated away: the receipt is still checkable, the
        # commitment is not; account and salt go together, so neither is sent.
        return entry
    entry.account, entry.account_salt = account, "0x" + salt.hex()
    return entry
