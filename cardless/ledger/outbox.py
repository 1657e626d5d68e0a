"""The webhook outbox: merchants' endpoints, the events owed to them, and every delivery attempt.

An event is written by :func:`record_event` in the *same database transaction* as the state change
that causes it (``transition`` calls it for the order states merchants hear about; the watcher for a
payout), together with one pending :class:`WebhookDelivery` per endpoint of that merchant subscribed
to its type. Nothing is sent here: a crash after the commit leaves the deliveries pending and the
delivery job (``oracles.webhooks``) sends them; a crash before it loses the state change and the event
together. So an event exists exactly when its cause was committed, and is delivered at least once.

::

    webhook_endpoints  1 ── n  webhook_deliveries  n ── 1  webhook_events
                                        │
                                        1 ── n  webhook_attempts   (the delivery log)

The event's body is fixed when it is written (``body``: the exact bytes every attempt sends), so a
redelivery is byte-identical and carries the same ``id``; receivers de-duplicate on it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    event,
    insert,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from cardless.ledger._per_transaction import per_transaction
from cardless.ledger.models import Base, Order, OrderState, utcnow
from cardless.ledger.types import Uint256

__all__ = [
    "ORDER_EVENT_TYPES",
    "DeliveryStatus",
    "Payout",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "aware",
    "has_staged_order_events",
    "new_endpoint_id",
    "order_data",
    "record_event",
    "record_order_event",
    "secret_context",
    "write_staged_order_events",
]

S = OrderState

ORDER_EVENT_TYPES: dict[OrderState, str] = {
    S.PAID: "order.paid",
    S.SUCCEEDED: "order.fulfilled",  # the provider credited the buyer's account
    S.SETTLED: "order.settled",
    S.REFUNDED: "order.refunded",
    S.RECLAIMED: "order.reclaimed",
}
"""The order states a merchant is told about, and the event type of each."""


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # to be sent (again) at next_attempt_at
    DELIVERED = "delivered"  # the endpoint answered 2xx
    FAILED = "failed"  # retried for the whole retry window without a 2xx; a manual redeliver revives it


class WebhookEndpoint(Base):
    """A merchant's URL and the event types it wants. The signing secret is stored encrypted with the
    account key (AES-GCM, associated data ``webhook-endpoint/<id>``): the delivery job needs it in
    clear to sign, so it cannot be hashed like an API key."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # we_ + 24 hex
    merchant: Mapped[str] = mapped_column(String(42), index=True)  # the merchant's address (EIP-55)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(200))
    event_types: Mapped[list[str]] = mapped_column(JSON)
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    # During a rotation the previous secret signs too (a second v1) until it expires.
    previous_secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_expires_at: Mapped[datetime | None]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None]
    # First failed attempt since the last success: the endpoint is disabled when this is a day old.
    failing_since: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookEvent(Base):
    """Something that happened to a merchant's order or money, with the exact body sent for it."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # evt_ + 32 hex, stable across attempts
    merchant: Mapped[str] = mapped_column(String(42))
    type: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[str | None] = mapped_column(String(66), index=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_webhook_events_merchant_created", "merchant", "created_at"),)


class WebhookDelivery(Base):
    """One event owed to one endpoint. Claimed by a work lease like an order (see ``ledger.store``)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    first_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    # Set by a manual redeliver: the next attempt is sent even to a disabled endpoint, and logged as manual.
    manual_requested_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    event: Mapped[WebhookEvent] = relationship()
    endpoint: Mapped[WebhookEndpoint] = relationship()
    log: Mapped[list[WebhookAttempt]] = relationship(
        back_populates="delivery", order_by="WebhookAttempt.id", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_event", "endpoint_id", "event_id", unique=True),
    )


