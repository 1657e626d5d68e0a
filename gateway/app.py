"""FastAPI application factory."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from cardless.protocol.jsonlimits import BoundedJsonMiddleware
from gateway.api import merchants, order_lists
from gateway.api.deps import GatewayContext
from gateway.api.errors import install_error_handlers, problem_openapi
from gateway.api.idempotency import IdempotencyMiddleware, idempotency_openapi
from gateway.api.routes import router

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
    # Inside the body-size middleware (added after it, so it runs second): it gets the body in one piece.
    app.add_middleware(IdempotencyMiddleware, credentialed=("/v1/merchants", "/v1/merchant"))
    # Before any route reads the body: a deeply nested body would otherwise crash the process
    # (see cardless.protocol.jsonlimits).
    app.add_middleware(BoundedJsonMiddleware)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(order_lists.router)
    app.include_router(merchants.router)

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
