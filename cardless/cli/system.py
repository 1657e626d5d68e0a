"""Composes a running Cardless system from ``Settings``; each part is built by a module of its own.

- ``keys``: keystores, their password and the account key (``cardless.cli.keys``);
- ``embedded``: the dev chain + contracts and the simulated provider (``cardless.cli.embedded``);
- ``adapters``: provider adapters through the registry (``cardless.cli.adapters``);
- ``gateway_server``: the API under uvicorn in a thread (``cardless.cli.gateway_server``);
- ``oracle_runner``: one oracle worker and its scheduled jobs in a thread (``cardless.cli.oracle_runner``).

Embedded (the default, ``cardless run``): an in-process py-evm chain served over JSON-RPC, the contracts
deployed at start, the simulated provider, the gateway and one oracle worker, SQLite, all state bound to
the chain in ``var/embedded/``. Otherwise (``cardless gateway``, ``cardless oracle``) against
``CARDLESS_CHAIN_RPC_URL`` and the deployment file ``cardless deploy`` wrote.

The modules for parts a process does not run are never imported: ``cardless oracle`` loads neither
FastAPI nor uvicorn nor the simulator (tests/cli/test_oracle_imports.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from web3 import HTTPProvider, Web3
from web3.contract import Contract

from adapters import ProviderAdapter
from cardless.cli.adapters import build_adapters
from cardless.cli.keys import KEYSTORE_FILES, Keys, Role, account_cipher, load_keys, operator_key
from cardless.cli.settings import Settings
from cardless.ledger import create_engine_for, migrate, session_factory
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.private_files import private_dir
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import Deployment, DeploymentError, load_deployment
from gateway.catalogue import Catalogue, load_catalogue

if TYPE_CHECKING:
    from adapters.simulator.config import SimulatorConfig
    from adapters.simulator.server import SimulatorServer
    from cardless.cli.child import ChildProcess
    from cardless.cli.embedded import DevNodeProcess, SimulatorProcess
    from cardless.cli.gateway_server import GatewayServer
    from cardless.cli.oracle_runner import OracleRunner
    from cardless.cli.supervisor import ChildState, RestartPolicy, Supervisor
    from cardless.devchain.anvil import AnvilNode
    from cardless.devchain.node import DevNode
    from gateway.api.deps import GatewayContext
    from oracles.worker import OracleWorker

__all__ = ["Keys", "System", "load_keys", "simulator_secrets"]

log = logging.getLogger("cardless")


def simulator_secrets(config: SimulatorConfig) -> dict[str, str]:
    """The bundled provider files' secret variables mapped to the simulator's secrets (see ``embedded``)."""
    from cardless.cli.embedded import simulator_secrets as secrets_of

    return secrets_of(config)


class StartupError(RuntimeError):
    """The configuration asks for something this command cannot do."""


class System:
    def __init__(
        self,
        settings: Settings,
        *,
        embedded: bool = True,
        gateway: bool = True,
        oracle: bool = True,
        children: bool = False,
    ) -> None:
        self.settings = settings.for_embedded() if embedded else settings
        self.embedded = embedded
        self.run_gateway = gateway
        self.run_oracle = oracle
        self.children = children
        """Embedded: the py-evm node, the simulated provider and the oracle worker in child processes
        (``cardless run``, ``cardless demo``; ``cardless.cli.child``), not in threads of this one (tests
        that drive the node, the simulator's ``runtime`` or ``System.worker`` in memory)."""
        self._node_process: DevNodeProcess | None = None
        self.node: DevNode | AnvilNode | DevNodeProcess | None = None
        self.simulator: SimulatorServer | SimulatorProcess | None = None
        self.simulator_config: SimulatorConfig | None = None
        """The embedded simulator's configuration (default: ``default_config()``); tests may set it."""
        self.keys: Keys | None = None
        self.w3: Web3 | None = None
        self.deployment: Deployment | None = None
        self.engine: Engine | None = None
        self.sessions: sessionmaker[Session] | None = None
        self.catalogue: Catalogue | None = None
        self.cipher: AccountCipher | None = None
        self.operator_key: str | None = None
        """The bearer token of operator reads (the whole order), when this process serves the gateway."""
        self.gateway_url = ""
        self._gateway: GatewayServer | None = None
        self._oracle: OracleRunner | None = None
        self.oracle_process: ChildProcess | None = None
        """The embedded oracle worker's child process (``children``), else None."""
        self.restart_policy: RestartPolicy | None = None
        """How child processes are restarted (``children``; default ``RestartPolicy()``); tests may set it."""
        self._supervisor: Supervisor | None = None
        self._oracle_env: dict[str, str] | None = None
        self.halt = threading.Event()
        """Set when the system cannot go on: a child it cannot replace died, or one kept failing
        (``failure`` says which). ``cardless run`` waits on it beside Ctrl-C."""
        self.failure: str | None = None
        self.on_failure: Callable[[str], None] | None = None
        """Called (from a supervising thread) with ``failure`` when the system halts."""

    @property
    def worker(self) -> OracleWorker | None:
        return self._oracle.worker if self._oracle is not None else None

    @property
    def gateway_context(self) -> GatewayContext | None:
        """What the running gateway's routes use (tests build a second app from it)."""
        return self._gateway.context if self._gateway is not None else None

    def _roles(self) -> list[Role]:
        if self.embedded:
            return ["quote", "oracle", "gas"]  # the embedded chain authorises all three
        roles: list[Role] = ["quote"] if self.run_gateway else []
        if self.run_oracle:
            roles += ["oracle", "gas"]
        return roles

    # ------------------------------------------------------------------ start

    def start(self) -> System:
        try:
            return self._start()
        except BaseException:
            # A child process already started must not outlive a failed start (the caller may not call
            # stop() on a System that never started).
            if self.oracle_process is not None:
                self.oracle_process.stop(timeout=30)
            if self.children and self.simulator is not None:
                self.simulator.stop()
            if self._node_process is not None:
                self._node_process.stop()
            raise

    def _start(self) -> System:
        settings = self.settings
        if self.embedded and settings.environment == "production":
            raise StartupError(
                "CARDLESS_ENVIRONMENT=production: the embedded dev chain and simulator are for development "
                "and tests; run `cardless deploy`, then `cardless gateway` and `cardless oracle`"
            )
        private_dir(settings.var_dir)
        self.catalogue = load_catalogue(settings.catalogue_file)
        self.keys = load_keys(settings, self._roles())
        if self.run_gateway or self.run_oracle:
            self.cipher = account_cipher(settings)
        if self.run_gateway:
            self.operator_key = operator_key(settings)
        spawned = None
        if self.embedded and self.children:
            from cardless.cli.embedded import DevNodeProcess, SimulatorProcess

            # Started together, each checked when first needed: their start-ups overlap.
            if settings.dev_chain == "embedded":
                self._node_process = DevNodeProcess(port=settings.chain_port).spawn()
            if self.simulator is None:
                spawned = SimulatorProcess(self._simulator_config(), port=settings.simulator_port).spawn()
                self.simulator = spawned
        if self.embedded:
            self._start_embedded_chain()
        else:
            self.w3 = Web3(HTTPProvider(settings.chain_rpc_url, request_kwargs={"timeout": 30}))
            self.deployment = load_deployment(settings.effective_deployment_file, self.w3)
            self._check_signers()
        url = settings.effective_database_url
        self.engine = create_engine_for(url)
        migrate(self.engine)
        self.sessions = session_factory(self.engine)
        self._seed_catalogue()
        if spawned is not None:
            spawned.ready()
        if self.embedded and self.simulator is None:
            from cardless.cli.embedded import start_simulator

            self.simulator = start_simulator(settings, self._simulator_config())
        if self.run_gateway:
            self._start_gateway()
        if self.run_oracle:
            self._start_oracle()
        if self.embedded and self.children:
            self._supervise()
        return self

    def _seed_catalogue(self) -> None:
        """The catalogue lives in the database; the file seeds it. The embedded system (a new database at
        each start) and a development or test database with no merchant yet are seeded from
        ``catalogue_file``; a production database never is (``cardless catalogue load`` does it on
        purpose), so the shipped dev merchants cannot appear in a real catalogue. Only the process that
        serves the gateway seeds (the oracle does not read the catalogue), and only it imports the
        gateway's services: an oracle's start-up spent ~0.25 s of CPU importing them to return."""
        if not self.run_gateway or (self.settings.environment == "production" and not self.embedded):
            return
        from sqlalchemy import select
        from sqlalchemy.exc import IntegrityError

        from cardless.ledger.models import Merchant
        from gateway.services.skus import seed_catalogue

        assert self.sessions is not None and self.catalogue is not None
        with self.sessions() as session:
            if self.embedded or session.scalar(select(Merchant.id).limit(1)) is None:
                try:
                    seed_catalogue(session, self.catalogue)
                except IntegrityError:
                    # Two gateway processes of one system started on an empty database at once: the
                    # other one seeded it first. Its catalogue is the same file's; anything else is an error.
                    session.rollback()
                    if session.scalar(select(Merchant.id).limit(1)) is None:
                        raise

    def _simulator_config(self) -> SimulatorConfig:
        if self.simulator_config is None:
            from adapters.simulator.config import default_config

            self.simulator_config = default_config()
        return self.simulator_config

    def _check_signers(self) -> None:
        """The keys this process signs with must be authorised on the escrow: otherwise every quote would
        revert UnauthorisedQuoteSigner and every proof UnauthorisedOracleSigner, after buyers had paid."""
        assert self.keys is not None and self.deployment is not None
        escrow = self.escrow()
        directory = self.settings.effective_keystore_dir
        roles: list[tuple[str, str, Role, bool]] = [
            ("quote_signers", "isQuoteSigner", "quote", self.run_gateway),
            ("oracle_signers", "isOracleSigner", "oracle", self.run_oracle),
        ]
        for field, check, role, needed in roles:
            if not needed:
                continue
            key = self.keys.require(role)
            if not getattr(escrow.functions, check)(key.address).call():
                raise DeploymentError(
                    field,
                    f"the key in {directory / KEYSTORE_FILES[role]} ({key.address}) is not authorised on the "
                    f"escrow ({check} is false): wrong keystore directory, or the owner has not added it",
                    path=self.settings.effective_deployment_file,
                )

    def _start_embedded_chain(self) -> None:
        from cardless.cli.embedded import start_embedded_chain

        assert self.keys is not None
        chain = start_embedded_chain(
            self.settings,
            quote=self.keys.require("quote"),
            oracle=self.keys.require("oracle"),
            gas=self.keys.require("gas"),
            node=self._node_process,
        )
        self.node, self.w3, self.deployment = chain.node, chain.w3, chain.deployment

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
        return simulator_secrets(self._simulator_config()) if self.embedded else {}

    def _adapters(
        self,
        clients: list[httpx.AsyncClient],
        inner_transport: Callable[[], httpx.AsyncBaseTransport] | None = None,
    ) -> dict[str, ProviderAdapter]:
        return build_adapters(
            self.settings,
            clients,
            base_url=self._adapter_base_url(),
            secret_values=self._secret_values(),
            inner_transport=inner_transport,
        )

    def _start_gateway(self) -> None:
        from cardless.cli.gateway_server import GatewayServer

        assert self.w3 and self.sessions and self.catalogue and self.deployment and self.keys and self.cipher
        clients: list[httpx.AsyncClient] = []
        self._gateway = GatewayServer(
            self.settings,
            w3=self.w3,
            sessions=self.sessions,
            catalogue=self.catalogue,
            deployment=self.deployment,
            # Account checks through LeanTransport's raw path (the adapter writes the request as bytes):
            # httpx's client layer and aiohttp's were a fifth of a quote's CPU (docs/benchmarks.md).
            adapters=self._adapters(clients),
            clients=clients,
            quote_key=self.keys.require("quote"),
            cipher=self.cipher,
            # Public in /v1/health (the demo reads the simulator's ledger there): only a throw-away
            # embedded development system names it, never a real provider's base URL.
            simulator_url=self.simulator.url
            if self.simulator is not None and self.embedded and self.settings.is_development
            else None,
            operator_key=self.operator_key,
            # The children's states in /v1/health, for the same embedded development system only.
            processes=self.process_states
            if self.children and self.embedded and self.settings.is_development
            else None,
        )
        self.gateway_url = self._gateway.start()

    def _start_oracle(self) -> None:
        if self.embedded and self.children:
            self._start_oracle_process()
            return
        from cardless.cli.oracle_runner import OracleRunner

        assert self.w3 and self.sessions and self.catalogue and self.deployment and self.keys and self.cipher
        self._oracle = OracleRunner(
            self.settings,
            w3=self.w3,
            sessions=self.sessions,
            deployment=self.deployment,
            keys=self.keys,
            cipher=self.cipher,
            catalogue=self.catalogue,
            adapters=self._adapters,
            callback_base=self.gateway_url or self.settings.public_url,
        )
        self._oracle.start()

    def _start_oracle_process(self) -> None:
        """``cardless oracle`` as it runs in production, as a child process: against the node's JSON-RPC,
        the deployment file and this system's database, with the simulated provider and this gateway (for
        callbacks) by URL. Its own interpreter: its CPU no longer waits for this process's GIL."""
        self.oracle_process = self._oracle_child().spawn()
        self._oracle_ready(self.oracle_process)

    def _oracle_child(self) -> ChildProcess:
        """The oracle worker's process, not started. A restart gets the environment of the first start:
        the simulator's URL then is the one it comes back on, whatever state it is in meanwhile."""
        from cardless.cli.child import ChildProcess

        if self._oracle_env is None:
            self._oracle_env = self._oracle_environment()
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        module, arguments = "cardless.cli.embedded_oracle", ["--log-level", str(level)]
        return ChildProcess("the oracle worker", module, arguments, env=self._oracle_env)

    def _oracle_environment(self) -> dict[str, str]:
        import os

        from cardless.cli.embedded_oracle import settings_environment

        assert self.deployment is not None and self.simulator is not None
        settings = self.settings
        return {
            **os.environ,
            **settings_environment(
                settings,
                chain_rpc_url=self.deployment.rpc_url,
                deployment_file=settings.effective_deployment_file,
                database_url=settings.effective_database_url,
                provider_base_url=self._adapter_base_url(),
                public_url=self.gateway_url or settings.public_url,
                # The dev node child announces blocks on a WebSocket port of its own: the oracle wakes
                # on each block instead of polling every 100 ms.
                chain_ws_url=settings.chain_ws_url or getattr(self.node, "ws_url", ""),
            ),
            **self._secret_values(),
        }

    @staticmethod
    def _oracle_ready(child: ChildProcess) -> None:
        from cardless.cli.embedded_oracle import READY

        line = child.ready(timeout=120)
        if line != READY:
            child.stop()
            raise RuntimeError(f"the oracle worker said {line!r}, not {READY!r}")

    # ------------------------------------------------------------------ supervision

    def _supervise(self) -> None:
        """Watch the children (``cardless.cli.supervisor``): the oracle worker and the simulated provider
        are restarted; the dev chain is not (its state is in its memory), its death halts the system."""
        from urllib.parse import urlsplit

        from cardless.cli.embedded import DevNodeProcess, SimulatorProcess
        from cardless.cli.supervisor import RestartPolicy, Supervisor
        from cardless.devchain.anvil import AnvilNode

        supervisor = Supervisor(self.restart_policy or RestartPolicy(), self._fail)
        another_chain = (
            "it keeps the chain in memory, and a new one would be another chain than the one the gateway, "
            "the oracle and the database know; start the system again (`make run`)"
        )
        node = self.node
        if isinstance(node, DevNodeProcess):
            supervisor.watch("dev_chain", node, child=lambda n: n.child, irreplaceable=another_chain)
        elif isinstance(node, AnvilNode):
            supervisor.watch(
                "dev_chain",
                node,
                child=lambda n: None,
                label="anvil",
                process=lambda n: n._process,  # anvil logs to a file of its own: no stderr tail
                irreplaceable=another_chain,
            )
        simulator = self.simulator
        if isinstance(simulator, SimulatorProcess):
            # Same configuration (its secrets are the adapters'), same port (its URL is in the adapters
            # and the oracle's settings); the OS picked the port at the first start.
            config, port = simulator.config, urlsplit(simulator.url).port or 0

            def spawn_simulator() -> SimulatorProcess:
                return SimulatorProcess(config, port=port).spawn()

            def use_simulator(fresh: SimulatorProcess) -> None:
                self.simulator = fresh

            supervisor.watch(
                "simulator",
                simulator,
                child=lambda sim: sim.child,
                spawn=spawn_simulator,
                ready=lambda sim: sim.ready(60),
                replaced=use_simulator,
            )
        if self.oracle_process is not None:

            def use_oracle(fresh: ChildProcess) -> None:
                self.oracle_process = fresh

            # A new worker frees the leases its previous life held (release_leases_of_dead_local_workers)
            # and resumes their orders from the database.
            supervisor.watch(
                "oracle",
                self.oracle_process,
                child=lambda c: c,
                spawn=lambda: self._oracle_child().spawn(),
                ready=self._oracle_ready,
                replaced=use_oracle,
            )
        self._supervisor = supervisor

    def process_states(self) -> dict[str, ChildState]:
        """Each supervised child's state (``running``, ``restarting``, ``down``); empty if none is."""
        return self._supervisor.states() if self._supervisor is not None else {}

    def _fail(self, message: str) -> None:
        if self.failure is None:
            self.failure = message
        self.halt.set()
        if self.on_failure is not None:
            self.on_failure(message)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop()  # what is stopped from here on is stopped on purpose
        if self.oracle_process is not None:
            self.oracle_process.stop(timeout=30)  # it finishes the provider calls it started
            self.oracle_process = None
        if self._oracle is not None:
            self._oracle.stop()
        if self._gateway is not None:
            self._gateway.stop()
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
            "deployment_file": str(self.settings.effective_deployment_file),
            "tokens": {t.symbol: t.address for t in self.deployment.tokens},
            "simulator": self.simulator.url if self.simulator else None,
            "database": self.settings.effective_database_url,
        }
