"""``POST /v1/quotes`` answered in front of the framework.

A quote is the write a flash sale hammers, and FastAPI's machinery around the route (route matching
over every router, the dependencies, the body read through a ``Request``, the response built and then
copied into a second one for the headers) was about a fifth of a quote's CPU (docs/benchmarks.md).
This ASGI middleware answers the request the route answers — ``POST /v1/quotes``, no query string, a
JSON body (no ``Content-Type``, or ``application/json``) that is a valid
:class:`gateway.schemas.QuoteCreate` — by the same steps in the same order: the rate limits counted
(:meth:`gateway.services.ratelimits.QuoteLimits.count`), then
:meth:`gateway.services.quotes.QuoteService.create`, and the same answer: 201 with the quote's JSON
bytes as FastAPI serialises the route's response model and the RateLimit headers, or the problem
:func:`gateway.api.errors.domain_problem` renders for a refusal, with the same headers.

Anything else goes on to the application unchanged, before anything is counted or written: a body
that is not JSON or does not validate (so the 422 naming the field at fault is the framework's own),
another method, a query string. It runs inside the body-size and depth limits, the idempotency
middleware (a retried quote is replayed from there) and the 500 problem handler. The route stays
registered, so the OpenAPI document is unchanged; tests compare the two answers.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from cardless.protocol.jsonlimits import ASGIApp, Receive, Scope, Send, replay_body
from gateway.api.errors import domain_problem
from gateway.api.ratelimits import rate_limit_headers
from gateway.schemas import QuoteCreate, QuoteOut
from gateway.services import GatewayError

__all__ = ["QuoteCreation"]

_PATH = "/v1/quotes"
_SERIALISE = QuoteOut.__pydantic_serializer__
"""The response model's serializer, as FastAPI's ``dump_json`` path calls it (``by_alias=True``)."""


class QuoteCreation:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] != _PATH
            or scope.get("query_string")
        ):
            await self.app(scope, receive, send)
            return
        body, receive = await _read(receive)
        request = _quote_request(scope, body)
        if request is None:  # the framework's own answer: a 422 naming the field, a 400 about the body
            await self.app(scope, receive, send)
            return
        context = scope["app"].state.context
        client = scope["client"][0] if scope.get("client") else "unknown"
        user_agent = ""
        for name, value in scope["headers"]:
            if name.lower() == b"user-agent":
                user_agent = value.decode("latin-1")
                break
        allowances = None
        try:
            allowances = await context.quote_limits.count(client=client, buyer=request.buyer)
            quote = await context.quotes.create(
                sku_id=request.sku,
                account=request.account,
                token_symbol=request.token,
                buyer=request.buyer,
                client=client,
                user_agent=user_agent,
            )
        except GatewayError as exc:
            await domain_problem(exc, allowances)(scope, receive, send)
            return
        content = _SERIALISE.to_json(quote, by_alias=True)
        headers = [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")]
        headers += [(k.lower().encode(), v.encode()) for k, v in rate_limit_headers(allowances).items()]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": content})


async def _read(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body, and a ``receive`` that gives it again (the body-size middleware has already read
    it into one message; this still reads every message it is given)."""
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break  # a disconnect: the application below sees the body so far, then the disconnect
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    return body, replay_body(body, receive)


def _quote_request(scope: Scope, body: bytes) -> QuoteCreate | None:
    """The body as the route would take it, or None when the route would refuse it (or read it as
    something other than JSON)."""
    if not body:
        return None
    for name, value in scope["headers"]:
        if name.lower() == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            if media != b"application/json":
                return None
            break
    try:
        data: Any = json.loads(body)
        return QuoteCreate.model_validate(data)
    except (ValueError, ValidationError):  # json's decode errors are ValueErrors
        return None
