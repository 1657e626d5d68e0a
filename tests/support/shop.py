"""One embedded Cardless system for the gateway tests: the dev chain node, the deployed escrow, the
simulated provider, the gateway on a real socket and one oracle worker (``cardless.cli.system.System``).

It is started once per session (about two seconds) on free ports in a temporary ``var_dir``. Tests
share it, so each test uses its own orders and its own dev wallet, and compares counts before and
after rather than absolute numbers. ``Shop`` wraps what the tests do with it: quote, pay from a dev
wallet, wait for a state, count rows, move the chain's clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import func, select
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.types import TxReceipt

from cardless.cli.demo import send_step
from cardless.cli.settings import Settings
from cardless.cli.system import System
from cardless.ledger.models import Order, OrderEvent
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.reverts import RevertDecoder

TERMINAL = frozenset({"settled", "refunded", "reclaimed", "expired"})
PROBLEM = "application/problem+json"


def dev_wallet(index: int) -> LocalAccount:
    """Dev key ``index`` of the embedded chain (1 deploys, 2 collects fees, 6 and 7 are merchants)."""
    account: LocalAccount = Account.from_key(index.to_bytes(32, "big"))
    return account


def gateway_settings(var_dir: Path, **overrides: Any) -> Settings:
    """Settings for a throw-away system: free ports, cheap scrypt, everything under ``var_dir``.

    ``development``: keystores, their password and the account key are generated in ``var_dir`` on
    first use (any other environment refuses to start without them)."""
    values: dict[str, Any] = {
        "environment": "development",
        "var_dir": var_dir,
        "chain_port": 0,
        "gateway_port": 0,
        "simulator_port": 0,
        "keystore_scrypt_n": 1024,
        # One system serves a whole session of tests that quote from a few dev wallets: the limits are
        # tested on their own app (tests/gateway/test_rate_limits.py), not by whoever quotes 31st.
        "quote_rate_per_client": "100000/minute",
        "quote_rate_per_buyer": "100000/minute",
    }
    values.update(overrides)
    return Settings(**values)


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem+json with ``status``; with ``field``, naming exactly that field."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    if field is not None:
        assert [e["field"] for e in body["errors"]] == [field], body
        assert body["detail"].startswith(f"{field}: "), body
    return body


class Shop:
    """The running system seen from a buyer's wallet and the gateway's HTTP API."""

    def __init__(self, system: System) -> None:
        assert system.node is not None and system.simulator is not None and system.sessions is not None
        self.system = system
        self.api = httpx.Client(base_url=system.gateway_url, timeout=30)
        """Anonymous, as a buyer's browser is."""
        assert system.operator_key is not None
        self.operator_headers = {"Authorization": f"Bearer {system.operator_key}"}
        self.sim = httpx.Client(base_url=system.simulator.url, timeout=10)
        self.w3 = Web3(HTTPProvider(system.node.url, request_kwargs={"timeout": 30}))
        self.chain_id = self.w3.eth.chain_id
        self.escrow: Contract = system.escrow(self.w3)
        self.decoder = RevertDecoder([load_artifact("CardlessEscrow").abi])
        self.erc20_abi = load_artifact("test-helpers/MockERC20").abi

    def close(self) -> None:
        self.api.close()
        self.sim.close()

    # -- the gateway

    def quote(
        self,
        buyer: LocalAccount | str,
        *,
        sku: str = "genshin-60",
        token: str = "tUSDC",
        account: str = "12345678",
    ) -> httpx.Response:
        address = buyer if isinstance(buyer, str) else buyer.address
        return self.api.post(
            "/v1/quotes", json={"sku": sku, "account": account, "token": token, "buyer": address}
        )

    def order(self, order_id: str) -> dict[str, Any]:
        """The whole order, read with the operator key."""
        response = self.api.get(f"/v1/orders/{order_id}", headers=self.operator_headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_for(self, order_id: str, *states: str, timeout: float = 15.0) -> dict[str, Any]:
        """Poll the order until it reaches one of ``states``; fail on another terminal state."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.order(order_id)
            if status["state"] in states:
                return status
            if status["state"] in TERMINAL:
                pytest.fail(f"order ended {status['state']}, expected {states}: {status}")
            if time.monotonic() > deadline:
                pytest.fail(f"order still {status['state']} after {timeout} s, expected {states}: {status}")
            time.sleep(0.05)

    # -- the database

    def counts(self) -> tuple[int, int]:
        """(order rows, order events): a refused quote must leave both unchanged."""
        assert self.system.sessions is not None
        with self.system.sessions() as session:
            orders = session.scalar(select(func.count()).select_from(Order))
            events = session.scalar(select(func.count()).select_from(OrderEvent))
        return int(orders or 0), int(events or 0)

    def row(self, order_id: str) -> Order | None:
        assert self.system.sessions is not None
        with self.system.sessions() as session:
            return session.get(Order, order_id)

    # -- the chain

    def send(self, wallet: LocalAccount, step: dict[str, Any], *, value: int | None = None) -> TxReceipt:
        """Sign and send one of a quote's transactions from ``wallet``; the receipt, reverted or not."""
        return send_step(self.w3, wallet, step, self.chain_id, value=value)

    def pay(self, wallet: LocalAccount, quote: dict[str, Any]) -> TxReceipt:
        """Send every transaction of the quote (approve, then pay) and return the pay receipt."""
        receipt: TxReceipt | None = None
        for step in quote["transactions"]:
            receipt = self.send(wallet, step)
            assert receipt["status"] == 1, f"{step['step']} reverted"
        assert receipt is not None
        return receipt

    def revert_of(self, wallet: LocalAccount, step: dict[str, Any], *, value: int | None = None) -> Any:
        """Simulate ``step`` from ``wallet`` and decode the custom error it reverts with."""
        call = {
            "from": wallet.address,
            "to": Web3.to_checksum_address(step["to"]),
            "data": step["data"],
            "value": int(step["value"]) if value is None else value,
        }
        try:
            self.w3.eth.call(call)  # type: ignore[arg-type]
        except Exception as exc:
            decoded = self.decoder.from_exception(exc)
            if decoded is None:
                raise
            return decoded
        pytest.fail("the call did not revert")

    def chain_now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def warp(self, seconds: int) -> None:
        """Move the chain's clock forward and mine a block at the new time (the dev node's evm_* methods)."""
        self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def eth_balance(self, address: str) -> int:
        return int(self.w3.eth.get_balance(Web3.to_checksum_address(address)))

    def token_balance(self, token: str, address: str) -> int:
        contract = self.w3.eth.contract(address=Web3.to_checksum_address(token), abi=self.erc20_abi)
        return int(contract.functions.balanceOf(Web3.to_checksum_address(address)).call())

    # -- the simulated provider

    def arm(self, mode: str, **options: Any) -> None:
        self.sim.post("/_sim/faults", json={"mode": mode, **options}).raise_for_status()

    def clear_faults(self) -> None:
        self.sim.delete("/_sim/faults").raise_for_status()

    def credits(self, order_id: str) -> int:
        """How many times the provider credited this order (a double top-up shows as 2)."""
        ledger = self.sim.get("/_sim/ledger").raise_for_status().json()
        return sum(1 for entry in ledger["credits"] if entry["order_no"] == order_id)


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System(gateway_settings(tmp_path_factory.mktemp("cardless")))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def shop(system: System) -> Iterator[Shop]:
    helper = Shop(system)
    try:
        yield helper
    finally:
        helper.close()


@pytest.fixture
def api(shop: Shop) -> httpx.Client:
    """An httpx client to the gateway's URL."""
    return shop.api


@pytest.fixture
def faults(shop: Shop) -> Iterator[Shop]:
    """The shop, with every simulator fault cleared afterwards (a test that arms one must not leak it)."""
    shop.clear_faults()
    try:
        yield shop
    finally:
        shop.clear_faults()
