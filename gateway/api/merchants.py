"""Routes for merchants: the operator's admin API (merchants, their API keys, payout-address
transactions) and the merchant's own (its account, its catalogue).

Admin routes take the operator key (401 without credentials, 403 with another kind); merchant routes a
merchant API key with the scope each names (403 without it). Another merchant's SKU is 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from gateway.api.auth import MerchantKeyDep, OperatorOnlyDep, merchant_with
from gateway.api.deps import ContextDep, SessionDep
from gateway.api.errors import problem_responses
from gateway.api.routes import operation_id
from gateway.merchant_schemas import (
    ApiKeyCreate,
    ApiKeyCreatedOut,
    ApiKeyOut,
    ApiKeyRotate,
    MerchantAccountOut,
    MerchantCreate,
    MerchantDisable,
    PayoutAddressCreate,
    PayoutTransactionOut,
    SkuAdminOut,
    SkuCreate,
    SkuUpdate,
)
from gateway.services import Forbidden, api_keys, merchants, skus
from gateway.services.api_keys import MerchantKey

__all__ = ["router"]

router = APIRouter(
    prefix="/v1", generate_unique_id_function=operation_id, responses=problem_responses(405, 500)
)

_BODY = (400, 413)
_ADMIN = (401, 403)
_KEY = (401, 403, 429)  # a merchant key is counted against its quota

MerchantId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")]
SkuId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")]
KeyId = Annotated[int, Path(ge=1, le=2**53)]
CatalogueWriter = Annotated[MerchantKey, Depends(merchant_with("catalogue:write"))]
PayoutReader = Annotated[MerchantKey, Depends(merchant_with("payouts:read"))]


# ------------------------------------------------------------------------------ operator: merchants


@router.post(
    "/merchants",
    status_code=201,
    tags=["admin"],
    responses=problem_responses(*_BODY, *_ADMIN, 409, 422, 503),
)
def create_merchant(
    body: MerchantCreate, _: OperatorOnlyDep, context: ContextDep, session: SessionDep
) -> MerchantAccountOut:
    """Add a merchant (operator). 409 when the id or the settlement address is taken; 422 on a fee
    above the escrow's cap (read from the chain: 503 when it cannot be read)."""
    cap = merchants.fee_cap(context.w3, context.deployment)
    return merchants.create_merchant(session, body, cap_bps=cap)


@router.get("/merchants", tags=["admin"], responses=problem_responses(*_ADMIN))
def list_merchants(_: OperatorOnlyDep, session: SessionDep) -> list[MerchantAccountOut]:
    """Every merchant, active and disabled (operator)."""
    return merchants.list_merchants(session)


@router.get("/merchants/{merchant_id}", tags=["admin"], responses=problem_responses(*_ADMIN, 404, 422))
def get_merchant(merchant_id: MerchantId, _: OperatorOnlyDep, session: SessionDep) -> MerchantAccountOut:
    return merchants.get_merchant(session, merchant_id)


@router.post(
    "/merchants/{merchant_id}/disable",
    tags=["admin"],
    responses=problem_responses(*_BODY, *_ADMIN, 404, 422),
)
def disable_merchant(
    merchant_id: MerchantId, body: MerchantDisable, _: OperatorOnlyDep, session: SessionDep
) -> MerchantAccountOut:
    """Disable a merchant (operator): its SKUs leave the catalogue, its API keys stop working; orders
    already paid still settle."""
    return merchants.disable_merchant(session, merchant_id, body.reason)


@router.post(
    "/merchants/{merchant_id}/payout-address",
    tags=["admin"],
    responses=problem_responses(*_BODY, *_ADMIN, 404, 422, 503),
)
def prepare_merchant_payout_address(
    merchant_id: MerchantId,
    body: PayoutAddressCreate,
    _: OperatorOnlyDep,
    context: ContextDep,
    session: SessionDep,
) -> PayoutTransactionOut:
    """The `setPayoutAddress` transaction for the merchant's wallet to sign (never sent by us)."""
    return merchants.prepare_payout_address(
        session, context.w3, context.deployment, merchant_id, body.payout_address
    )


# ------------------------------------------------------------------------------ operator: API keys


@router.post(
    "/merchants/{merchant_id}/keys",
    status_code=201,
    tags=["admin"],
    responses=problem_responses(*_BODY, *_ADMIN, 404, 422),
)
def create_api_key(
    merchant_id: MerchantId, body: ApiKeyCreate, _: OperatorOnlyDep, session: SessionDep
) -> ApiKeyCreatedOut:
    """A new API key for the merchant (operator). The whole key is in this answer only."""
    return api_keys.create_key(session, merchant_id, body)


