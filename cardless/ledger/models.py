"""Database models. One row per order carries its whole life; every state change also appends an
``OrderEvent`` (the timeline), written in the same transaction by ``cardless.ledger.transitions.transition``.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from cardless.ledger.types import AmountSum, Uint256

__all__ = [
    "BUCKET_SECONDS",
    "FULFIL_BOUNDS",
    "ApiKey",
    "Base",
    "BuyerSession",
    "ChainCursor",
    "ChainReorg",
    "ChainTx",
    "ChainTxOrder",
    "ChainTxState",
    "IdempotencyRecord",
    "Merchant",
    "MerchantSession",
    "Order",
    "OrderEvent",
    "OrderState",
    "ProviderAttempt",
    "RefundRollup",
    "SalesRollup",
    "SeenLog",
    "SignerNonce",
    "SiweNonce",
    "Sku",
    "SkuPrice",
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
    # Risk (issue 14, cardless.ledger.risk): the keyed hash of the normalised game account, written at
    # quote time (the account itself stays encrypted), and when the risk engine held this paid order for
    # review (it stays ``paid`` until approved, refunded, or refunded by the deadline job).
    account_hash: Mapped[str | None] = mapped_column(String(64))
    risk_hold_at: Mapped[datetime | None] = mapped_column(index=True)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    events: Mapped[list[OrderEvent]] = relationship(
        back_populates="order", order_by="OrderEvent.id", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_orders_state_next_attempt", "state", "next_attempt_at"),
        # The merchant's and the buyer's order lists: newest first, keyset on (created_at, id).
        Index("ix_orders_merchant_created", "merchant", "created_at", "id"),
        Index("ix_orders_buyer_created", "buyer", "created_at", "id"),
        # Risk velocity windows and analytics ranges: all keyed on the payment time.
        Index("ix_orders_buyer_paid", "buyer", "paid_at"),
        Index("ix_orders_account_paid", "account_hash", "paid_at"),
        Index("ix_orders_sku_paid", "sku", "paid_at"),
        Index("ix_orders_merchant_paid", "merchant", "paid_at"),
        Index("ix_orders_paid_at", "paid_at"),
        # The receipts export (GET /v1/audit/receipts): settled orders, oldest settlement first.
        Index("ix_orders_state_closed", "state", "closed_at", "id"),
        Index("ix_orders_merchant_state_closed", "merchant", "state", "closed_at", "id"),
    )


class OrderEvent(Base):
    """One entry of an order's timeline: a state change and why."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)  # analytics ranges
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None]

    order: Mapped[Order] = relationship(back_populates="events")


class ProviderAttempt(Base):
    """One call of a provider for an order (the move to ``submitting`` that names the provider) and its
    answer: the state the order's next change moved it to, and when. ``transition`` writes both, in the
    transaction of the timeline entries they mirror, so the providers figure reads one row per attempt
    (by ``submitted_at``, or per merchant) instead of pairing every order's timeline events."""

    __tablename__ = "provider_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"))
    merchant: Mapped[str] = mapped_column(String(42))
    provider: Mapped[str] = mapped_column(String(64))
    submitted_at: Mapped[datetime]
    outcome: Mapped[str | None] = mapped_column(String(32))
    """The order's state after the answer: succeeded, failed_final, unknown, or submitting/risk_checked
    (refused and failed over, or the breaker refused the call); None while the call is open."""
    answered_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_provider_attempts_order_id", "order_id"),
        # Covering: the providers figure reads these indexes only (no table access).
        Index("ix_provider_attempts_submitted", "submitted_at", "provider", "outcome", "answered_at"),
        Index(
            "ix_provider_attempts_merchant_submitted",
            "merchant",
            "submitted_at",
            "provider",
            "outcome",
            "answered_at",
        ),
    )


BUCKET_SECONDS = 900
"""The rollups' bucket: 15 minutes of UTC, named by its start in whole seconds since the epoch. Every
allowed local offset that is a whole number of quarter hours (all the world's zones) keeps a bucket inside
one local hour and one local day; ``cardless.ledger.analytics`` reads any other offset exactly."""

FULFIL_BOUNDS = (5, 10, 30, 60, 300, 900)
"""The fulfilment histogram's upper bounds in seconds (exclusive); one more, open bucket above them."""


