"""Which order the code is working on, for the logs: a context variable every log line can read.

The oracle sets it around each order's provider step and each chain event it applies, the delivery
job around each webhook, the gateway around each request naming an order; asyncio tasks and threads
started inside inherit it. ``cardless.cli.logs.JsonFormatter`` writes it as ``order_id`` on every line
(null when the line concerns no single order).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["ORDER_ID", "order_scope"]

ORDER_ID: ContextVar[str | None] = ContextVar("cardless_order_id", default=None)


@contextlib.contextmanager
def order_scope(order_id: str | None) -> Iterator[None]:
    token = ORDER_ID.set(order_id)
    try:
        yield
    finally:
        ORDER_ID.reset(token)
