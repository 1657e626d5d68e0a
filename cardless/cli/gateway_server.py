"""The gateway under uvicorn in a thread of its own (its own event loop and adapter instances).

Imports FastAPI and uvicorn: only ``cardless run``, ``cardless gateway`` and the demo load it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import httpx
import uvicorn
from eth_account.signers.local import LocalAccount
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from adapters import ProviderAdapter
from adapters.provider_file import read_account_format
from cardless.cli.provider_metrics import PROVIDER_CALLS, PROVIDER_ERRORS
from cardless.cli.settings import Settings
from cardless.ledger.cipher import AccountCipher
from cardless.protocol.chains import ChainProfileError
from cardless.protocol.deployment import Deployment
from gateway.api.deps import GatewayContext
from gateway.app import create_app
from gateway.catalogue import Catalogue
from gateway.services.api_keys import KeyQuota
from gateway.services.quotes import QuoteService
from gateway.services.ratelimits import QuoteLimits
from gateway.services.webhooks import WebhookEndpoints

__all__ = ["GatewayServer"]


class GatewayServer:
    def __init__(
        self,
        settings: Settings,
        *,
        w3: Web3,
        sessions: sessionmaker[Session],
        catalogue: Catalogue,
        deployment: Deployment,
        adapters: dict[str, ProviderAdapter],
        clients: list[httpx.AsyncClient],
        quote_key: LocalAccount,
        cipher: AccountCipher,
        simulator_url: str | None,
        operator_key: str | None = None,
        processes: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        catalogue.check_providers(set(adapters))
        quotes = QuoteService(
            w3=w3,
            sessions=sessions,
            deployment=deployment,
            adapters=adapters,
            quote_key=quote_key,
            cipher=cipher,
            quote_ttl=settings.quote_ttl_seconds,
            chain_time_ttl=settings.effective_chain_time_cache_seconds,
            fulfilment_window=settings.fulfilment_window_seconds,
            account_formats={
                name: found
                for name, found in map(read_account_format, settings.provider_files)
                if found is not None
            },
        )
        self.context = context = GatewayContext(
            w3=w3,
            sessions=sessions,
            catalogue=catalogue,
            deployment=deployment,
            adapters=adapters,
            quotes=quotes,
            quote_limits=QuoteLimits(
                per_client=settings.quote_rate_per_client,
                per_buyer=settings.quote_rate_per_buyer,
                sessions=sessions,  # shared by every gateway process on this database
            ),
            simulator_url=simulator_url,
            processes=processes,
            operator_key=operator_key,
            key_quota=KeyQuota(default=settings.api_key_rate),
            siwe_domain=settings.siwe_domain
            or (urlsplit(settings.public_url).netloc if settings.public_url else None),
            public_rpc_url=settings.public_rpc_url
            or (deployment.rpc_url if settings.is_development else None),
            # Loopback and private webhook URLs only in development (the demo's receiver is on loopback).
            webhook_endpoints=WebhookEndpoints(cipher, allow_private=settings.is_development),
            confirmations=_confirmations(settings, deployment.chain_id),
            metrics_collectors=(PROVIDER_CALLS, PROVIDER_ERRORS),
        )
        config = uvicorn.Config(
            create_app(context),
            host=settings.gateway_host,
            port=settings.gateway_port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self, timeout: float = 15) -> str:
        """Serve from a thread; returns the URL once the socket listens."""
        settings, server = self.settings, self._server
        sockets = (
            [_reuse_port_socket(settings.gateway_host, settings.gateway_port)]
            if settings.gateway_reuse_port
            else None
        )
        thread = threading.Thread(target=self._run, args=(sockets,), name="gateway", daemon=True)
        thread.start()
        self._thread = thread
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"gateway did not start on {settings.gateway_host}:{settings.gateway_port}"
                )
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{settings.gateway_host}:{port}"
        if self.context.siwe_domain is None:
            self.context.siwe_domain = f"{settings.gateway_host}:{port}"
        return self.url

    def _run(self, sockets: list[socket.socket] | None) -> None:
        """uvicorn's ``Server.run``, then the provider clients closed on the loop that used them."""

        async def serve() -> None:
            try:
                await self._server.serve(sockets=sockets)
            finally:
                for client in self.clients:
                    await client.aclose()

        with asyncio.Runner(loop_factory=self._server.config.get_loop_factory()) as runner:
            runner.run(serve())

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket other processes may bind too (SO_REUSEPORT): the kernel hands each new
    connection to one of them. Only processes of the same user can join (Linux checks the uid)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    return sock


def _confirmations(settings: Settings, chain_id: int) -> int:
    """The depth the oracle waits for on this chain (its profile with the settings' overrides); /readyz
    counts the oracle's lag beyond it. A chain without a profile counts from 0 here: the oracle itself
    refuses to start on it without CARDLESS_CONFIRMATIONS."""
    try:
        return settings.chain_profile(chain_id).confirmations
    except ChainProfileError:
        return 0