class SalesRollup(Base):
    """The paid orders of one 15-minute bucket, merchant, SKU and token (by ``paid_at``): how many, their
    amount, and of those fulfilled, the seconds from payment to top-up as count, sum, maximum and
    histogram. Kept by ``cardless.ledger.rollups`` in the transaction of every order change that moves an
    order in or out (applied at commit, keys in sorted order), filled from the orders by migration 0011;
    the analytics figures read it for every whole bucket of their range (docs/risk.md)."""

    __tablename__ = "analytics_sales"

    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    merchant: Mapped[str] = mapped_column(String(42), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[str] = mapped_column(String(42), primary_key=True)
    orders: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(AmountSum)
    fulfilled: Mapped[int] = mapped_column(BigInteger)
    fulfil_seconds: Mapped[int] = mapped_column(BigInteger)
    fulfil_max: Mapped[int | None] = mapped_column(BigInteger)
    """None when no order of the row is fulfilled. Removing the maximum recomputes it from the orders."""
    h_5: Mapped[int] = mapped_column(BigInteger)
    h_10: Mapped[int] = mapped_column(BigInteger)
    h_30: Mapped[int] = mapped_column(BigInteger)
    h_60: Mapped[int] = mapped_column(BigInteger)
    h_300: Mapped[int] = mapped_column(BigInteger)
    h_900: Mapped[int] = mapped_column(BigInteger)
    h_open: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_analytics_sales_merchant_bucket", "merchant", "bucket"),)


class RefundRollup(Base):
    """Orders with a refund reason, per 15-minute bucket of ``paid_at``, merchant and reason code; kept
    like :class:`SalesRollup`."""

    __tablename__ = "analytics_refunds"

    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    merchant: Mapped[str] = mapped_column(String(42), primary_key=True)
    reason: Mapped[int] = mapped_column(Integer, primary_key=True)
    orders: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_analytics_refunds_merchant_bucket", "merchant", "bucket"),)


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


# ------------------------------------------------------------------------------ merchants (issue 9)


class Merchant(Base):
    """A merchant, created by the operator. ``address`` is the account the escrow credits on settlement
    (orders carry it); withdrawals go to that account's payout address on chain, which only the
    merchant's own wallet can set (``setPayoutAddress``). ``payout_address`` is what the merchant asked
    the gateway to prepare, kept for the record; the chain is the authority."""

    __tablename__ = "merchants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(42), unique=True)
    fee_bps: Mapped[int] = mapped_column(Integer)
    payout_address: Mapped[str | None] = mapped_column(String(42))
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A merchant's API key: ``ck_live_<prefix>_<secret>``. Only the SHA-256 of the whole key is kept
    (the secret is 256 random bits, so a fast hash is as good as a slow one); ``prefix`` finds the row
    and is what the merchant sees in listings and logs."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    rate_limit: Mapped[str | None] = mapped_column(String(32))
    """This key's quota (``N/second|minute|hour|day``); None: the gateway's default per-key quota."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    rotated_to: Mapped[int | None] = mapped_column(Integer)
    """The key that replaced this one by rotation (this one then expires after the overlap)."""


class Sku(Base):
    """A SKU a merchant sells. Its id is global: the order commits to ``keccak256(id)`` on chain."""

    __tablename__ = "skus"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    face_value: Mapped[int | None] = mapped_column(BigInteger)
    """What the buyer's game account is credited with (60 crystals), in the game's units."""
    providers: Mapped[list[str]] = mapped_column(JSON)  # failover order
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    daily_limit: Mapped[int | None] = mapped_column(Integer)
    """Orders of this SKU per UTC day (all buyers); None: no limit."""
    buyer_daily_limit: Mapped[int | None] = mapped_column(Integer)
    """Orders of this SKU per buyer wallet per UTC day; None: no limit."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    prices: Mapped[list[SkuPrice]] = relationship(
        back_populates="sku", cascade="all, delete-orphan", order_by="SkuPrice.position"
    )


class SkuPrice(Base):
    """The price of one SKU in one token, in the token's base units."""

    __tablename__ = "sku_prices"

    sku_id: Mapped[str] = mapped_column(ForeignKey("skus.id", ondelete="CASCADE"), primary_key=True)
    token: Mapped[str] = mapped_column(String(32), primary_key=True)  # the deployment's token symbol
    amount: Mapped[int] = mapped_column(Uint256)
    position: Mapped[int] = mapped_column(Integer, default=0)

    sku: Mapped[Sku] = relationship(back_populates="prices")


class IdempotencyRecord(Base):
    """The first answer to a POST carrying ``Idempotency-Key``, replayed to every retry for 24 h.

    The row is inserted (``response_status`` NULL) *before* the request runs: the unique key is what
    makes concurrent duplicates run once, whichever process they reach."""

    __tablename__ = "idempotency_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(80))
    """Whose key: a hash of the credentials, or the client address for anonymous requests."""
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256(method, path, query, body)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, Any] | None]
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (UniqueConstraint("scope", "key", name="uq_idempotency_scope_key"),)


class RateLimitWindow(Base):
    """One fixed window of one rate limit for one client or wallet: how many requests it has counted.
    Bumped by one atomic upsert (``gateway.services.ratelimits``), so every gateway process on the
    database counts against the same row; deleted once the window has closed."""

    __tablename__ = "rate_limit_windows"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    """``<limit>:<client or wallet>@<window start, epoch seconds>``."""
    hits: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    """The window's end."""


class SiweNonce(Base):
    """A Sign-In with Ethereum nonce the gateway issued; used once (``used_at``), within its lifetime."""

    __tablename__ = "siwe_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]


class BuyerSession(Base):
    """A buyer signed in with their wallet: the bearer token's SHA-256, the address, the expiry."""

    __tablename__ = "buyer_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(42), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class MerchantSession(Base):
    """A merchant signed in to the dashboard with the wallet of its settlement address (Sign-In with
    Ethereum): the bearer token's SHA-256, whose merchant and address, the expiry, and ``revoked_at``
    once signed out (kept, not deleted, so a sign-out is on the record until the row expires)."""

    __tablename__ = "merchant_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    address: Mapped[str] = mapped_column(String(42))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime | None]
