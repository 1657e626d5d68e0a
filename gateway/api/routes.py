"""Routes of the gateway: catalogue, quotes, order status, provider callbacks, health.

Each route takes ``deps`` aliases, calls one service and returns its schema; errors are the services'
:class:`gateway.services.GatewayError`, turned into problem+json by :mod:`gateway.api.errors`. Every
route declares its response model and the problem statuses it can answer with, so ``/openapi.json``
is the whole contract; operation ids are the handlers' names in camelCase (``createQuote``).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Path, Request, Response
from fastapi.routing import APIRoute

from gateway import services
from gateway.api.auth import PrincipalDep, visibility_of
from gateway.api.deps import ContextDep, QuoteLimitsDep, QuotesDep, SessionDep
from gateway.api.errors import problem_responses
from gateway.api.ratelimits import rate_limit_headers
from gateway.schemas import (
    CallbackAck,
    CatalogueOut,
    HealthOut,
    OrderOut,
    OrderPublicOut,
    QuoteCreate,
    QuoteOut,
)
from gateway.services.order_lists import visible_order_status

__all__ = ["operation_id", "router"]


def operation_id(route: APIRoute) -> str:
    """``create_quote`` -> ``createQuote``: stable (the handler's name) and readable in generated clients."""
    head, *rest = route.name.split("_")
    return head + "".join(word.capitalize() for word in rest)


# Every path can be asked with a method it does not take (405) and can fail unexpectedly (500).
router = APIRouter(
    prefix="/v1", generate_unique_id_function=operation_id, responses=problem_responses(405, 500)
)

# The body-size middleware (cardless.protocol.jsonlimits) answers these for any request with a body.
_BODY = (400, 413)


@router.get("/catalogue", tags=["catalogue"])
def get_catalogue(context: ContextDep) -> CatalogueOut:
    """Active merchants and the SKUs on sale, with their prices per token accepted by this escrow."""
    # Cached with the quotes' SKU terms: emptied by any catalogue edit in this process, else 1 s old at most.
    return context.quotes.catalogue.describe(context.sessions, context.deployment)


@router.post(
    "/quotes",
    status_code=201,
    tags=["quotes"],
    responses={
        **problem_responses(*_BODY, 404, 422, 429, 503),
        # An OpenAPI link: generated clients and fuzzers follow a quote to its order.
        201: {
            "description": "The signed quote",
            "links": {
                "GetOrder": {
                    "operationId": "getOrder",
                    "parameters": {"order_id": "$response.body#/order_id"},
                    "description": "The order this quote created",
                }
            },
        },
    },
)
async def create_quote(
    body: QuoteCreate, request: Request, response: Response, quotes: QuotesDep, limits: QuoteLimitsDep
) -> QuoteOut:
    """Validate the game account with a provider, then sign an order the buyer can pay on chain.

    404 names ``sku`` when it is unknown; 422 names the field at fault; 429 (with Retry-After and
    RateLimit headers, also sent on success) when this client address or this buyer wallet has asked
    too often; 503 (with Retry-After) when no provider can take the order. A refused quote writes
    nothing."""
    # The peer's address: behind a proxy every client would share the proxy's (forwarded-for headers
    # are not trusted, since any client can write them).
    client = request.client.host if request.client else "unknown"
    # The counters are rows every gateway process shares: a write transaction, on the loop only when it
    # needs no wait (gateway.services.ratelimits).
    allowances = await limits.count(client=client, buyer=body.buyer)
    request.state.rate_limits = allowances  # for the error handlers, should the quote be refused
    response.headers.update(rate_limit_headers(allowances))
    return await quotes.create(
        sku_id=body.sku,
        account=body.account,
        token_symbol=body.token,
        buyer=body.buyer,
        client=client,
        user_agent=request.headers.get("user-agent", ""),
    )


@router.get(
    "/orders/{order_id}",
    tags=["orders"],
    responses=problem_responses(401, 403, 404, 422, 429),
    # Credentials are optional: FastAPI lists the bearer requirement, and this adds the empty one
    # (OpenAPI's "or no credentials"), which is the public view.
    openapi_extra={"security": [{}]},
)
def get_order(
    session: SessionDep, principal: PrincipalDep, order_id: str = Path(pattern=r"^0x[0-9a-fA-F]{64}$")
) -> OrderOut | OrderPublicOut:
    """One order. Without credentials, only what the chain already shows (state, transaction hashes,
    proof, receipt hash). The whole order (buyer, provider reference, receipt, timeline, last error) with
    the operator key, a merchant API key with `orders:read` (its own orders only) or the buyer's session
    (its own orders only); another party's order is 404, as if it did not exist."""
    if principal.anonymous:
        return services.public_order_status(session, order_id)
    return visible_order_status(session, order_id, visibility_of(principal))


@router.post(
    "/providers/{provider}/callback",
    tags=["providers"],
    responses=problem_responses(*_BODY, 401, 404, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The provider's own callback body, verified byte for byte against its "
            "signature headers (see the provider file)",
            "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
        }
    },
)
async def receive_provider_callback(
    provider: str, request: Request, context: ContextDep, session: SessionDep
) -> CallbackAck:
    """A provider's signed status callback. Only a hint: the oracle re-queries the provider by our key,
    so a forged or replayed callback can at most cause one extra query. Forged ones are refused (401)."""
    raw = await request.body()
    return await services.accept_callback(
        session, context.adapters, provider, raw, dict(request.headers), time.time()
    )


@router.get("/health", tags=["health"])
def get_health(context: ContextDep, session: SessionDep) -> HealthOut:
    """Whether the chain and the database answer, and the deployment a wallet pays into."""
    return services.check_health(
        session,
        context.w3,
        context.deployment,
        context.simulator_url,
        context.public_rpc_url,
        processes=context.processes() if context.processes is not None else None,
    )
