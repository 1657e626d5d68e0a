"""Everything a route may depend on, as ``Annotated`` aliases (full-stack-fastapi-template style).

The app factory stores one ``GatewayContext`` on ``app.state``; tests build their own context, so
there are no module-level engines or settings.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from adapters import ProviderAdapter
from cardless.protocol.deployment import Deployment
from gateway.catalogue import Catalogue
from gateway.services import Unauthorized
from gateway.services.api_keys import KeyQuota
from gateway.services.quotes import QuoteService
from gateway.services.ratelimits import QuoteLimits
from gateway.services.webhooks import WebhookEndpoints

__all__ = [
    "CatalogueDep",
    "ContextDep",
    "GatewayContext",
    "OperatorDep",
    "QuoteLimitsDep",
    "QuotesDep",
    "SessionDep",
]


@dataclasses.dataclass
class GatewayContext:
    w3: Web3
    sessions: sessionmaker[Session]
    catalogue: Catalogue
    deployment: Deployment
    adapters: Mapping[str, ProviderAdapter]
    quotes: QuoteService
    quote_limits: QuoteLimits
    simulator_url: str | None = None
    """Set when the embedded simulated provider runs (the demo reads its ledger)."""
    operator_key: str | None = None
    """The bearer token of operator reads (the whole order); None turns them off."""
    key_quota: KeyQuota = dataclasses.field(default_factory=lambda: KeyQuota(default="600/minute"))
    """Requests per merchant API key (each key's own quota, or this default)."""
    siwe_domain: str | None = None
    """The domain buyers' Sign-In with Ethereum messages must name; None turns sign-in off."""
    public_rpc_url: str | None = None
    """The JSON-RPC URL /v1/health offers wallets; None names none."""
    processes: Callable[[], Mapping[str, str]] | None = None
    """The embedded system's child processes and their states (``cardless run``), for /v1/health."""
    webhook_endpoints: WebhookEndpoints | None = None
    """Merchants' webhook endpoints (gateway.api.webhooks); None answers those routes 404."""
    confirmations: int = 0
    """The oracle's confirmation depth: /readyz counts its lag beyond it."""
    metrics_collectors: tuple[Any, ...] = ()
    """More Prometheus collectors for /metrics (the wiring's provider latency and errors)."""


# The plain lookups are ``async def``: FastAPI runs a ``def`` dependency on a worker thread, a hop
# that cost more than the lookup itself on every request.
async def get_context(request: Request) -> GatewayContext:
    context: GatewayContext = request.app.state.context
    return context


ContextDep = Annotated[GatewayContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    with context.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_catalogue(context: ContextDep) -> Catalogue:
    return context.catalogue


CatalogueDep = Annotated[Catalogue, Depends(get_catalogue)]


async def get_quotes(context: ContextDep) -> QuoteService:
    return context.quotes


QuotesDep = Annotated[QuoteService, Depends(get_quotes)]


async def get_quote_limits(context: ContextDep) -> QuoteLimits:
    return context.quote_limits


QuoteLimitsDep = Annotated[QuoteLimits, Depends(get_quote_limits)]


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="operatorKey",
    description="The operator key (CARDLESS_OPERATOR_KEY). Optional: without it an order read "
    "returns the public view; a wrong one is refused with 401.",
)


def get_operator(
    request: Request,
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> bool:
    """True when the request carries the operator key, False when it carries no credentials at all.

    Credentials that do not verify (another scheme, a wrong key, any key while operator reads are off)
    are refused rather than read as "anonymous", so a client with a mistyped key finds out.
    """
    if "authorization" not in request.headers:
        return False
    expected = context.operator_key
    if (
        credentials is None
        or expected is None
        or not hmac.compare_digest(credentials.credentials.encode(), expected.encode())
    ):
        raise Unauthorized("the Authorization header does not hold a valid operator key")
    return True


OperatorDep = Annotated[bool, Depends(get_operator)]
