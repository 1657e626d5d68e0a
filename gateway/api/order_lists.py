"""Routes for order lists and Sign-In with Ethereum: buyers' sessions and merchants' dashboard sessions
(one nonce route for both).

``GET /v1/orders`` lists what the caller may see: the operator every order, a merchant key with
`orders:read` its own, a signed-in buyer its wallet's. Without credentials it is 401.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from cardless.ledger.models import OrderState
from gateway.api.auth import MerchantKeyDep, Principal, PrincipalDep, visibility_of
from gateway.api.deps import ContextDep, GatewayContext, SessionDep
from gateway.api.errors import problem_responses
from gateway.api.routes import operation_id
from gateway.merchant_schemas import (
    MerchantSessionOut,
    MerchantSignOutOut,
    OrderListOut,
    SiweLogin,
    SiweNonceOut,
    SiweSessionOut,
)
from gateway.services import Forbidden, InvalidField, ServiceUnavailable, merchant_sessions
from gateway.services import siwe as siwe_service
from gateway.services.order_lists import MAX_PAGE, OrderFilter, list_orders

__all__ = ["router"]

router = APIRouter(
    prefix="/v1", generate_unique_id_function=operation_id, responses=problem_responses(405, 500)
)

OrderId = Annotated[str, Query(pattern=r"^0x[0-9a-fA-F]{64}$")]
RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})?$"
"""An RFC 3339 date-time (the zone may be left out: UTC). Pydantic alone would also take unix seconds."""


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidField(f"query.{name}", "is not a valid date-time") from None


@router.get("/orders", tags=["orders"], responses=problem_responses(401, 403, 422, 429))
def list_order_page(
    principal: PrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")] = 20,
    starting_after: OrderId | None = None,
    state: OrderState | None = None,
    sku: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    buyer: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$")] = None,
    created_gte: Annotated[str | None, Query(pattern=RFC3339, description="Created at or after")] = None,
    created_lt: Annotated[str | None, Query(pattern=RFC3339, description="Created before")] = None,
) -> OrderListOut:
    """Orders, newest first, `limit` per page (1 to 100). For the next page pass the last order's id as
    `starting_after`; `has_more` says whether there is one. Filters: state, SKU, buyer, creation time."""
    visibility = visibility_of(principal)
    return list_orders(
        session,
        visibility,
        OrderFilter(
            state=state,
            sku=sku,
            buyer=buyer,
            created_gte=_time("created_gte", created_gte),
            created_lt=_time("created_lt", created_lt),
        ),
        limit=limit,
        starting_after=starting_after,
    )


def _sign_in_domain(context: GatewayContext, principal: Principal) -> str:
    """The EIP-4361 domain a sign-in must name: 503 when SIWE is not configured, 403 when the request
    carries other credentials."""
    if context.siwe_domain is None:
        raise ServiceUnavailable("Sign-In with Ethereum is not configured on this gateway")
    if not principal.anonymous:
        raise Forbidden("sign in without other credentials")
    return context.siwe_domain


@router.post("/auth/siwe/nonce", status_code=201, tags=["auth"], responses=problem_responses(503))
def create_siwe_nonce(context: ContextDep, session: SessionDep) -> SiweNonceOut:
    """A single-use nonce (10 minutes) and the domain and chain id the EIP-4361 message must name."""
    if context.siwe_domain is None:
        raise ServiceUnavailable("Sign-In with Ethereum is not configured on this gateway")
    return siwe_service.issue_nonce(session, domain=context.siwe_domain, chain_id=context.deployment.chain_id)


@router.post(
    "/auth/siwe",
    status_code=201,
    tags=["auth"],
    responses=problem_responses(400, 401, 403, 413, 422, 503),
    # Sent without credentials (any credentials are refused with 403): the empty requirement says so.
    openapi_extra={"security": [{}]},
)
def create_siwe_session(
    body: SiweLogin, principal: PrincipalDep, context: ContextDep, session: SessionDep
) -> SiweSessionOut:
    """Sign in with a wallet: the EIP-4361 message and its `personal_sign` signature. 422 names
    `message` when it is not an EIP-4361 message; 401 when it is one that does not sign in here and now
    (domain, chain, nonce unknown, used or expired, expiry, signature)."""
    domain = _sign_in_domain(context, principal)
    return siwe_service.sign_in(
        session,
        message=body.message,
        signature=body.signature,
        domain=domain,
        chain_id=context.deployment.chain_id,
    )


@router.post(
    "/auth/siwe/merchant",
    status_code=201,
    tags=["auth"],
    responses=problem_responses(400, 401, 403, 413, 422, 503),
    openapi_extra={"security": [{}]},
)
def create_merchant_session(
    body: SiweLogin, principal: PrincipalDep, context: ContextDep, session: SessionDep
) -> MerchantSessionOut:
    """Sign a merchant in to the dashboard with the wallet of its settlement address: an EIP-4361 message
    (nonce from `POST /v1/auth/siwe/nonce`) whose statement is exactly `Sign in to the Cardless merchant
    dashboard.`, and its `personal_sign` signature. The `cm_sess_` session acts for that merchant with the
    dashboard's scopes (`catalogue:write`, `orders:read`, `payouts:read`, `webhooks:write`) for 8 hours.
    422 and 401 as `POST /v1/auth/siwe`; 403 when the statement differs, or the address is no merchant's
    settlement address or its merchant is disabled."""
    domain = _sign_in_domain(context, principal)
    return merchant_sessions.sign_in_merchant(
        session,
        message=body.message,
        signature=body.signature,
        domain=domain,
        chain_id=context.deployment.chain_id,
    )


@router.delete("/auth/siwe/merchant", tags=["auth"], responses=problem_responses(401, 403, 429))
def delete_merchant_session(credential: MerchantKeyDep, session: SessionDep) -> MerchantSignOutOut:
    """Sign out: the calling wallet session stops working at once (401 afterwards). 403 for an API key,
    which the operator revokes instead."""
    return merchant_sessions.sign_out_merchant(session, credential)