@router.get("/merchants/{merchant_id}/keys", tags=["admin"], responses=problem_responses(*_ADMIN, 404, 422))
def list_api_keys(merchant_id: MerchantId, _: OperatorOnlyDep, session: SessionDep) -> list[ApiKeyOut]:
    """The merchant's keys: prefixes, scopes, expiry, last use; never a secret."""
    return api_keys.list_keys(session, merchant_id)


@router.post(
    "/merchants/{merchant_id}/keys/{key_id}/rotate",
    status_code=201,
    tags=["admin"],
    responses=problem_responses(*_BODY, *_ADMIN, 404, 422),
)
def rotate_api_key(
    merchant_id: MerchantId, key_id: KeyId, body: ApiKeyRotate, _: OperatorOnlyDep, session: SessionDep
) -> ApiKeyCreatedOut:
    """A replacement key; the old one keeps working for `overlap_seconds`, then expires."""
    return api_keys.rotate_key(session, merchant_id, key_id, body.overlap_seconds)


@router.post(
    "/merchants/{merchant_id}/keys/{key_id}/revoke",
    tags=["admin"],
    responses=problem_responses(*_ADMIN, 404, 422),
)
def revoke_api_key(
    merchant_id: MerchantId, key_id: KeyId, _: OperatorOnlyDep, session: SessionDep
) -> ApiKeyOut:
    """Revoke a key now: the next request with it is 401."""
    return api_keys.revoke_key(session, merchant_id, key_id)


# ------------------------------------------------------------------------------ the merchant itself


@router.get("/merchant", tags=["merchant"], responses=problem_responses(*_KEY))
def get_own_merchant(key: MerchantKeyDep, session: SessionDep) -> MerchantAccountOut:
    """The calling key's merchant account (any scope)."""
    return merchants.get_merchant(session, key.merchant_id)


@router.post(
    "/merchant/keys/current/rotate",
    status_code=201,
    tags=["merchant"],
    responses=problem_responses(*_BODY, *_KEY, 404, 422),
)
def rotate_own_api_key(body: ApiKeyRotate, key: MerchantKeyDep, session: SessionDep) -> ApiKeyCreatedOut:
    """Replace the calling key (any scope): the answer holds the new key, once; the calling key keeps
    working for `overlap_seconds`, then expires. A key rotates once (404 the second time). A wallet
    session has no key to rotate (403)."""
    if key.key_id is None:
        raise Forbidden("a wallet session has no API key to rotate")
    return api_keys.rotate_key(session, key.merchant_id, key.key_id, body.overlap_seconds)


@router.post(
    "/merchant/payout-address",
    tags=["merchant"],
    responses=problem_responses(*_BODY, *_KEY, 422, 503),
)
def prepare_own_payout_address(
    body: PayoutAddressCreate, key: PayoutReader, context: ContextDep, session: SessionDep
) -> PayoutTransactionOut:
    """The `setPayoutAddress` transaction for this merchant's wallet to sign (scope `payouts:read`)."""
    return merchants.prepare_payout_address(
        session, context.w3, context.deployment, key.merchant_id, body.payout_address
    )


@router.get("/merchant/skus", tags=["merchant"], responses=problem_responses(*_KEY))
def list_own_skus(key: MerchantKeyDep, session: SessionDep) -> list[SkuAdminOut]:
    """This merchant's SKUs, enabled or not, with their provider routing and limits (any scope)."""
    return skus.list_skus(session, key.merchant_id)


@router.get("/merchant/skus/{sku_id}", tags=["merchant"], responses=problem_responses(*_KEY, 404, 422))
def get_own_sku(sku_id: SkuId, key: MerchantKeyDep, session: SessionDep) -> SkuAdminOut:
    return skus.get_sku(session, key.merchant_id, sku_id)


@router.post(
    "/merchant/skus",
    status_code=201,
    tags=["merchant"],
    responses=problem_responses(*_BODY, *_KEY, 409, 422),
)
def create_sku(
    body: SkuCreate, key: CatalogueWriter, context: ContextDep, session: SessionDep
) -> SkuAdminOut:
    """Add a SKU (scope `catalogue:write`). Providers must be configured on this gateway and prices be in
    tokens the escrow accepts (422 naming the field); a taken id is 409."""
    return skus.create_sku(
        session,
        key.merchant_id,
        body,
        providers=set(context.adapters),
        tokens={t.symbol for t in context.deployment.tokens},
    )


@router.patch(
    "/merchant/skus/{sku_id}",
    tags=["merchant"],
    responses=problem_responses(*_BODY, *_KEY, 404, 422),
)
def update_sku(
    sku_id: SkuId, body: SkuUpdate, key: CatalogueWriter, context: ContextDep, session: SessionDep
) -> SkuAdminOut:
    """Change a SKU (scope `catalogue:write`); quotes already issued keep their signed terms."""
    return skus.update_sku(
        session,
        key.merchant_id,
        sku_id,
        body,
        providers=set(context.adapters),
        tokens={t.symbol for t in context.deployment.tokens},
    )
