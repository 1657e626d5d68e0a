"""Assembles a running Cardless system from ``Settings``.

Embedded (the default, ``make run``): an in-process py-evm chain served over JSON-RPC, the contracts
deployed at start, the simulated provider, the gateway and one oracle worker, SQLite. Each part can
also run alone against real endpoints (``cardless oracle`` against ``CARDLESS_CHAIN_RPC_URL``).

Threads: the dev node and the simulator serve from their own threads; the gateway runs under uvicorn
in one thread and the oracle in another, each with its own event loop and its own adapter instances
(an ``httpx.AsyncClient`` belongs to one loop).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.types import Wei

from adapters import ProviderAdapter
from adapters.http import HttpAdapter
from adapters.simulator.config import SimulatorConfig, default_config
from adapters.simulator.server import SimulatorServer
from cardless.cli.settings import Settings
from cardless.devchain.deploy import deploy_dev_system
from cardless.devchain.node import DevNode
from cardless.ledger import create_engine_for, migrate, session_factory
from cardless.ledger.cipher import AccountCipher, load_or_create_key
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import Deployment, DeploymentError, load_deployment
from cardless.protocol.reverts import RevertDecoder
from gateway.api.deps import GatewayContext
from gateway.app import create_app
from gateway.catalogue import Catalogue, load_catalogue
from gateway.services.quotes import QuoteService
from oracles.keys import KeystoreError, load_or_create_keystore, read_password
from oracles.service import OracleService
from oracles.settlement import MerchantSweep
from oracles.txmanager import TxManager
from oracles.worker import OracleWorker, WorkerConfig

__all__ = ["Keys", "System", "load_keys", "simulator_secrets"]

log = logging.getLogger("cardless")

# Dev ETH for the oracle's gas-paying key on the embedded chain.
_GAS_FUNDING = 100 * 10**18


@dataclasses.dataclass(frozen=True)
class Keys:
    quote: LocalAccount
    oracle: LocalAccount
    gas: LocalAccount


def load_keys(settings: Settings) -> Keys:
    """Load (or on a development machine, create) the three keystores."""
    directory = settings.effective_keystore_dir
    try:
        password = read_password()
    except KeystoreError:
        if settings.environment == "production":
            raise
        # Development: a random password kept next to the keystores (var/ is not in the repository).
        password_file = directory / "password"
        if not password_file.exists():
            directory.mkdir(parents=True, exist_ok=True)
            password_file.write_text(secrets.token_urlsafe(24) + "\n")
            os.chmod(password_file, 0o600)
        password = password_file.read_text().strip()
    scrypt_n = settings.keystore_scrypt_n
    return Keys(
        quote=load_or_create_keystore(directory / "quote-signer.json", password, scrypt_n=scrypt_n),
        oracle=load_or_create_keystore(directory / "oracle-signer.json", password, scrypt_n=scrypt_n),
        gas=load_or_create_keystore(directory / "gas-payer.json", password, scrypt_n=scrypt_n),
    )


def simulator_secrets(config: SimulatorConfig) -> dict[str, str]:
    """The environment-variable names the bundled provider files use, mapped to the simulator's secrets."""
    by_id = {m.id: m for m in config.merchants}
    hmac, md5 = by_id["cardless-hmac"], by_id["cardless-md5"]
    return {
        "CARDLESS_SIM_SECRET": hmac.secret,
        "CARDLESS_SIM_CALLBACK_SECRET": hmac.callback_secret,
        "CARDLESS_SIM_MD5_SECRET": md5.secret,
        "CARDLESS_SIM_MD5_CALLBACK_SECRET": md5.callback_secret,
    }


def build_adapters(
    settings: Settings,
    clients: list[httpx.AsyncClient],
    *,
    base_url: str | None,
    secret_values: Mapping[str, str],
) -> dict[str, ProviderAdapter]:
    """One adapter per provider file, each with its own HTTP client (appended to ``clients`` for closing),
    so a provider that hangs cannot exhaust a connection pool the others need."""
    adapters: dict[str, ProviderAdapter] = {}
    for path in settings.provider_files:
        client = httpx.AsyncClient()
        clients.append(client)
        adapter = HttpAdapter.from_file(path, client, secrets=secret_values, base_url=base_url)
        if adapter.name in adapters:
            raise ValueError(f"provider {adapter.name!r} is configured twice ({path})")
        adapters[adapter.name] = adapter
    return adapters


