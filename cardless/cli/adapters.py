"""Provider adapters, built only through the registry (``adapters.registry``).

Each provider file names its adapter kind (``adapter = "http"``, the default); the registry loads that
class by name, built-in or from an installed package's ``cardless.adapters`` entry point, so a
third-party adapter needs no change here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx

from adapters import ProviderAdapter
from adapters.registry import AdapterRegistry, registry
from adapters.transport import LeanTransport
from cardless.cli.provider_metrics import TimedTransport
from cardless.cli.settings import Settings

__all__ = ["build_adapters"]


def build_adapters(
    settings: Settings,
    clients: list[httpx.AsyncClient],
    *,
    base_url: str | None,
    secret_values: Mapping[str, str],
    adapters_registry: AdapterRegistry = registry,
    inner_transport: Callable[[], httpx.AsyncBaseTransport] | None = None,
) -> dict[str, ProviderAdapter]:
    """One adapter per provider file, each with its own HTTP client (appended to ``clients`` for closing),
    so a provider that hangs cannot exhaust a connection pool the others need. ``inner_transport`` makes
    what sends the bytes (default: httpx's own)."""
    adapters: dict[str, ProviderAdapter] = {}
    for path in settings.provider_files:
        # Timed per provider file (its stem until the adapter names itself): latency and errors for /metrics.
        # As many kept-alive connections as calls in flight (httpx keeps 20 by default: past that every
        # call paid a TCP connect and close, CPU in the oracle and the provider), still bounded. The
        # gateway passes its own (aiohttp) transport; the oracle uses LeanTransport.
        limits = httpx.Limits(
            max_connections=settings.provider_concurrency,
            max_keepalive_connections=settings.provider_concurrency,
        )
        inner = inner_transport() if inner_transport is not None else LeanTransport(limits)
        client = httpx.AsyncClient(transport=TimedTransport(path.stem, inner))
        clients.append(client)
        adapter = adapters_registry.from_file(path, client, secrets=secret_values, base_url=base_url)
        name = str(getattr(adapter, "name", path.stem))
        if name in adapters:
            raise ValueError(f"provider {name!r} is configured twice ({path})")
        adapters[name] = adapter
    return adapters
