"""Everything a route may depend on, as ``Annotated`` aliases (full-stack-fastapi-template style).

The app factory stores one ``GatewayContext`` on ``app.state``; tests build their own context, so
there are no module-level engines or settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from adapters import ProviderAdapter
from cardless.protocol.deployment import Deployment
from gateway.catalogue import Catalogue
from gateway.services.quotes import QuoteService
from gateway.services.ratelimits import QuoteLimits

__all__ = ["CatalogueDep", "ContextDep", "GatewayContext", "QuoteLimitsDep", "QuotesDep", "SessionDep"]


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


def get_context(request: Request) -> GatewayContext:
    context: GatewayContext = request.app.state.context
    return context


ContextDep = Annotated[GatewayContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    with context.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_catalogue(context: ContextDep) -> Catalogue:
    return context.catalogue


CatalogueDep = Annotated[Catalogue, Depends(get_catalogue)]


def get_quotes(context: ContextDep) -> QuoteService:
    return context.quotes


QuotesDep = Annotated[QuoteService, Depends(get_quotes)]


def get_quote_limits(context: ContextDep) -> QuoteLimits:
    return context.quote_limits


QuoteLimitsDep = Annotated[QuoteLimits, Depends(get_quote_limits)]
