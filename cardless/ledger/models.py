"""Database models. One row per order carries its whole life; every state change also appends an
``OrderEvent`` (the timeline), written in the same transaction by ``cardless.ledger.transitions.transition``.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from cardless.ledger.types import Uint256

__all__ = [
    "Base",
    "ChainCursor",
    "ChainReorg",
    "ChainTx",
    "ChainTxOrder",
    "ChainTxState",
    "Order",
    "OrderEvent",
    "OrderState",
    "SeenLog",
    "SignerNonce",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class OrderState(enum.StrEnum):
    """Fulfilment states (DESIGN.md "Oracle"). Transitions are defined in cardless.ledger.transitions."""

    QUOTED = "quoted"  # quote issued, not paid yet
    EXPIRED = "expired"  # quote expired unpaid (terminal)
    PAID = "paid"  # OrderPaid seen at confirmation depth
    RISK_CHECKED = "risk_checked"
    SUBMITTING = "submitting"  # intent persisted; the provider may or may not have been called
    UNKNOWN = "unknown"  # provider outcome unknown: query by our key until it resolves
    SUCCEEDED = "succeeded"  # provider credited the account; receipt stored
    PROOF_PENDING = "proof_pending"  # fulfilment proof signed; settle transaction to send/confirm
    SETTLED = "settled"  # terminal: OrderSettled on chain
    FAILED_FINAL = "failed_final"  # provider refused, nothing charged, no provider left
    REFUND_PENDING = "refund_pending"  # refund authorisation signed; transaction to send/confirm
    REFUNDED = "refunded"  # terminal: OrderRefunded on chain
    RECLAIMED = "reclaimed"  # terminal: OrderReclaimed on chain (deadline passed)


# EXPIRED is not terminal: a payment mined in the block the quote expired still arrives afterwards.
TERMINAL_STATES = frozenset({OrderState.SETTLED, OrderState.REFUNDED, OrderState.RECLAIMED})


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[str] = mapped_column(String(66), primary_key=True)  # 0x + 64 hex: the on-chain orderId
    state: Mapped[str] = mapped_column(String(32), index=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    escrow: Mapped[str] = mapped_column(String(42))

    sku: Mapped[str] = mapped_column(String(64))
    providers: Mapped[list[str]] = mapped_column(JSON)  # failover order for this SKU at quote time
    provider_index: Mapped[int] = mapped_column(Integer, default=0)

    buyer: Mapped[str] = mapped_column(String(42), index=True)
    merchant: Mapped[str] = mapped_column(String(42), index=True)
    token: Mapped[str] = mapped_column(String(42))
    amount: Mapped[int] = mapped_column(Uint256)
    fee_bps: Mapped[int] = mapped_column(Integer)
    quote_expiry: Mapped[int] = mapped_column(BigInteger)
    fulfilment_deadline: Mapped[int] = mapped_column(BigInteger)
    sku_hash: Mapped[str] = mapped_column(String(66))
    account_commitment: Mapped[str] = mapped_column(String(66))
    # AES-GCM, see cardless.ledger.cipher. The commitment's salt is not stored: AccountCipher.salt derives it.
    account_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    quote_signer: Mapped[str] = mapped_column(String(42))
    quote_signature: Mapped[str] = mapped_column(String(140))

    paid_tx: Mapped[str | None] = mapped_column(String(66))
    paid_block: Mapped[int | None] = mapped_column(BigInteger)
    paid_at: Mapped[datetime | None]

    provider_ref: Mapped[str | None] = mapped_column(String(128))
    receipt: Mapped[dict[str, Any] | None]
    receipt_hash: Mapped[str | None] = mapped_column(String(66))
    fulfilled_at: Mapped[int | None] = mapped_column(BigInteger)
    proof_signature: Mapped[str | None] = mapped_column(String(140))
    refund_reason: Mapped[int | None] = mapped_column(Integer)
    refund_signature: Mapped[str | None] = mapped_column(String(140))

    settle_tx: Mapped[str | None] = mapped_column(String(66))
    refund_tx: Mapped[str | None] = mapped_column(String(66))
    closed_at: Mapped[datetime | None]

    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    # Work lease: the worker that claimed this order's next external step, and until when. Written and
    # committed before the provider call or transaction it guards; another worker may take the order
    # over once ``lease_until`` has passed (no row lock outlives its database transaction).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # Set when a chain reorganisation deeper than the confirmation depth took away an event this order
    # was acted on (a payment after its top-up may have happened, a settlement, a refund): an operator
    # must look. ``review_detail`` is the evidence (oracles.reorgs); nothing clears it automatically.
    review_reason: Mapped[str | None] = mapped_column(String(64), index=True)
    review_detail: Mapped[dict[str, Any] | None]
    review_at: Mapped[datetime | None]

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    events: Mapped[list[OrderEvent]] = relationship(
        back_populates="order", order_by="OrderEvent.id", cascade="all, delete-orphan"
    )

    __table_args__ = (Index("ix_orders_state_next_attempt", "state", "next_attempt_at"),)


class OrderEvent(Base):
    """One entry of an order's timeline: a state change and why."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None]

    order: Mapped[Order] = relationship(back_populates="events")


