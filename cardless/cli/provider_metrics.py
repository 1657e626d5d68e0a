"""Provider latency and errors for Prometheus, measured on every adapter's HTTP client.

``build_adapters`` gives each provider's ``httpx.AsyncClient`` a :class:`TimedTransport`, which times
every request and labels it with the provider and the outcome (``2xx``, ``4xx``, ``5xx`` or the
exception's name: ``ConnectTimeout``, ``ReadError``, ...). The gateway (quote validation) adds these to
its ``/metrics``; the oracle (top-ups and queries) serves them on ``CARDLESS_ORACLE_METRICS_PORT``
when that is set. One set per process: a process is one set of provider calls.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram

from adapters.transport import RawExchange, RawReply, raw_exchange

__all__ = ["PROVIDER_CALLS", "PROVIDER_ERRORS", "PROVIDER_REGISTRY", "TimedTransport"]

PROVIDER_REGISTRY = CollectorRegistry(auto_describe=True)
PROVIDER_CALLS = Histogram(
    "cardless_provider_request_seconds",
    "Provider HTTP requests by provider and outcome (status class or exception), in seconds",
    ["provider", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=PROVIDER_REGISTRY,
)
PROVIDER_ERRORS = Counter(
    "cardless_provider_errors",
    "Provider HTTP requests that failed: no answer, or a 5xx",
    ["provider", "outcome"],
    registry=PROVIDER_REGISTRY,
)

_MAX_OUTCOMES = 64


class TimedTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        provider: str,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        limits: httpx.Limits | None = None,
    ) -> None:
        self.provider = provider
        self.inner = inner or httpx.AsyncHTTPTransport(limits=limits or httpx.Limits())
        # outcome -> this provider's histogram child: ``labels()`` takes a lock and builds a key on every
        # call, once per provider call; the outcomes are few (a status class, an exception's name)
        self._calls: dict[str, Any] = {}

    def _timed(self, outcome: str) -> Any:
        found = self._calls.get(outcome)
        if found is None:
            if len(self._calls) >= _MAX_OUTCOMES:  # exception names are a bounded set; still, bound it
                self._calls.clear()
            found = self._calls[outcome] = PROVIDER_CALLS.labels(self.provider, outcome)
        return found

    def raw_exchange(self) -> RawExchange | None:
        """The inner transport's request-as-bytes path (``adapters.transport.raw_exchange``), timed and
        counted as :meth:`handle_async_request` times and counts a request; None when it has none."""
        inner = raw_exchange(self.inner)
        if inner is None:
            return None

        async def timed(
            scheme: str,
            host: str,
            port: int | None,
            message: bytes,
            timeouts: Mapping[str, float | None],
            *,
            head: bool = False,
            request: httpx.Request | None = None,
        ) -> RawReply:
            started = time.perf_counter()
            try:
                reply = await inner(scheme, host, port, message, timeouts, head=head, request=request)
            except Exception as exc:
                self._failed(type(exc).__name__, started)
                raise
            self._answered(reply.status, started)
            return reply

        return timed

    def _failed(self, outcome: str, started: float) -> None:
        self._timed(outcome).observe(time.perf_counter() - started)
        PROVIDER_ERRORS.labels(self.provider, outcome).inc()

    def _answered(self, status: int, started: float) -> None:
        outcome = f"{status // 100}xx"
        self._timed(outcome).observe(time.perf_counter() - started)
        if status >= 500:
            PROVIDER_ERRORS.labels(self.provider, outcome).inc()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        try:
            response = await self.inner.handle_async_request(request)
        except Exception as exc:
            self._failed(type(exc).__name__, started)
            raise
        self._answered(response.status_code, started)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
