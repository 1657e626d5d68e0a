"""Risk routes: a merchant's rule configuration and block list, and the review queue of held orders
(approve: the order goes on to its top-up; refund: RISK_REJECTED) — for merchant keys with the scope
`risk:review` (their own orders) and for the operator (every merchant; the operator's block list
applies to all). A held order nobody reviews is refunded by the oracle before its deadline.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cardless.ledger.models import Merchant, utcnow
from cardless.ledger.risk import ALL_MERCHANTS, RiskConfig, RiskListEntry, RiskRules, rules_for
from cardless.ledger.risk import review as queue
from gateway.api.auth import OperatorOnlyDep, merchant_with
from gateway.api.deps import ContextDep, SessionDep
from gateway.api.errors import problem_responses
from gateway.api.routes import operation_id
from gateway.services import Conflict, InvalidField, NotFound
from gateway.services.api_keys import MerchantKey

__all__ = ["router"]

router = APIRouter(
    prefix="/v1", generate_unique_id_function=operation_id, responses=problem_responses(405, 500)
)

Reviewer = Annotated[MerchantKey, Depends(merchant_with("risk:review"))]
OrderId = Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$")]
MerchantId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")]
_KEY = (401, 403, 429)
_ADMIN = (401, 403)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReasonOut(_Model):
    rule: str
    detail: str
    action: Literal["hold", "refund"] | None
    points: int


class HeldOrderOut(_Model):
    order_id: str
    merchant: str
    buyer: str
    sku: str
    token: str
    amount: str = Field(description="Base units of the token, as a decimal string")
    paid_at: datetime | None
    held_at: datetime
    fulfilment_deadline: int = Field(description="Unix seconds (chain time): refunded by itself before it")
    score: int
    reasons: list[ReasonOut]


class ReviewListOut(_Model):
    data: list[HeldOrderOut]
    has_more: bool


class ReviewAction(_Model):
    note: str = Field(default="", max_length=500)


class ReviewResultOut(_Model):
    order_id: str
    state: str
    action: Literal["approve", "refund"]


class BlockCreate(_Model):
    kind: Literal["wallet", "account"]
    value: str = Field(
        min_length=1,
        max_length=200,
        description="A wallet address, or a game account (stored only as its keyed hash)",
    )
    note: str | None = Field(default=None, max_length=200)


class BlockOut(_Model):
    id: int
    kind: str
    value: str = Field(description="The wallet address, or the game account's keyed hash")
    note: str | None
    created_at: datetime


def _held_out(items: list[queue.HeldOrder]) -> list[HeldOrderOut]:
    out = []
    for item in items:
        o, d = item.order, item.decision
        assert o.risk_hold_at is not None
        out.append(
            HeldOrderOut(
                order_id=o.id,
                merchant=o.merchant,
                buyer=o.buyer,
                sku=o.sku,
                token=o.token,
                amount=str(o.amount),
                paid_at=o.paid_at,
                held_at=o.risk_hold_at,
                fulfilment_deadline=o.fulfilment_deadline,
                score=d.score,
                reasons=[ReasonOut.model_validate(r) for r in d.reasons],
            )
        )
    return out


def _list(session: Session, merchant: str | None, limit: int, held_after: datetime | None) -> ReviewListOut:
    items = queue.held_orders(session, merchant=merchant, limit=limit + 1, held_after=held_after)
    return ReviewListOut(data=_held_out(items[:limit]), has_more=len(items) > limit)


def _act(
    session: Session,
    order_id: str,
    action: Literal["approve", "refund"],
    reviewer: str,
    merchant: str | None,
    note: str,
) -> ReviewResultOut:
    order_id = order_id.lower()
    try:
        with session.begin():
            do = queue.approve if action == "approve" else queue.refund
            order = do(session, order_id, reviewer=reviewer, merchant=merchant, note=note)
            state = order.state
    except queue.NotHeld as exc:
        raise Conflict(str(exc)) from None
    return ReviewResultOut(order_id=order_id, state=state, action=action)


Limit = Annotated[int, Query(ge=1, le=100)]
HeldAfter = Annotated[datetime | None, Query(description="The last `held_at` of the previous page")]


# ---------------------------------------------------------------------- the merchant's queue


@router.get("/merchant/reviews", tags=["risk"], responses=problem_responses(*_KEY, 422))
def list_own_reviews(
    key: Reviewer, session: SessionDep, limit: Limit = 50, held_after: HeldAfter = None
) -> ReviewListOut:
    """Orders of this merchant held by the risk engine, oldest hold first (scope `risk:review`)."""
    return _list(session, key.merchant_address, limit, held_after)


@router.post(
    "/merchant/reviews/{order_id}/approve",
    tags=["risk"],
    responses=problem_responses(400, 413, *_KEY, 409, 422),
)
def approve_own_review(
    order_id: OrderId, body: ReviewAction, key: Reviewer, session: SessionDep
) -> ReviewResultOut:
    """Release a held order to its top-up. 409 when it is not held (any more) or not this merchant's."""
    return _act(session, order_id, "approve", f"key {key.prefix}", key.merchant_address, body.note)