class ChainCursor(Base):
    """How far the watcher has processed the chain: last block number and its hash (reorg check)."""

    __tablename__ = "chain_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))


class ChainReorg(Base):
    """A reorganisation that dropped logs the watcher had applied (deeper than the confirmation depth)."""

    __tablename__ = "chain_reorgs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cursor_name: Mapped[str] = mapped_column(String(64))
    detected_at: Mapped[datetime] = mapped_column(default=utcnow)
    old_block: Mapped[int] = mapped_column(BigInteger)
    old_hash: Mapped[str] = mapped_column(String(66))
    ancestor_block: Mapped[int] = mapped_column(BigInteger)
    depth: Mapped[int] = mapped_column(BigInteger)
    """Blocks rolled back: the old cursor minus the common ancestor."""
    confirmations: Mapped[int] = mapped_column(Integer)
    """The confirmation depth in force when it happened."""
    dropped_logs: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    order_ids: Mapped[list[str]] = mapped_column(JSON)


class SeenLog(Base):
    """Logs already applied, keyed by (tx hash, log index): re-delivery is a no-op."""

    __tablename__ = "seen_logs"

    tx_hash: Mapped[str] = mapped_column(String(66), primary_key=True)
    log_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger, index=True)
    block_hash: Mapped[str] = mapped_column(String(66))
    event: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[str] = mapped_column(String(66), index=True)


class SignerNonce(Base):
    """Next nonce per gas-paying key, kept in the database so it is gapless across restarts."""

    __tablename__ = "signer_nonces"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    next_nonce: Mapped[int] = mapped_column(BigInteger)


class ChainTxState(enum.StrEnum):
    SIGNED = "signed"  # raw transaction persisted, maybe not broadcast yet
    SENT = "sent"
    CONFIRMED = "confirmed"
    REVERTED = "reverted"


class ChainTx(Base):
    """Transaction outbox: the signed transaction is stored before it is broadcast, so a crash between
    signing and sending re-broadcasts the same bytes (same hash, same nonce) instead of a new one."""

    __tablename__ = "chain_txs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sender: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[int] = mapped_column(BigInteger)
    purpose: Mapped[str] = mapped_column(String(32))  # settle | settle_batch | refund | withdraw
    order_ids: Mapped[list[str]] = mapped_column(JSON)
    raw_tx: Mapped[bytes] = mapped_column(LargeBinary)
    tx_hash: Mapped[str] = mapped_column(String(66), unique=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    max_fee_per_gas: Mapped[int] = mapped_column(Uint256)
    priority_fee_per_gas: Mapped[int] = mapped_column(Uint256)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    confirmed_block: Mapped[int | None] = mapped_column(BigInteger)
    gas_used: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)

    orders: Mapped[list[ChainTxOrder]] = relationship(
        back_populates="chain_tx", cascade="all, delete-orphan", order_by="ChainTxOrder.order_id"
    )

    __table_args__ = (Index("ix_chain_txs_sender_nonce", "sender", "nonce"),)


class ChainTxOrder(Base):
    """Which orders a transaction acts on: the indexed form of ``ChainTx.order_ids``, so an order's
    transactions are found by key (a batch settlement names up to ``max_batch`` orders)."""

    __tablename__ = "chain_tx_orders"

    chain_tx_id: Mapped[int] = mapped_column(ForeignKey("chain_txs.id", ondelete="CASCADE"), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(66), primary_key=True)

    chain_tx: Mapped[ChainTx] = relationship(back_populates="orders")

    __table_args__ = (Index("ix_chain_tx_orders_order_id", "order_id"),)
