"""JSON from the outside, bounded before it is parsed.

py-evm and py_ecc raise the interpreter's recursion limit (py_ecc to 100,000) when they are imported,
because the EVM recurses once per call frame. The standard ``json`` parser recurses once per nesting
level and trusts that limit, so a 200 KB body nested 100,000 levels deep overflows the C stack and
kills the process with a segmentation fault instead of raising ``RecursionError``. Every server that
parses JSON from a client or a provider therefore measures the nesting depth first, with a scan that
does not recurse, and refuses anything deeper than :data:`MAX_JSON_DEPTH`.

:class:`BoundedJsonMiddleware` applies the same rule (and a body-size cap) to an ASGI application
before any framework code reads the body. It depends on no web framework.

:func:`restore_recursion_limit` then lowers the limit again, after those imports, to what py-evm needs:
a recursion the depth checks missed raises ``RecursionError`` long before the C stack is at risk.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from itertools import accumulate
from typing import Any, Final

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "RECURSION_LIMIT",
    "BoundedJsonMiddleware",
    "JsonLimitError",
    "check_json_depth",
    "loads_bounded",
    "replay_body",
    "restore_recursion_limit",
]

MAX_JSON_DEPTH: Final = 64
"""Deeper than any document Cardless or a provider legitimately exchanges (JSON-RPC batches are 4)."""

MAX_BODY_BYTES: Final = 1024 * 1024

RECURSION_LIMIT: Final = 1024 * 12
"""py-evm's own need (``eth.EVM_RECURSION_LIMIT``): 1,024 nested EVM call frames. py_ecc asks for
100,000 at import, for nothing Cardless uses."""


def restore_recursion_limit() -> int:
    """Lower the interpreter's recursion limit to :data:`RECURSION_LIMIT` if an import raised it above;
    returns the limit in force. Call it once the process has imported what it runs (the CLI does)."""
    if sys.getrecursionlimit() > RECURSION_LIMIT:
        sys.setrecursionlimit(RECURSION_LIMIT)
    return sys.getrecursionlimit()


# A JSON string (with escapes), then every character that is not a bracket. What remains after the
# strings are removed is the bracket skeleton of the document.
_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET: Final = re.compile(rb"[^\[\]{}]+")
_STEP: Final = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class JsonLimitError(ValueError):
    """The document is larger or deeper than the limit; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_json_depth(body: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise :class:`JsonLimitError` when ``body`` nests arrays/objects deeper than ``max_depth``.

    Malformed input is not judged here (the parser reports it); an unterminated string only makes the
    skeleton longer, never shorter, so the depth is never under-counted.
    """
    raw = body.encode() if isinstance(body, str) else body
    skeleton = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    if not skeleton:
        return
    deepest = max(accumulate(_STEP[c] for c in skeleton))
    if deepest > max_depth:
        raise JsonLimitError(f"JSON nested {deepest} levels deep; the limit is {max_depth}")


def loads_bounded(body: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` after :func:`check_json_depth`; raises ``JsonLimitError`` or ``ValueError``."""
    check_json_depth(body, max_depth)
    return json.loads(body)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BoundedJsonMiddleware:
    """Reads each HTTP request body once, refuses it when it is too large (413) or nested too deep
    (400) with a problem+json reply, and replays it to the application otherwise."""

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_JSON_DEPTH
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _problem(send, 413, f"request body is larger than {self.max_body_bytes} bytes")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body:
            try:
                check_json_depth(body, self.max_depth)
            except JsonLimitError as exc:
                await _problem(send, exc.status, str(exc))
                return
        await self.app(scope, replay_body(body, receive), send)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` (already read whole from ``receive``) as one message, then
    hands on to ``receive`` (a disconnect, for an application that waits for one)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _problem(send: Send, status: int, detail: str) -> None:
    title = "Content Too Large" if status == 413 else "Bad Request"
    payload = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
