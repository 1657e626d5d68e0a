"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.services.quotes import QuoteError, ServiceUnavailable

__all__ = ["install_error_handlers", "problem"]

PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(e), "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Invalid request", detail, errors=errors)

    @app.exception_handler(QuoteError)
    async def _quote(_: Request, exc: QuoteError) -> JSONResponse:
        title = "Not found" if exc.status == 404 else "Invalid request"
        return problem(exc.status, title, str(exc), errors=[{"field": exc.field, "message": exc.message}])

    @app.exception_handler(ServiceUnavailable)
    async def _unavailable(_: Request, exc: ServiceUnavailable) -> JSONResponse:
        response = problem(503, "Provider unavailable", str(exc))
        response.headers["Retry-After"] = "30"
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # RFC 9457: the title is the same for every occurrence of a problem type; the detail varies.
        try:
            title = HTTPStatus(exc.status_code).phrase
        except ValueError:
            title = "Error"
        return problem(exc.status_code, title, str(exc.detail))


def _field(error: Mapping[str, Any]) -> str:
    """The input at fault: ``sku``, ``path.order_id``; ``body`` when the body itself is not valid JSON
    (pydantic then locates the error by character offset, which names no field)."""
    if error.get("type") == "json_invalid":
        return "body"
    return ".".join(str(p) for p in error["loc"] if p != "body") or "body"