class WebhookAttempt(Base):
    """The delivery log: one row per HTTP attempt, whatever its outcome."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(16))  # scheduled | manual
    at: Mapped[datetime] = mapped_column(default=utcnow)
    url: Mapped[str] = mapped_column(Text)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)
    response_excerpt: Mapped[str | None] = mapped_column(Text)  # the first KiB, for the merchant's eyes

    delivery: Mapped[WebhookDelivery] = relationship(back_populates="log")


class Payout(Base):
    """Money paid out of the escrow to a merchant: one ``Withdrawn`` log, recorded from the chain (the
    sweep's transaction or anyone else's call of the permissionless ``withdraw``)."""

    __tablename__ = "payouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    merchant: Mapped[str] = mapped_column(String(42))
    token: Mapped[str] = mapped_column(String(42))
    to_address: Mapped[str] = mapped_column(String(42))
    amount: Mapped[int] = mapped_column(Uint256)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_time: Mapped[int] = mapped_column(BigInteger)  # unix seconds (chain time)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_payouts_merchant_token_block", "merchant", "token", "block_number"),
        Index("ix_payouts_tx_log", "tx_hash", "log_index", unique=True),
    )


def secret_context(endpoint_id: str) -> str:
    """The associated data an endpoint's secrets are encrypted under: a ciphertext copied onto another
    endpoint's row does not decrypt."""
    return f"webhook-endpoint/{endpoint_id}"


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def new_endpoint_id() -> str:
    return "we_" + secrets.token_hex(12)


def _new_event_id() -> str:
    return "evt_" + secrets.token_hex(16)


def order_data(order: Order) -> dict[str, Any]:
    """What a merchant's webhook says about its order: the order's terms, where it stands and its chain
    references; never the buyer's game account (not even encrypted) nor the receipt itself."""
    return {
        "id": order.id,
        "state": order.state,
        "sku": order.sku,
        "merchant": order.merchant,
        "buyer": order.buyer,
        "token": order.token,
        "amount": str(order.amount),
        "fee_bps": order.fee_bps,
        "chain_id": order.chain_id,
        "escrow": order.escrow,
        "paid_tx": order.paid_tx,
        "settle_tx": order.settle_tx,
        "refund_tx": order.refund_tx,
        "provider": order.providers[order.provider_index] if order.providers else None,
        "receipt_hash": order.receipt_hash,
        "refund_reason": order.refund_reason,
    }


def record_event(
    session: Session,
    *,
    merchant: str,
    type: str,
    data: dict[str, Any],
    at: datetime | None = None,
    order_id: str | None = None,
) -> WebhookEvent:
    """Stage an event and a pending delivery to each of ``merchant``'s endpoints subscribed to
    ``type`` (disabled ones included: they hold it until re-enabled). Does not commit."""
    now = at or utcnow()
    event_id = _new_event_id()
    body = _body(event_id, type, data, now)
    event = WebhookEvent(
        id=event_id, merchant=merchant, type=type, order_id=order_id, body=body, created_at=now
    )
    session.add(event)
    for endpoint_id, event_types in _subscribers(session, merchant):
        if type in event_types:
            session.add(
                WebhookDelivery(
                    event_id=event_id,
                    endpoint_id=endpoint_id,
                    status=DeliveryStatus.PENDING.value,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
    return event


def _body(event_id: str, type: str, data: dict[str, Any], at: datetime) -> str:
    return json.dumps(
        {"id": event_id, "type": type, "created": int(at.timestamp()), "data": data},
        sort_keys=True,
        separators=(",", ":"),
    )


_SUBSCRIBERS = "cardless.outbox.subscribers"
_HOLDS_ENDPOINTS = "cardless.outbox.holds_endpoints"


def _subscribers(session: Session, merchant: str) -> list[tuple[str, frozenset[str]]]:
    """``merchant``'s endpoints (id, event types), read once per session: a stage that moves 50 orders in
    one transaction asked for them 50 times, each query flushing the rows staged so far (a tenth of the
    oracle's CPU at saturation, docs/benchmarks.md). The answer is kept for the current transaction only
    (what its first read saw is what it would see again), and a session that itself adds or changes an
    endpoint reads them afresh every time, so it always sees its own change.

    Only a session that has ever held an endpoint object (:func:`_held`) can have added or changed one,
    so only such a session scans its new and changed objects for one; the oracle's sessions never hold
    one (the read below takes columns, not objects), and scanning ``session.dirty`` once per event
    was O(orders in the session) each time (4 % of the oracle's CPU at saturation). For the same reason
    the read needs no autoflush in such a session: nothing it could flush changes what it reads."""
    if session.info.get(_HOLDS_ENDPOINTS) and any(
        isinstance(obj, WebhookEndpoint) for obj in (*session.new, *session.dirty)
    ):
        session.info.pop(_SUBSCRIBERS, None)
        rows = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.merchant == merchant))
        return [(e.id, frozenset(e.event_types)) for e in rows]
    transaction = session.get_transaction()
    kept = session.info.get(_SUBSCRIBERS)
    if kept is None or transaction is None or kept[0] is not transaction:
        kept = session.info[_SUBSCRIBERS] = (transaction, {})
    cache: dict[str, list[tuple[str, frozenset[str]]]] = kept[1]
    found = cache.get(merchant)
    if found is None:
        if session.info.get(_HOLDS_ENDPOINTS):
            rows = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.merchant == merchant))
            found = [(e.id, frozenset(e.event_types)) for e in rows]
        else:
            query = select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
                WebhookEndpoint.merchant == merchant
            )
            with session.no_autoflush:
                found = [(endpoint_id, frozenset(types)) for endpoint_id, types in session.execute(query)]
        cache[merchant] = found
    return found


