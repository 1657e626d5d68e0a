"""A second gateway app for the merchant-API tests: the session system's chain, deployment and quote key,
but its own freshly migrated SQLite database (seeded from the shipped catalogue), its own adapters and a
real uvicorn server on a free loopback port. Merchants, keys and SKUs made here never reach the shared
system's catalogue, which other tests compare with the shipped file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from cardless.cli.system import System
from cardless.ledger import create_engine_for, migrate, session_factory
from gateway.api.deps import GatewayContext
from gateway.app import create_app
from gateway.catalogue import load_catalogue
from gateway.services.api_keys import KeyQuota
from gateway.services.skus import seed_catalogue

SIWE_DOMAIN = "shop.example"


@dataclasses.dataclass
class MerchantApp:
    url: str
    sessions: sessionmaker[Session]
    context: GatewayContext
    operator: dict[str, str]

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, timeout=30, headers=headers)


@contextlib.contextmanager
def merchant_app(system: System, directory: Path, **context: Any) -> Iterator[MerchantApp]:
    assert system.gateway_context is not None and system.operator_key is not None
    engine = create_engine_for(f"sqlite:///{directory / 'merchants.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    with sessions() as session:
        seed_catalogue(session, load_catalogue(system.settings.catalogue_file))
    clients: list[httpx.AsyncClient] = []
    adapters = system._adapters(clients)  # fresh ones: httpx clients belong to the loop that uses them
    base = system.gateway_context
    ctx = dataclasses.replace(
        base,
        sessions=sessions,
        adapters=adapters,
        quotes=dataclasses.replace(base.quotes, sessions=sessions, adapters=adapters),
        key_quota=KeyQuota(default="10000/minute"),
        siwe_domain=SIWE_DOMAIN,
        **context,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(ctx), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the merchant app did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield MerchantApp(
            url=f"http://127.0.0.1:{port}",
            sessions=sessions,
            context=ctx,
            operator={"Authorization": f"Bearer {system.operator_key}"},
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()
