"""``GET /v1/orders/{order_id}`` without credentials, answered in front of the framework.

The public order status is the read a flash sale hammers: every buyer's page polls it. Through FastAPI
it cost about 2.3 ms of CPU per request (docs/benchmarks.md): route matching over every router, three
dependencies (the context, a session, the principal) each resolved on a worker thread, the handler on
another, a full ORM row, response-model validation. This ASGI middleware answers exactly that request
— ``GET``, the path matches the route's pattern, no query string, no ``Authorization`` and no
``Cookie`` header (so no credential of any kind is ignored) — with one indexed read of the public
columns (:func:`gateway.services.orders.find_public_order_status`) and the same JSON bytes and headers
the route sends. Everything else, and an order that does not exist (the framework's 404 problem), goes
on to the application unchanged; tests compare the two answers byte for byte.

On SQLite the read runs on the event loop (a local file read of one row by primary key: tens of
microseconds, less than the hop to a worker thread costs); on a server database it runs on a worker
thread, so a slow network round trip never stalls the loop.
"""

from __future__ import annotations

import re

import anyio.to_thread
from sqlalchemy import Engine

from cardless.protocol.jsonlimits import ASGIApp, Receive, Scope, Send
from gateway.services.orders import find_public_order_status

__all__ = ["PublicOrderStatus"]

_PATH = re.compile(r"^/v1/orders/(0x[0-9a-fA-F]{64})$")
_CREDENTIALS = frozenset({b"authorization", b"cookie"})


class PublicOrderStatus:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = (
            _PATH.match(scope["path"])
            if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("query_string")
            else None
        )
        engine = scope["app"].state.context.sessions.kw.get("bind") if found is not None else None
        # Not this request, credentials of any kind, or sessions without one engine: the route answers.
        if (
            found is None
            or not isinstance(engine, Engine)
            or any(name.lower() in _CREDENTIALS for name, _ in scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        order_id = found.group(1)
        if engine.dialect.name == "sqlite":
            body = _read(engine, order_id)
        else:
            body = await anyio.to_thread.run_sync(_read, engine, order_id)
        if body is None:
            await self.app(scope, receive, send)  # the route's own 404 problem
            return
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _read(engine: Engine, order_id: str) -> bytes | None:
    with engine.connect() as connection:
        found = find_public_order_status(connection, order_id)
    return None if found is None else found.model_dump_json().encode()
