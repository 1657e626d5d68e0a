"""Public routes a browser checkout needs besides the quote: a game-account check while the buyer
types, and one order's state as a server-sent event stream.

Both are ordinary public API (in /openapi.json, anonymous like the public order read): the pages use
nothing a third-party client could not.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse

from cardless.ledger.models import TERMINAL_STATES, OrderState
from gateway import services
from gateway.api.deps import ContextDep, QuoteLimitsDep, QuotesDep
from gateway.api.errors import problem_responses
from gateway.api.ratelimits import rate_limit_headers
from gateway.api.routes import operation_id
from gateway.page_schemas import AccountCheckCreate
from gateway.schemas import AccountCheck, OrderPublicOut

__all__ = ["POLL_SECONDS", "STREAM_SECONDS", "router"]

POLL_SECONDS = 0.25
"""How often a stream reads the order: state changes reach the page within this."""
STREAM_SECONDS = 300.0
"""A stream ends after this; the browser's EventSource reconnects by itself (``retry``), so a proxy
never holds a connection for hours and a closed tab frees its slot."""
_KEEPALIVE_SECONDS = 15.0

router = APIRouter(
    prefix="/v1", generate_unique_id_function=operation_id, responses=problem_responses(405, 500)
)


@router.post("/accounts/check", tags=["quotes"], responses=problem_responses(400, 404, 413, 422, 429, 503))
async def check_account(
    body: AccountCheckCreate, request: Request, response: Response, quotes: QuotesDep, limits: QuoteLimitsDep
) -> AccountCheck:
    """Check a game account for a SKU as a quote would (its shape, then the SKU's providers) without
    signing or storing anything, so a checkout can tell a typo before the buyer connects a wallet.
    The answer carries the nickname the provider knows the account by. 422 names `account` on a typo,
    404 `sku`; counted against the per-client quote limit (429)."""
    client = request.client.host if request.client else "unknown"
    allowances = await anyio.to_thread.run_sync(limits.hit_client, client)  # a shared counter: a write
    request.state.rate_limits = allowances
    response.headers.update(rate_limit_headers(allowances))
    return await quotes.check_account(sku_id=body.sku, account=body.account)


def _read(context: ContextDep, order_id: str) -> OrderPublicOut:
    with context.sessions() as session:
        return services.public_order_status(session, order_id)


@router.get(
    "/orders/{order_id}/events",
    tags=["orders"],
    response_class=StreamingResponse,
    responses={
        **problem_responses(404, 422),
        200: {
            "description": "`text/event-stream`: an `order` event (the public order, as GET "
            "/v1/orders/{order_id} answers anonymously) at once and at every change, until a final state",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
    },
)
async def stream_order_events(
    context: ContextDep, order_id: str = Path(pattern=r"^0x[0-9a-fA-F]{64}$")
) -> StreamingResponse:
    """One order's public state as server-sent events: `event: order` with the public order JSON, sent
    when anything in it changes; the stream ends after a final state (settled, refunded, reclaimed) or
    once the quote expired unpaid (a payment mined late shows in a new stream).
    404 when there is no such order. No credentials: it shows only what the chain shows."""
    first = await anyio.to_thread.run_sync(_read, context, order_id)  # 404 before any byte is sent

    async def events() -> AsyncIterator[str]:
        current = first
        sent = ""
        loop = asyncio.get_running_loop()
        started = last_write = loop.time()
        yield "retry: 1000\n\n"
        while True:
            payload = current.model_dump_json()
            if payload != sent:
                sent = payload
                last_write = loop.time()
                yield f"event: order\nid: {current.state.value}\ndata: {payload}\n\n"
                if current.state in TERMINAL_STATES or current.state is OrderState.EXPIRED:
                    return
            elif loop.time() - last_write > _KEEPALIVE_SECONDS:
                last_write = loop.time()
                yield ": keep-alive\n\n"
            if loop.time() - started > STREAM_SECONDS:
                yield f"event: timeout\ndata: {json.dumps({'reconnect': True})}\n\n"
                return
            await asyncio.sleep(POLL_SECONDS)
            current = await anyio.to_thread.run_sync(_read, context, order_id)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
