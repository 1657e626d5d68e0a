"""Routes of the minimal gateway: catalogue, quotes, order status, health."""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from adapters._exceptions import CallbackRejected
from cardless.ledger.models import ChainTx, ChainTxOrder, Order, OrderState
from gateway.api.deps import CatalogueDep, ContextDep, QuotesDep, SessionDep

__all__ = ["router"]

router = APIRouter(prefix="/v1")
log = logging.getLogger(__name__)


class QuoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=64, examples=["genshin-60"])
    account: str = Field(min_length=1, max_length=64, description="The game account to credit")
    token: str = Field(min_length=1, max_length=32, examples=["tUSDC", "ETH"])
    buyer: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="The wallet that will pay")


@router.get("/catalogue")
def catalogue(context: ContextDep, catalogue: CatalogueDep) -> dict[str, Any]:
    tokens = {t.symbol: t for t in context.deployment.tokens}
    return {
        "chain_id": context.deployment.chain_id,
        "escrow": context.deployment.escrow,
        "merchants": [
            {"id": m.id, "name": m.name, "address": m.address, "fee_bps": m.fee_bps}
            for m in catalogue.merchants
        ],
        "skus": [
            {
                "id": s.id,
                "title": s.title,
                "merchant": s.merchant,
                "prices": [
                    {
                        "token": symbol,
                        "address": tokens[symbol].address,
                        "decimals": tokens[symbol].decimals,
                        "amount": str(amount),
                    }
                    for symbol, amount in s.prices.items()
                    if symbol in tokens
                ],
            }
            for s in catalogue.skus
        ],
    }


@router.post("/quotes", status_code=201)
async def create_quote(body: QuoteCreate, quotes: QuotesDep) -> dict[str, Any]:
    return await quotes.create(
        sku_id=body.sku, account=body.account, token_symbol=body.token, buyer=body.buyer
    )


@router.get("/orders/{order_id}")
def order_status(session: SessionDep, order_id: str = Path(pattern=r"^0x[0-9a-fA-F]{64}$")) -> dict[str, Any]:
    row = session.get(Order, order_id.lower())
    if row is None:
        raise HTTPException(404, f"order {order_id} not found")
    txs = session.execute(
        select(ChainTx)
        .join(ChainTxOrder, ChainTxOrder.chain_tx_id == ChainTx.id)
        .where(ChainTxOrder.order_id == row.id)
        .order_by(ChainTx.id)
    ).scalars()
    return {
        "order_id": row.id,
        "state": row.state,
        "sku": row.sku,
        "provider": row.providers[row.provider_index] if row.providers else None,
        "buyer": row.buyer,
        "merchant": row.merchant,
        "token": row.token,
        "amount": str(row.amount),
        "fee_bps": row.fee_bps,
        "quote_expiry": row.quote_expiry,
        "fulfilment_deadline": row.fulfilment_deadline,
        "account_commitment": row.account_commitment,
        "chain": {
            "paid_tx": row.paid_tx,
            "paid_block": row.paid_block,
            "settle_tx": row.settle_tx,
            "refund_tx": row.refund_tx,
            "transactions": [
                {"purpose": t.purpose, "tx_hash": t.tx_hash, "state": t.state, "nonce": t.nonce} for t in txs
            ],
        },
        "provider_ref": row.provider_ref,
        "receipt": row.receipt,
        "receipt_hash": row.receipt_hash,
        "proof": None
        if row.proof_signature is None
        else {
            "signature": row.proof_signature,
            "fulfilled_at": row.fulfilled_at,
            "receipt_hash": row.receipt_hash,
        },
        "refund_reason": row.refund_reason,
        "timeline": [
            {"at": _utc(e.at).isoformat(), "from": e.from_state, "to": e.to_state, "reason": e.reason}
            for e in row.events
        ],
        "last_error": row.last_error,
    }


def _utc(at: datetime) -> datetime:
    """Event times are written in UTC; SQLite hands them back without the zone, which a client would
    read as its own local time."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@router.post("/providers/{provider}/callback")
async def provider_callback(provider: str, request: Request, context: ContextDep) -> dict[str, Any]:
    """A provider's signed status callback. It is only a hint: the oracle re-queries the provider by our
    key, so a forged or replayed callback can at most cause one extra query. Forged ones are refused."""
    adapter = context.adapters.get(provider)
    if adapter is None:
        raise HTTPException(404, f"unknown provider {provider!r}")
    raw = await request.body()
    try:
        result = await adapter.verify_callback(raw, dict(request.headers), time.time())
    except CallbackRejected as exc:
        log.warning("rejected callback from %s: %s", provider, exc)
        raise HTTPException(401, f"callback rejected: {exc}") from exc
    if result.order_key is None:
        raise HTTPException(422, "callback names no order")
    with context.sessions.begin() as session:
        row = session.get(Order, result.order_key.lower())
        if row is None:
            log.warning("callback from %s for unknown order %s", provider, result.order_key)
            raise HTTPException(404, f"order {result.order_key} not found")
        if row.state in (OrderState.SUBMITTING.value, OrderState.UNKNOWN.value):
            row.next_attempt_at = None  # query now
    return {"accepted": True}


@router.get("/health")
def health(context: ContextDep) -> dict[str, Any]:
    chain: dict[str, Any]
    try:
        block = context.w3.eth.block_number
        chain = {"ok": True, "block": block}
    except Exception as exc:  # the health endpoint reports, it does not fail
        chain = {"ok": False, "error": str(exc)}
    providers: dict[str, Any] = {}
    for name, adapter in context.adapters.items():
        providers[name] = dataclasses.asdict(adapter.health())
    return {
        "status": "ok" if chain["ok"] else "degraded",
        "chain": chain,
        "providers": providers,
        "deployment": context.deployment.model_dump(mode="json"),
        "simulator": context.simulator_url,
    }
