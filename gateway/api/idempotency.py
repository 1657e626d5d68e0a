"""``Idempotency-Key`` on every POST, as an ASGI middleware (inside the body-size middleware, which has
already read the body into one message).

The key is scoped to whoever sends it: the verified credential's owner (the operator, a merchant, a
buyer), or the client address for anonymous requests, so one caller can never replay another's answer.
A request whose credentials do not verify, or that carries none to a route that needs them, is passed
through untouched: it is answered 401, and a stranger cannot probe which keys are in use.

The fingerprint covers the method, path, query and raw body. The first answer is stored, errors
included, and replayed for 24 h with ``Idempotent-Replayed: true``; except 429 and 503, which say
"nothing was done, retry later", and are released so the retry runs. Stored bodies are sealed with a
subkey of the account key: they may hold a new API key or a buyer's game account.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import anyio.to_thread

from cardless.protocol.jsonlimits import ASGIApp, Message, Receive, Scope, Send, replay_body
from gateway.api.auth import credential_scope
from gateway.services import idempotency

__all__ = ["HEADER", "IdempotencyMiddleware", "idempotency_openapi"]

HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_NOT_KEPT = frozenset({429, 503})
_KEPT_HEADERS = ("content-type", "location", "retry-after", "www-authenticate")
_BEARER_ANSWERS = frozenset({"/v1/auth/siwe", "/v1/auth/siwe/merchant"})
"""Sign-ins answer with a new bearer token, which is kept only as its SHA-256: their answers are never
stored here, even sealed. A retry signs in again with a new nonce (the first one is spent either way)."""


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, *, credentialed: tuple[str, ...] = ()) -> None:
        self.app = app
        self.credentialed = credentialed
        """Path prefixes whose routes all need credentials."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get("idempotency-key")
        if key is None or scope["path"] in _BEARER_ANSWERS:
            await self.app(scope, receive, send)
            return
        if not _KEY.match(key):
            await _problem(
                send, 422, "header.Idempotency-Key", "must be 1 to 255 visible ASCII characters (a UUID)"
            )
            return
        context = scope["app"].state.context
        auth = headers.get("authorization")
        if auth is None:
            if scope["path"].startswith(self.credentialed):
                await self.app(scope, receive, send)
                return
            client = scope.get("client") or ("unknown", 0)
            owner = f"client:{client[0]}"[:80]
        else:
            verified = await anyio.to_thread.run_sync(credential_scope, context, auth)
            if verified is None:
                await self.app(scope, receive, send)
                return
            owner = verified if len(verified) <= 80 else hashlib.sha256(verified.encode()).hexdigest()
        message = await receive()
        body = message.get("body", b"")
        sessions = context.sessions
        query = scope.get("query_string", b"").decode("latin-1")
        print_ = idempotency.fingerprint("POST", scope["path"], query, body)
        cipher = context.quotes.cipher
        outcome = await anyio.to_thread.run_sync(idempotency.claim, sessions, cipher, owner, key, print_)
        if isinstance(outcome, idempotency.Mismatch):
            await _problem(
                send, 409, "header.Idempotency-Key", "was used with other parameters; use a new key"
            )
            return
        if isinstance(outcome, idempotency.InFlight):
            await _problem(
                send, 409, "header.Idempotency-Key", "a request with this key is still running; retry"
            )
            return
        if isinstance(outcome, idempotency.Unreadable):
            await _problem(
                send, 409, "header.Idempotency-Key", "its stored answer can no longer be read; use a new key"
            )
            return
        if isinstance(outcome, idempotency.Replay):
            await _send(
                send, outcome.status, {**outcome.headers, "idempotent-replayed": "true"}, outcome.body
            )
            return

        record = outcome.record_id
        status = 0
        kept: dict[str, str] = {}
        chunks: list[bytes] = []
        events: list[Message] = []

        async def capture(event: Message) -> None:
            # Held back until the answer is stored: a client that retries the moment it has the first
            # answer must find it stored, not "still running".
            nonlocal status
            if event["type"] == "http.response.start":
                status = int(event["status"])
                for name, value in event.get("headers", []):
                    lowered = name.decode("latin-1").lower()
                    if lowered in _KEPT_HEADERS:
                        kept[lowered] = value.decode("latin-1")
            elif event["type"] == "http.response.body":
                chunks.append(event.get("body", b""))
            events.append(event)

        try:
            await self.app(scope, replay_body(body, receive), capture)
        except BaseException:
            await anyio.to_thread.run_sync(idempotency.release, sessions, record)
            raise
        if status in _NOT_KEPT or status == 0:
            await anyio.to_thread.run_sync(idempotency.release, sessions, record)
        else:
            await anyio.to_thread.run_sync(
                idempotency.complete, sessions, cipher, record, status, kept, b"".join(chunks)
            )
        for event in events:
            await send(event)


async def _send(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items() if k != "content-length"]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _problem(send: Send, status: int, field: str, message: str) -> None:
    title = {409: "Conflict", 422: "Unprocessable Content"}[status]
    payload = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": f"{field}: {message}",
        "errors": [{"field": field, "message": message}],
    }
    await _send(send, status, {"content-type": "application/problem+json"}, json.dumps(payload).encode())


def idempotency_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the optional ``Idempotency-Key`` header, and the 409 it can cause, on every POST."""
    for path_item in schema.get("paths", {}).values():
        operation = path_item.get("post")
        if operation is None:
            continue
        operation.setdefault("parameters", []).append(
            {
                "name": HEADER,
                "in": "header",
                "required": False,
                "description": "Makes a retry safe: the first answer with this key is replayed for 24 h "
                "(`Idempotent-Replayed: true`); the same key with other parameters is 409",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
            }
        )
        responses = operation.setdefault("responses", {})
        if "409" not in responses:
            responses["409"] = {
                "description": "The request conflicts with the resource's state, or its Idempotency-Key "
                "was used with other parameters or is still in flight",
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
            }
        responses.setdefault(
            "422",
            {
                "description": "An input is invalid; `errors` names the field",
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
            },
        )
    return schema