class System:
    def __init__(
        self, settings: Settings, *, embedded: bool = True, gateway: bool = True, oracle: bool = True
    ) -> None:
        self.settings = settings
        self.embedded = embedded
        self.run_gateway = gateway
        self.run_oracle = oracle
        self.node: DevNode | None = None
        self.simulator: SimulatorServer | None = None
        self.simulator_config: SimulatorConfig = default_config()
        self.keys: Keys | None = None
        self.w3: Web3 | None = None
        self.deployment: Deployment | None = None
        self.engine: Engine | None = None
        self.sessions: sessionmaker[Session] | None = None
        self.catalogue: Catalogue | None = None
        self.cipher: AccountCipher | None = None
        self._gateway_server: uvicorn.Server | None = None
        self._threads: list[threading.Thread] = []
        self._oracle_loop: asyncio.AbstractEventLoop | None = None
        self._oracle_stop: asyncio.Event | None = None
        self.gateway_url = ""
        self.worker: OracleWorker | None = None

    # ------------------------------------------------------------------ start

    def start(self) -> System:
        settings = self.settings
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        self.catalogue = load_catalogue(settings.catalogue_file)
        self.keys = load_keys(settings)
        self.cipher = AccountCipher(load_or_create_key(settings.var_dir / "account-key"))
        if self.embedded:
            self._start_embedded_chain()
        else:
            self.w3 = Web3(HTTPProvider(settings.chain_rpc_url, request_kwargs={"timeout": 30}))
            self.deployment = load_deployment(settings.effective_deployment_file, self.w3)
            self._check_signers()
            # The default SQLite file lives in the state directory, which only the embedded chain creates.
            self._state_dir().mkdir(parents=True, exist_ok=True)
        self.engine = create_engine_for(self._database_url())
        migrate(self.engine)
        self.sessions = session_factory(self.engine)
        if self.embedded and self.simulator is None:
            self.simulator = SimulatorServer(self.simulator_config, port=settings.simulator_port)
            self.simulator.start()
        if self.run_gateway:
            self._start_gateway()
        if self.run_oracle:
            self._start_oracle()
        return self

    def _check_signers(self) -> None:
        """The keys this process signs with must be authorised on the escrow: otherwise every quote would
        revert UnauthorisedQuoteSigner and every proof UnauthorisedOracleSigner, after buyers had paid."""
        assert self.keys is not None and self.deployment is not None
        escrow = self.escrow()
        directory = self.settings.effective_keystore_dir
        roles = [
            ("quote_signers", "isQuoteSigner", self.keys.quote, "quote-signer.json", self.run_gateway),
            ("oracle_signers", "isOracleSigner", self.keys.oracle, "oracle-signer.json", self.run_oracle),
        ]
        for field, check, key, keystore, needed in roles:
            if needed and not getattr(escrow.functions, check)(key.address).call():
                raise DeploymentError(
                    field,
                    f"the key in {directory / keystore} ({key.address}) is not authorised on the escrow "
                    f"({check} is false): wrong keystore directory, or the owner has not added it",
                    path=self.settings.effective_deployment_file,
                )

    def _database_url(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        # The embedded chain lives in memory, so its database starts fresh with it.
        return f"sqlite:///{self._state_dir() / 'cardless.db'}"

    def _state_dir(self) -> Path:
        return self.settings.var_dir / ("embedded" if self.embedded else "node")

    def _start_embedded_chain(self) -> None:
        assert self.keys is not None
        state = self._state_dir()
        if state.exists():
            shutil.rmtree(state)
        state.mkdir(parents=True)
        self.node = DevNode(port=self.settings.chain_port).start()
        self.w3 = Web3(HTTPProvider(self.node.url, request_kwargs={"timeout": 30}))
        funder = self.w3.eth.accounts[0]
        tx = self.w3.eth.send_transaction(
            {"from": funder, "to": self.keys.gas.address, "value": Wei(_GAS_FUNDING)}
        )
        self.w3.eth.wait_for_transaction_receipt(tx)
        self.deployment = deploy_dev_system(
            self.w3,
            quote_signer=self.keys.quote.address,
            oracle_signer=self.keys.oracle.address,
            rpc_url=self.node.url,
        )
        self.deployment.save(self._deployment_file())

    def _deployment_file(self) -> Path:
        if self.settings.deployment_file is not None:
            return self.settings.deployment_file
        return self._state_dir() / "deployment.json"

    def escrow(self, w3: Web3 | None = None) -> Contract:
        assert self.deployment is not None
        w3 = w3 or self.w3
        assert w3 is not None
        return w3.eth.contract(address=self.deployment.escrow, abi=load_artifact("CardlessEscrow").abi)

    def _adapter_base_url(self) -> str | None:
        if self.simulator is not None:
            return self.simulator.url
        return self.settings.provider_base_url

    def _secret_values(self) -> dict[str, str]:
        return simulator_secrets(self.simulator_config) if self.embedded else {}

    def _start_gateway(self) -> None:
        settings = self.settings
        assert self.w3 and self.sessions and self.catalogue and self.deployment and self.keys and self.cipher
        adapters = build_adapters(
            settings, [], base_url=self._adapter_base_url(), secret_values=self._secret_values()
        )
        self.catalogue.check_providers(set(adapters))
        quotes = QuoteService(
            w3=self.w3,
            sessions=self.sessions,
            catalogue=self.catalogue,
            deployment=self.deployment,
            adapters=adapters,
            quote_key=self.keys.quote,
            cipher=self.cipher,
            quote_ttl=settings.quote_ttl_seconds,
            fulfilment_window=settings.fulfilment_window_seconds,
        )
        context = GatewayContext(
            w3=self.w3,
            sessions=self.sessions,
            catalogue=self.catalogue,
            deployment=self.deployment,
            adapters=adapters,
            quotes=quotes,
            simulator_url=self._adapter_base_url(),
        )
        app = create_app(context)
        config = uvicorn.Config(
            app, host=settings.gateway_host, port=settings.gateway_port, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        self._gateway_server = server
        thread = threading.Thread(target=server.run, name="gateway", daemon=True)
        thread.start()
        self._threads.append(thread)
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"gateway did not start on {settings.gateway_host}:{settings.gateway_port}"
                )
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        self.gateway_url = f"http://{settings.gateway_host}:{port}"

    def _start_oracle(self) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._oracle_loop = loop
            try:
                loop.run_until_complete(self._oracle_main(ready))
            except BaseException as exc:  # surfaced to start() or logged
                errors.append(exc)
                ready.set()
                log.exception("oracle stopped")
            finally:
                loop.close()

        thread = threading.Thread(target=run, name="oracle", daemon=True)
        thread.start()
        self._threads.append(thread)
        ready.wait(30)
        if errors:
            raise RuntimeError(f"oracle failed to start: {errors[0]}") from errors[0]

    def build_worker(self, clients: list[httpx.AsyncClient]) -> OracleWorker:
        settings = self.settings
        assert self.w3 and self.sessions and self.deployment and self.keys and self.cipher
        adapters = build_adapters(
            settings, clients, base_url=self._adapter_base_url(), secret_values=self._secret_values()
        )
        escrow = self.escrow()
        decoder = RevertDecoder([load_artifact("CardlessEscrow").abi])
        tx = TxManager(self.w3, self.sessions, self.keys.gas, decoder)
        return OracleWorker(
            w3=self.w3,
            escrow=escrow,
            domain=self.deployment.domain,
            sessions=self.sessions,
            adapters=adapters,
            proof_key=self.keys.oracle,
            tx=tx,
            cipher=self.cipher,
            start_block=self.deployment.deployed_block,
            config=WorkerConfig(
                max_batch=settings.max_batch,
                confirmations=settings.confirmations,
                not_found_grace=timedelta(seconds=settings.not_found_grace_seconds),
            ),
            callback_base=self.gateway_url or settings.public_url,
        )

    async def _oracle_main(self, ready: threading.Event) -> None:
        clients: list[httpx.AsyncClient] = []
        try:
            worker = self.build_worker(clients)
            self.worker = worker
            self._oracle_stop = asyncio.Event()
            assert self.catalogue is not None and self.deployment is not None
            sweep = MerchantSweep(
                worker.escrow,
                worker.tx,
                merchants=[m.address for m in self.catalogue.merchants],
                tokens=[t.address for t in self.deployment.tokens],
            )
            await OracleService(worker, sweep=sweep).run(self._oracle_stop, started=ready.set)
        finally:
            for client in clients:
                await client.aclose()

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        if self._oracle_loop is not None and self._oracle_stop is not None:
            self._oracle_loop.call_soon_threadsafe(self._oracle_stop.set)
        if self._gateway_server is not None:
            self._gateway_server.should_exit = True
        for thread in self._threads:
            thread.join(timeout=10)
        if self.simulator is not None:
            self.simulator.stop()
        if self.node is not None:
            self.node.stop()
        if self.engine is not None:
            self.engine.dispose()

    def __enter__(self) -> System:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> dict[str, Any]:
        assert self.deployment is not None
        return {
            "gateway": self.gateway_url,
            "chain_rpc": self.deployment.rpc_url,
            "chain_id": self.deployment.chain_id,
            "escrow": self.deployment.escrow,
            "tokens": {t.symbol: t.address for t in self.deployment.tokens},
            "simulator": self.simulator.url if self.simulator else None,
            "database": self._database_url(),
        }