@router.post(
    "/merchant/reviews/{order_id}/refund",
    tags=["risk"],
    responses=problem_responses(400, 413, *_KEY, 409, 422),
)
def refund_own_review(
    order_id: OrderId, body: ReviewAction, key: Reviewer, session: SessionDep
) -> ReviewResultOut:
    """Refund a held order (reason RISK_REJECTED); the oracle signs and sends the refund."""
    return _act(session, order_id, "refund", f"key {key.prefix}", key.merchant_address, body.note)


# ---------------------------------------------------------------------- the merchant's rules


@router.get("/merchant/risk/config", tags=["risk"], responses=problem_responses(*_KEY))
def get_own_risk_config(key: Reviewer, session: SessionDep) -> RiskRules:
    """The rules in force for this merchant: its own settings over the defaults."""
    return rules_for(session, key.merchant_address, RiskRules())


@router.put("/merchant/risk/config", tags=["risk"], responses=problem_responses(400, 413, *_KEY, 422))
def put_own_risk_config(body: RiskRules, key: Reviewer, session: SessionDep) -> RiskRules:
    """Replace this merchant's rules (fields left out take the defaults). The oracle applies them within
    seconds (it caches rules for `rules_ttl`)."""
    with session.begin():
        row = session.get(RiskConfig, key.merchant_address)
        settings = body.model_dump(mode="json", exclude_defaults=True)
        if row is None:
            session.add(RiskConfig(merchant=key.merchant_address, rules=settings))
        else:
            row.rules, row.updated_at = settings, utcnow()
    return rules_for(session, key.merchant_address, RiskRules())


def _block_out(row: RiskListEntry) -> BlockOut:
    return BlockOut(id=row.id, kind=row.kind, value=row.value, note=row.note, created_at=row.created_at)


def _add_block(session: Session, context: ContextDep, merchant: str, body: BlockCreate) -> BlockOut:
    value: str
    if body.kind == "wallet":
        if not is_address(body.value):
            raise InvalidField("value", "a wallet must be a 20-byte hex address")
        value = to_checksum_address(body.value)
    else:
        value = context.quotes.cipher.account_hash(body.value)
    row = RiskListEntry(merchant=merchant, kind=body.kind, value=value, note=body.note)
    try:
        with session.begin():
            session.add(row)
    except IntegrityError:
        raise Conflict(f"this {body.kind} is already on the list") from None
    return _block_out(row)


def _remove_block(session: Session, merchant: str, entry_id: int) -> BlockOut:
    with session.begin():
        row = session.get(RiskListEntry, entry_id)
        if row is None or row.merchant != merchant:
            raise NotFound("entry_id", f"no block-list entry {entry_id}")
        removed = _block_out(row)
        session.delete(row)
    return removed


def _blocks(session: Session, merchant: str) -> list[BlockOut]:
    rows = session.execute(
        select(RiskListEntry).where(RiskListEntry.merchant == merchant).order_by(RiskListEntry.id)
    ).scalars()
    return [_block_out(r) for r in rows]


