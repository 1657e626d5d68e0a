"""Order status: one order as a client sees it, with its chain references, proof and timeline."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cardless.ledger.models import ChainTx, ChainTxOrder, Order, OrderState
from gateway.schemas import ChainRefs, ChainTxOut, OrderOut, ProofOut, TimelineEntry
from gateway.services._exceptions import NotFound

__all__ = ["order_status"]


def order_status(session: Session, order_id: str) -> OrderOut:
    """The order ``order_id`` (hex, any case). Raises :class:`NotFound` when there is none."""
    row = session.get(Order, order_id.lower())
    if row is None:
        raise NotFound("order_id", f"order {order_id} not found")
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
        proof=None
        if row.proof_signature is None or row.fulfilled_at is None
        else ProofOut(
            signature=row.proof_signature, fulfilled_at=row.fulfilled_at, receipt_hash=row.receipt_hash
        ),
        refund_reason=row.refund_reason,
        timeline=[
            TimelineEntry.model_validate(
                {"at": _utc(e.at), "from": e.from_state, "to": e.to_state, "reason": e.reason}
            )
            for e in row.events
        ],
        last_error=row.last_error,
    )


def _utc(at: datetime) -> datetime:
    """Event times are written in UTC; SQLite hands them back without the zone, which a client would
    read as its own local time."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
