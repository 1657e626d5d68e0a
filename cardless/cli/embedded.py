"""The embedded system's own infrastructure: a dev chain with the contracts deployed, and the
simulated provider. Development and tests only; imported lazily, so ``cardless gateway``,
``cardless oracle`` and ``cardless deploy`` never load the dev chain or the simulator.

The dev chain is the in-process py-evm node (``CARDLESS_DEV_CHAIN=embedded``, the default) or anvil
from npm (``anvil``, ``cardless run --chain anvil``): the same dev accounts (keys 1..10), chain id
31337 and dev deployment on both, so wallets and the demo cannot tell them apart except that anvil
mines asynchronously, keeps a mempool and can reorganise.

State: the chain lives in memory, so everything bound to it (database, deployment file) lives in
``var/embedded/`` (``Settings.for_embedded``) and is wiped at every start.
"""

from __future__ import annotations

import os
import shutil
import time

import httpx
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3
from web3.types import Wei

from adapters.simulator.config import SimulatorConfig
from adapters.simulator.server import CONFIG_ENV, SimulatorServer
from cardless.cli.child import ChildProcess, ChildStartError
from cardless.cli.settings import Settings
from cardless.devchain.anvil import AnvilNode, dev_accounts
from cardless.devchain.deploy import deploy_dev_system
from cardless.devchain.node import DevNode
from cardless.protocol.deployment import Deployment

__all__ = [
    "DevNodeProcess",
    "EmbeddedChain",
    "SimulatorProcess",
    "simulator_secrets",
    "start_embedded_chain",
    "start_simulator",
]

# Dev ETH for the oracle's gas-paying key on the embedded chain.
_GAS_FUNDING = 100 * 10**18


class DevNodeProcess:
    """The py-evm dev node as a child process (``python -m cardless.devchain --announce``), served on a
    port the OS picked and read back: its CPU no longer waits for the GIL of the gateway's process. It
    has the ``url`` and ``stop()`` of :class:`DevNode` and :class:`AnvilNode`; the chain is driven over
    JSON-RPC only (``evm_snapshot``, ``evm_increaseTime``...), not in memory."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self.child = ChildProcess(
            "the dev chain", "cardless.devchain", ["--host", host, "--port", str(port), "--ws", "--announce"]
        )
        self.url = ""
        self.ws_url = ""
        """``eth_subscribe newHeads`` over WebSocket (the oracle's ``CARDLESS_CHAIN_WS_URL``)."""

    @property
    def pid(self) -> int | None:
        return self.child.pid

    def spawn(self) -> DevNodeProcess:
        self.child.spawn()
        return self

    def ready(self, timeout: float = 60.0) -> DevNodeProcess:
        line = self.child.ready(timeout)
        words = line.split()
        if len(words) != 4 or words[0::2] != ["port", "ws"] or not all(w.isdigit() for w in words[1::2]):
            self.stop()
            raise ChildStartError(f"the dev chain said {line!r}, not `port N ws M`")
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.url = f"http://{host}:{int(words[1])}"
        self.ws_url = f"ws://{host}:{int(words[3])}"
        return self

    def start(self) -> DevNodeProcess:
        return self.spawn().ready()

    def stop(self) -> None:
        self.child.stop()


class EmbeddedChain:
    def __init__(self, node: DevNode | AnvilNode | DevNodeProcess, w3: Web3, deployment: Deployment) -> None:
        self.node, self.w3, self.deployment = node, w3, deployment


def start_embedded_chain(
    settings: Settings,
    *,
    quote: LocalAccount,
    oracle: LocalAccount,
    gas: LocalAccount,
    node: DevNodeProcess | None = None,
) -> EmbeddedChain:
    """Start a fresh dev chain, fund the gas key, deploy the dev system and save the deployment file.
    ``node``: a dev node child process already spawned (its start-up overlapping the caller's), used on
    the embedded chain instead of a node in this process."""
    state = settings.embedded_dir
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(mode=0o700, parents=True)  # the embedded database lives here
    running: DevNode | AnvilNode | DevNodeProcess
    if settings.dev_chain == "anvil":
        if node is not None:
            node.stop()
        running = AnvilNode(port=settings.chain_port, log_file=state / "anvil.log").start()
    elif node is not None:
        running = node.ready()
    else:
        running = DevNode(port=settings.chain_port).start()
    node = None
    try:
        w3 = Web3(HTTPProvider(running.url, request_kwargs={"timeout": 30}))
        # The dev accounts by key, not by eth_accounts order (anvil lists unlocked accounts unordered).
        accounts = [a.address for a in dev_accounts()]
        tx = w3.eth.send_transaction({"from": accounts[0], "to": gas.address, "value": Wei(_GAS_FUNDING)})
        w3.eth.wait_for_transaction_receipt(tx)
        deployment = deploy_dev_system(
            w3,
            quote_signer=quote.address,
            oracle_signer=oracle.address,
            owner=accounts[0],
            fee_recipient=accounts[1],
            funded_accounts=accounts,
            rpc_url=running.url,
            sweeper=gas.address,  # the oracle's sweep job sends withdraw() from the gas key
        )
        deployment.save(settings.effective_deployment_file)
    except BaseException:
        running.stop()
        raise
    return EmbeddedChain(running, w3, deployment)


class SimulatorProcess:
    """The simulated provider as a child process (``python -m adapters.simulator --announce``), as a real
    provider is a server of its own: its CPU is not taken from the GIL of the gateway, the oracle and
    the node. Same ``url``, ``config`` and ``stop()`` as :class:`SimulatorServer`; its books are read over
    HTTP (``/_sim/ledger``), not in memory. ``spawn()`` starts it without waiting, so its start-up
    overlaps the chain's; ``ready()`` reads the port it announces and checks that it answers."""

    def __init__(self, config: SimulatorConfig, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self._host = host
        self.child = ChildProcess(
            "the simulated provider",
            "adapters.simulator",
            ["--host", host, "--port", str(port), "--log-level", "warning", "--announce"],
            env={**os.environ, CONFIG_ENV: config.model_dump_json()},
        )
        self.url = ""

    @property
    def pid(self) -> int | None:
        return self.child.pid

    def spawn(self) -> SimulatorProcess:
        self.child.spawn()
        return self

    def ready(self, timeout: float = 60.0) -> SimulatorProcess:
        line = self.child.ready(timeout)
        try:
            word, port = line.split()
            if word != "port" or not port.isdigit():
                raise ValueError(line)
            host = f"[{self._host}]" if ":" in self._host else self._host
            url = f"http://{host}:{int(port)}"
            deadline = time.monotonic() + timeout
            while True:  # the health check: the app itself answers, not only the socket
                try:
                    httpx.get(f"{url}/_sim/faults", timeout=5).raise_for_status()
                    break
                except httpx.HTTPError:
                    if not self.child.alive() or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        except (ValueError, httpx.HTTPError) as exc:
            self.stop()
            raise ChildStartError(f"the simulated provider did not start: {exc}") from exc
        self.url = url
        return self

    def start(self) -> SimulatorProcess:
        return self.spawn().ready()

    def stop(self) -> None:
        self.child.stop()
        self.url = ""


def start_simulator(settings: Settings, config: SimulatorConfig) -> SimulatorServer:
    """The simulated provider in a thread of this process (tests that drive its ``runtime``)."""
    simulator = SimulatorServer(config, port=settings.simulator_port)
    simulator.start()
    return simulator


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