EntryId = Annotated[int, Path(ge=1, le=2**53)]


@router.get("/merchant/risk/blocklist", tags=["risk"], responses=problem_responses(*_KEY))
def list_own_blocklist(key: Reviewer, session: SessionDep) -> list[BlockOut]:
    return _blocks(session, key.merchant_address)


@router.post(
    "/merchant/risk/blocklist",
    status_code=201,
    tags=["risk"],
    responses=problem_responses(400, 413, *_KEY, 409, 422),
)
def add_own_block(body: BlockCreate, key: Reviewer, context: ContextDep, session: SessionDep) -> BlockOut:
    """Block a wallet or a game account for this merchant's orders: a paid order from it is refunded
    (the default `blocklist_action`). A game account is kept only as its keyed hash."""
    return _add_block(session, context, key.merchant_address, body)


@router.delete(
    "/merchant/risk/blocklist/{entry_id}",
    tags=["risk"],
    responses=problem_responses(*_KEY, 404, 422),
)
def remove_own_block(entry_id: EntryId, key: Reviewer, session: SessionDep) -> BlockOut:
    """Take an entry off this merchant's list; answers what was removed."""
    return _remove_block(session, key.merchant_address, entry_id)


# ---------------------------------------------------------------------- the operator


@router.get("/risk/reviews", tags=["risk"], responses=problem_responses(*_ADMIN, 422))
def list_reviews(
    _: OperatorOnlyDep, session: SessionDep, limit: Limit = 50, held_after: HeldAfter = None
) -> ReviewListOut:
    """Every merchant's held orders, oldest hold first (operator)."""
    return _list(session, None, limit, held_after)


@router.post(
    "/risk/reviews/{order_id}/approve",
    tags=["risk"],
    responses=problem_responses(400, 413, *_ADMIN, 409, 422),
)
def approve_review(
    order_id: OrderId, body: ReviewAction, _: OperatorOnlyDep, session: SessionDep
) -> ReviewResultOut:
    return _act(session, order_id, "approve", "operator", None, body.note)


@router.post(
    "/risk/reviews/{order_id}/refund", tags=["risk"], responses=problem_responses(400, 413, *_ADMIN, 409, 422)
)
def refund_review(
    order_id: OrderId, body: ReviewAction, _: OperatorOnlyDep, session: SessionDep
) -> ReviewResultOut:
    return _act(session, order_id, "refund", "operator", None, body.note)


@router.get("/risk/config/{merchant_id}", tags=["risk"], responses=problem_responses(*_ADMIN, 404, 422))
def get_risk_config(merchant_id: MerchantId, _: OperatorOnlyDep, session: SessionDep) -> RiskRules:
    """A merchant's rules in force (operator)."""
    merchant = session.get(Merchant, merchant_id)
    if merchant is None:
        raise NotFound("merchant_id", f"no merchant {merchant_id!r}")
    return rules_for(session, merchant.address, RiskRules())


@router.get("/risk/blocklist", tags=["risk"], responses=problem_responses(*_ADMIN))
def list_blocklist(_: OperatorOnlyDep, session: SessionDep) -> list[BlockOut]:
    """The operator's block list: it applies to every merchant."""
    return _blocks(session, ALL_MERCHANTS)


@router.post(
    "/risk/blocklist",
    status_code=201,
    tags=["risk"],
    responses=problem_responses(400, 413, *_ADMIN, 409, 422),
)
def add_block(body: BlockCreate, _: OperatorOnlyDep, context: ContextDep, session: SessionDep) -> BlockOut:
    return _add_block(session, context, ALL_MERCHANTS, body)


@router.delete(
    "/risk/blocklist/{entry_id}",
    tags=["risk"],
    responses=problem_responses(*_ADMIN, 404, 422),
)
def remove_block(entry_id: EntryId, _: OperatorOnlyDep, session: SessionDep) -> BlockOut:
    return _remove_block(session, ALL_MERCHANTS, entry_id)
