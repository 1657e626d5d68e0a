"""The one place errors become HTTP: RFC 9457 problem details (``application/problem+json``).

Services raise :class:`gateway.services.GatewayError` subclasses; :data:`STATUS` maps each to a status
code, and every handler here renders a :class:`gateway.schemas.Problem`. Routes declare the statuses
they can answer with :func:`problem_responses`, so the OpenAPI document describes every error body.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from gateway.api.ratelimits import RATE_LIMIT_HEADERS, rate_limit_headers
from gateway.schemas import FieldError, Problem
from gateway.services import (
    Allowance,
    CallbackRejected,
    Conflict,
    Forbidden,
    GatewayError,
    InvalidField,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)

__all__ = [
    "MAX_FIELD_ERRORS",
    "PROBLEM",
    "STATUS",
    "domain_problem",
    "install_error_handlers",
    "problem",
    "problem_openapi",
    "problem_responses",
    "status_of",
]

PROBLEM = "application/problem+json"
MAX_FIELD_ERRORS = 20
"""A 422 names at most this many fields (and says how many more there were)."""

STATUS: Mapping[type[GatewayError], int] = {
    NotFound: 404,
    InvalidField: 422,
    CallbackRejected: 401,
    Unauthorized: 401,
    Forbidden: 403,
    Conflict: 409,
    RateLimited: 429,
    ServiceUnavailable: 503,
}
"""Domain error -> HTTP status. A subclass takes its nearest ancestor's status; an unlisted one is 500."""

_WHY: Mapping[int, str] = {
    400: "The body is not acceptable JSON (nested too deep)",
    401: "The credentials do not verify (a provider callback's signature or timestamp, an API key)",
    403: "The credentials verify but do not allow this request (the API key lacks the scope)",
    404: "The named resource does not exist",
    409: "The request conflicts with the resource's state, or its Idempotency-Key was used with other "
    "parameters or is still in flight",
    405: "The path does not take this method; `Allow` lists the ones it takes",
    413: "The body is too large",
    422: "An input is invalid; `errors` names the field",
    429: "Too many requests from this client address, for this buyer wallet or with this API key; "
    "see Retry-After",
    500: "An unexpected error; nothing about it is disclosed",
    503: "No provider can take the order now; see Retry-After",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer with ``statuses``: each a :class:`Problem`."""
    return {status: _response(status) for status in statuses}


def _response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {"model": Problem, "description": _WHY.get(status, HTTPStatus(status).phrase)}
    headers = dict(_HEADERS.get(status, {}))
    if headers:
        response["headers"] = {
            name: {"description": why, "schema": {"type": "integer" if name in _INTEGER else "string"}}
            for name, why in headers.items()
        }
    return response


_RETRY_AFTER = {"Retry-After": "Seconds to wait before trying again"}
_HEADERS: Mapping[int, Mapping[str, str]] = {
    405: {"Allow": "The methods this path takes"},
    429: {**_RETRY_AFTER, **RATE_LIMIT_HEADERS},
    503: _RETRY_AFTER,
}
_INTEGER = frozenset({"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"})


def problem(status: int, detail: str, *, errors: list[FieldError] | None = None) -> JSONResponse:
    """A problem+json response; ``type`` is ``about:blank`` so ``title`` is the status phrase (RFC 9457
    section 4.2.1), as the body-size middleware of cardless.protocol.jsonlimits already answers."""
    body = Problem(title=_phrase(status), status=status, detail=detail, errors=errors)
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=status, media_type=PROBLEM
    )


def domain_problem(exc: GatewayError, allowances: list[Allowance] | None = None) -> JSONResponse:
    """The problem answering a service's error, with its headers; ``allowances``: the rate limits the
    request was counted against before the service refused it (the client still learns them)."""
    status = status_of(exc)
    errors = None if exc.field is None else [FieldError(field=exc.field, message=exc.message)]
    response = problem(status, str(exc), errors=errors)
    if isinstance(exc, ServiceUnavailable | RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="cardless"'
    if isinstance(exc, RateLimited):
        response.headers.update(rate_limit_headers(exc.allowances))
    elif allowances:
        response.headers.update(rate_limit_headers(allowances))
    return response


def status_of(exc: GatewayError) -> int:
    """The status of ``exc``: its nearest mapped ancestor's, else 500."""
    return next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), 500)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # A body with 60,000 unknown keys is 60,000 errors: name the first few, count the rest, so the
        # answer stays small whatever was sent.
        found = exc.errors()
        errors = [FieldError(field=_field(e), message=e["msg"]) for e in found[:MAX_FIELD_ERRORS]]
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        if len(found) > MAX_FIELD_ERRORS:
            detail += f"; and {len(found) - MAX_FIELD_ERRORS} more errors"
        return problem(422, detail, errors=errors)

    @app.exception_handler(GatewayError)
    async def _domain(request: Request, exc: GatewayError) -> JSONResponse:
        return domain_problem(exc, getattr(request.state, "rate_limits", None))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Only the framework raises these now (no such route, method not allowed). Their headers are
        # part of the answer: a 405 names the methods the path does take in `Allow` (RFC 9110 15.5.6).
        response = problem(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route whose path matched; a path served by
            # several routes (GET and POST /v1/merchants) takes all of theirs.
            response.headers["Allow"] = ", ".join(_allowed(request))
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the exception after this answer; the client learns nothing about it.
        return problem(500, "internal error")


def problem_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Move every 4xx/5xx body in ``schema`` from ``application/json`` (where FastAPI puts a
    ``responses=`` model) to ``application/problem+json``, the type the handlers answer with."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for code, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if code[:1] in ("4", "5") and "application/json" in content:
                    content[PROBLEM] = content.pop("application/json")
    return schema


def _allowed(request: Request) -> list[str]:
    routes = request.app.router.routes
    return [
        method
        for method in ("DELETE", "GET", "PATCH", "POST", "PUT")
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _field(error: Mapping[str, Any]) -> str:
    """The input at fault: ``sku``, ``path.order_id``; ``body`` when the body itself is not valid JSON
    (pydantic then locates the error by character offset, which names no field)."""
    if error.get("type") == "json_invalid":
        return "body"
    name = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
    # An unknown key is named as sent: never echo more than a field name's worth of it.
    return name if len(name) <= 80 else name[:80] + "…"