def _held(session: Session | None) -> None:
    """Note that ``session`` holds (or held) an endpoint object: from now on :func:`_subscribers` looks
    for its own changes to endpoints before trusting what it read."""
    if session is not None:
        session.info[_HOLDS_ENDPOINTS] = True


@event.listens_for(WebhookEndpoint, "load")
def _on_endpoint_load(target: WebhookEndpoint, context: Any) -> None:
    _held(context.session)


@event.listens_for(Session, "after_attach")
def _on_attach(session: Session, instance: object) -> None:
    # add(), merge() and delete() of an object; loads are seen by _on_endpoint_load.
    if isinstance(instance, WebhookEndpoint):
        _held(session)


@dataclasses.dataclass
class _StagedEvents:
    transaction: Any
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    deliveries: list[dict[str, Any]] = dataclasses.field(default_factory=list)


_STAGED = "cardless.outbox.staged"


def _staged(session: Session) -> _StagedEvents:
    return per_transaction(session, _STAGED, _StagedEvents)


def record_order_event(session: Session, order: Order, state: OrderState, at: datetime) -> None:
    """The event ``order`` reaching ``state`` causes, if merchants hear about that state: staged with its
    deliveries, and written with the transition's other rows after the flush that writes the order
    (``cardless.ledger.transitions``), one multi-row ``INSERT`` per table for a whole stage. Does not
    commit."""
    event_type = ORDER_EVENT_TYPES.get(state)
    if event_type is None:
        return
    # Read first: the read may flush, and a flush writes (and empties) what is staged so far.
    subscribers = _subscribers(session, order.merchant)
    event_id = _new_event_id()
    body = _body(event_id, event_type, {"order": order_data(order)}, at)
    staged = _staged(session)
    staged.events.append(
        {
            "id": event_id,
            "merchant": order.merchant,
            "type": event_type,
            "order_id": order.id,
            "body": body,
            "created_at": at,
        }
    )
    for endpoint_id, event_types in subscribers:
        if event_type in event_types:
            staged.deliveries.append(
                {
                    "event_id": event_id,
                    "endpoint_id": endpoint_id,
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "next_attempt_at": at,
                    "created_at": at,
                }
            )


def has_staged_order_events(session: Session) -> bool:
    kept = session.info.get(_STAGED)
    return isinstance(kept, _StagedEvents) and bool(kept.events)


def write_staged_order_events(session: Session) -> None:
    """Write the staged order events, then their deliveries (in the caller's transaction, after a flush)."""
    kept = session.info.pop(_STAGED, None)
    if not isinstance(kept, _StagedEvents) or kept.transaction is not session.get_transaction():
        return
    connection = session.connection()
    if kept.events:
        connection.execute(insert(WebhookEvent.__table__), kept.events)  # type: ignore[arg-type]
    if kept.deliveries:
        connection.execute(insert(WebhookDelivery.__table__), kept.deliveries)  # type: ignore[arg-type]


@event.listens_for(Session, "after_rollback")
def _drop(session: Session) -> None:
    session.info.pop(_STAGED, None)
