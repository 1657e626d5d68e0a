"""Order status: the whole order for the operator, and the public part anyone may read.

The public view holds only what the chain already shows once the order is paid (state, transaction
hashes, proof, receipt hash, refund reason): anyone can take order ids from the escrow's ``OrderPaid``
logs, so nothing else about an order may be readable without credentials.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from cardless.ledger.models import ChainTx, ChainTxOrder, Order, OrderState
from gateway.schemas import (
    ChainRefs,
    ChainTxOut,
    OrderOut,
    OrderPublicOut,
    ProofOut,
    PublicChainRefs,
    TimelineEntry,
)
from gateway.services._exceptions import NotFound

__all__ = ["find_public_order_status", "order_status", "public_order_status"]

# The public view's columns only, by primary key: one indexed read, no ORM identity map or full row
# (the order's ciphertext, receipt and review detail are never needed for it).
_PUBLIC = select(
    Order.id,
    Order.state,
    Order.paid_tx,
    Order.paid_block,
    Order.settle_tx,
    Order.refund_tx,
    Order.receipt_hash,
    Order.proof_signature,
    Order.fulfilled_at,
    Order.refund_reason,
).where(Order.id == bindparam("order_id"))


def public_order_status(session: Session, order_id: str) -> OrderPublicOut:
    """What anyone may read of ``order_id``. Raises :class:`NotFound` when there is none."""
    found = find_public_order_status(session, order_id)
    if found is None:
        raise NotFound("order_id", f"order {order_id} not found")
    return found


def find_public_order_status(db: Session | Connection, order_id: str) -> OrderPublicOut | None:
    """:func:`public_order_status` on a session or a plain connection; None when there is no such order."""
    row = db.execute(_PUBLIC, {"order_id": order_id.lower()}).first()
    if row is None:
        return None
    proof = None
    if row.proof_signature is not None and row.fulfilled_at is not None:
        proof = ProofOut(
            signature=row.proof_signature, fulfilled_at=row.fulfilled_at, receipt_hash=row.receipt_hash
        )
    return OrderPublicOut(
        order_id=row.id,
        state=OrderState(row.state),
        chain=PublicChainRefs(
            paid_tx=row.paid_tx, paid_block=row.paid_block, settle_tx=row.settle_tx, refund_tx=row.refund_tx
        ),
        receipt_hash=row.receipt_hash,
        proof=proof,
        refund_reason=row.refund_reason,
    )


def order_status(session: Session, order_id: str) -> OrderOut:
    """The whole order ``order_id`` (hex, any case). Raises :class:`NotFound` when there is none."""
    row = _order(session, order_id)
    # The link table is indexed by order: no scan over the transactions' JSON order lists.
    txs = session.execute(
        select(ChainTx)
        .join(ChainTxOrder, ChainTxOrder.chain_tx_id == ChainTx.id)
        .where(ChainTxOrder.order_id == row.id)
        .order_by(ChainTx.id)
    ).scalars()
    return OrderOut(
        order_id=row.id,
        state=OrderState(row.state),
        sku=row.sku,
        provider=row.providers[row.provider_index] if row.providers else None,
        buyer=row.buyer,
        merchant=row.merchant,
        token=row.token,
        amount=str(row.amount),
        fee_bps=row.fee_bps,
        quote_expiry=row.quote_expiry,
        fulfilment_deadline=row.fulfilment_deadline,
        account_commitment=row.account_commitment,
        chain=ChainRefs(
            paid_tx=row.paid_tx,
            paid_block=row.paid_block,
            settle_tx=row.settle_tx,
            refund_tx=row.refund_tx,
            transactions=[
                ChainTxOut(purpose=t.purpose, tx_hash=t.tx_hash, state=t.state, nonce=t.nonce) for t in txs
            ],
        ),
        provider_ref=row.provider_ref,
        receipt=row.receipt,
        receipt_hash=row.receipt_hash,
        proof=_proof(row),
        refund_reason=row.refund_reason,
        timeline=[
            TimelineEntry.model_validate(
                {"at": _utc(e.at), "from": e.from_state, "to": e.to_state, "reason": e.reason}
            )
            for e in row.events
        ],
        last_error=row.last_error,
    )


def _order(session: Session, order_id: str) -> Order:
    row = session.get(Order, order_id.lower())
    if row is None:
        raise NotFound("order_id", f"order {order_id} not found")
    return row


def _proof(row: Order) -> ProofOut | None:
    if row.proof_signature is None or row.fulfilled_at is None:
        return None
    return ProofOut(
        signature=row.proof_signature, fulfilled_at=row.fulfilled_at, receipt_hash=row.receipt_hash
    )


def _utc(at: datetime) -> datetime:
    """Event times are written in UTC; SQLite hands them back without the zone, which a client would
    read as its own local time."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
