"""Order lists (newest first, cursor pagination) and order reads for the merchant and the buyer.

Visibility is part of every query: a merchant sees the orders that settle to its account, a buyer the
orders its wallet pays, the operator all. Another party's order reads exactly like one that does not
exist (404), and a cursor naming one is refused like an unknown cursor, so nothing leaks existence.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from eth_utils import to_checksum_address
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from cardless.ledger.models import Order, OrderState
from gateway.merchant_schemas import OrderListOut, OrderSummaryOut
from gateway.schemas import OrderOut
from gateway.services._exceptions import InvalidField, NotFound
from gateway.services.orders import order_status

__all__ = ["MAX_PAGE", "OrderFilter", "Visibility", "list_orders", "visible_order_status"]

MAX_PAGE = 100


@dataclasses.dataclass(frozen=True)
class Visibility:
    """Whose orders: ``merchant`` and ``buyer`` are addresses; both None is the operator (all)."""

    merchant: str | None = None
    buyer: str | None = None

    def allows(self, row: Order) -> bool:
        if self.merchant is not None and row.merchant.lower() != self.merchant.lower():
            return False
        return self.buyer is None or row.buyer.lower() == self.buyer.lower()


@dataclasses.dataclass(frozen=True)
class OrderFilter:
    state: OrderState | None = None
    sku: str | None = None
    buyer: str | None = None
    created_gte: datetime | None = None
    created_lt: datetime | None = None


def _utc(at: datetime) -> datetime:
    """Stored times are UTC; a time given without a zone is read as UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def visible_order_status(session: Session, order_id: str, visibility: Visibility) -> OrderOut:
    row = session.get(Order, order_id.lower())
    if row is None or not visibility.allows(row):
        raise NotFound("order_id", f"order {order_id} not found")
    return order_status(session, order_id)


def list_orders(
    session: Session,
    visibility: Visibility,
    filters: OrderFilter,
    *,
    limit: int,
    starting_after: str | None = None,
) -> OrderListOut:
    query = select(Order)
    if visibility.merchant is not None:
        query = query.where(Order.merchant == to_checksum_address(visibility.merchant))
    if visibility.buyer is not None:
        query = query.where(Order.buyer == to_checksum_address(visibility.buyer))
    if filters.state is not None:
        query = query.where(Order.state == filters.state.value)
    if filters.sku is not None:
        query = query.where(Order.sku == filters.sku)
    if filters.buyer is not None:
        query = query.where(Order.buyer == to_checksum_address(filters.buyer))
    if filters.created_gte is not None:
        query = query.where(Order.created_at >= _utc(filters.created_gte))
    if filters.created_lt is not None:
        query = query.where(Order.created_at < _utc(filters.created_lt))
    if starting_after is not None:
        cursor = session.get(Order, starting_after.lower())
        if cursor is None or not visibility.allows(cursor):
            raise InvalidField("starting_after", "is not an order in this list")
        query = query.where(
            or_(
                Order.created_at < cursor.created_at,
                and_(Order.created_at == cursor.created_at, Order.id < cursor.id),
            )
        )
    rows = list(session.scalars(query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1)))
    return OrderListOut(
        data=[
            OrderSummaryOut(
                order_id=r.id,
                state=OrderState(r.state),
                sku=r.sku,
                buyer=r.buyer,
                merchant=r.merchant,
                token=r.token,
                amount=str(r.amount),
                fee_bps=r.fee_bps,
                created_at=_utc(r.created_at),
                paid_tx=r.paid_tx,
                settle_tx=r.settle_tx,
                refund_tx=r.refund_tx,
                receipt_hash=r.receipt_hash,
            )
            for r in rows[:limit]
        ],
        has_more=len(rows) > limit,
    )
