"""FastAPI application factory."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Receive, Scope, Send

from cardless.ledger.logcontext import order_scope
from cardless.protocol.jsonlimits import BoundedJsonMiddleware
from gateway.api import analytics, audit, merchants, money, order_lists, reviews, webhooks
from gateway.api.deps import GatewayContext
from gateway.api.errors import install_error_handlers, problem_openapi
from gateway.api.idempotency import IdempotencyMiddleware, idempotency_openapi
from gateway.api.operations import router as operations_router
from gateway.api.order_status import PublicOrderStatus
from gateway.api.pages import router as pages_router
from gateway.api.quote_creation import QuoteCreation
from gateway.api.routes import router
from gateway.services.operations import Metrics

__all__ = ["create_app"]

_ORDER_PATH = re.compile(r"^/v1/orders/(0x[0-9a-fA-F]{64})$")


class _OrderLogContext:
    """Requests that name an order log with its id (``cardless.ledger.logcontext``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _ORDER_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        with order_scope(found.group(1).lower()):
            await self.app(scope, receive, send)


def create_app(context: GatewayContext) -> FastAPI:
    app = FastAPI(
        title="Cardless gateway",
        version="0.1.0",
        description=(
            "Quotes, order status and catalogue for direct top-up orders settled through an on-chain escrow."
        ),
    )
    app.state.context = context
    app.state.metrics = metrics = Metrics(
        context.sessions,
        w3=lambda: context.w3,
        adapters=lambda: context.adapters or {},
        extra=context.metrics_collectors,
    )
    if context.quote_limits is not None:
        context.quote_limits.on_refused = metrics.count_rate_limited
    # Innermost: the anonymous order-status read, answered without the framework (see its module); it
    # still runs inside the body limit, the order's log context and the 500 problem handler.
    app.add_middleware(PublicOrderStatus)
    # Quote creation, likewise (see gateway.api.quote_creation): inside the idempotency middleware, so a
    # retried quote is still replayed.
    app.add_middleware(QuoteCreation)
    # Inside the body-size middleware (added after it, so it runs second): it gets the body in one piece.
    app.add_middleware(IdempotencyMiddleware, credentialed=("/v1/merchants", "/v1/merchant", "/v1/risk"))
    # Before any route reads the body: a deeply nested body would otherwise crash the process
    # (see cardless.protocol.jsonlimits).
    app.add_middleware(BoundedJsonMiddleware)
    app.add_middleware(_OrderLogContext)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(order_lists.router)
    app.include_router(merchants.router)
    app.include_router(reviews.router)
    app.include_router(analytics.router)
    for module in (webhooks, money):
        app.include_router(module.admin_router)
        app.include_router(module.own_router)
    app.include_router(operations_router)
    app.include_router(pages_router)  # the pages + their public routes (issue 13)
    app.include_router(audit.router)

    def openapi() -> dict[str, Any]:
        # Error bodies are problem+json; FastAPI would list a `responses=` model as application/json.
        if app.openapi_schema is None:
            app.openapi_schema = idempotency_openapi(
                problem_openapi(
                    get_openapi(
                        title=app.title, version=app.version, description=app.description, routes=app.routes
                    )
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
