"""FastAPI application factory."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from cardless.protocol.jsonlimits import BoundedJsonMiddleware
from gateway.api.deps import GatewayContext
from gateway.api.errors import install_error_handlers, problem_openapi
from gateway.api.money import router as money_router
from gateway.api.operations import router as operations_router
from gateway.api.routes import router
from gateway.api.webhooks import router as webhooks_router
from gateway.services.operations import Metrics

__all__ = ["create_app"]


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
        context.sessions, w3=lambda: context.w3, adapters=lambda: context.adapters or {}
    )
    if context.quote_limits is not None:
        context.quote_limits.on_refused = metrics.count_rate_limited
    # Before any route reads the body: a deeply nested body would otherwise crash the process
    # (see cardless.protocol.jsonlimits).
    app.add_middleware(BoundedJsonMiddleware)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(webhooks_router)
    app.include_router(money_router)
    app.include_router(operations_router)

    def openapi() -> dict[str, Any]:
        # Error bodies are problem+json; FastAPI would list a `responses=` model as application/json.
        if app.openapi_schema is None:
            app.openapi_schema = problem_openapi(
                get_openapi(
                    title=app.title, version=app.version, description=app.description, routes=app.routes
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
