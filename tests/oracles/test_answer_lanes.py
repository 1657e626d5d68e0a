"""A provider's answer moves its order on as soon as it arrives, not at the oracle's next tick.

One embedded system (``cardless.cli.system.System``: the py-evm dev node over HTTP JSON-RPC with the
escrow deployed, the real simulated provider, the gateway and one oracle worker running as
``cardless run`` runs it). An order is bought as a wallet buys it, with the simulator holding its top-up
for a while (``latency`` fault); while that call runs, the worker's tick is made to hang in its intake
stage (``_ingest``: the chain read and the risk check, which on a loaded node took hundreds of
milliseconds). The answer must still be recorded, its proof signed, posted and the settlement applied,
while the tick is stuck: before, the answer waited in memory for the tick's next pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from web3 import HTTPProvider, Web3

from cardless.cli.demo import pay_quote
from cardless.cli.system import System
from cardless.ledger import Order, OrderState
from cardless.protocol import OrderStatus
from tests.support.shop import dev_wallet, gateway_settings

pytestmark = pytest.mark.slow  # one embedded system for the module: a few seconds

S = OrderState
BUYER_KEY = 4
PROVIDER_HOLDS_MS = 1_500


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System(gateway_settings(tmp_path_factory.mktemp("answer-lanes")))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _state(system: System, order_id: str) -> str | None:
    assert system.sessions is not None
    with system.sessions() as session:
        row = session.get(Order, order_id)
        return None if row is None else row.state


def _until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_an_answer_is_recorded_signed_and_settled_while_the_tick_hangs(system: System) -> None:
    worker = system.worker
    assert worker is not None and system.node is not None and system.simulator is not None
    assert system.deployment is not None
    gateway = httpx.Client(base_url=system.gateway_url, timeout=30)
    sim = httpx.Client(base_url=system.simulator.url, timeout=10)
    w3 = Web3(HTTPProvider(system.node.url, request_kwargs={"timeout": 30}))
    buyer = dev_wallet(BUYER_KEY)

    # The tick's intake hangs, once armed, until released (the worker calls it in a thread).
    intake = worker._ingest
    armed, hanging, release = threading.Event(), threading.Event(), threading.Event()

    def hanging_intake() -> Any:
        if armed.is_set() and not release.is_set():
            hanging.set()
            release.wait(30)
        return intake()

    worker._ingest = hanging_intake  # type: ignore[method-assign]
    try:
        quote = gateway.post(
            "/v1/quotes",
            json={"sku": "genshin-60", "account": "31415926", "token": "tUSDC", "buyer": buyer.address},
        )
        assert quote.status_code == 201, quote.text
        order_id = quote.json()["order_id"]
        fault = {"mode": "latency", "order_no": order_id, "count": 1, "latency_ms": PROVIDER_HOLDS_MS}
        sim.post("/_sim/faults", json=fault).raise_for_status()
        pay_quote(w3, buyer, quote.json(), system.deployment.chain_id)

        assert _until(lambda: _state(system, order_id) == S.SUBMITTING.value, 15), _state(system, order_id)
        armed.set()  # the call is out, the simulator holds it: the next tick hangs in its intake
        assert hanging.wait(10), "the tick never reached its intake stage"
        assert _state(system, order_id) == S.SUBMITTING.value  # the answer has not come yet

        # While the tick hangs: the answer is recorded, the proof signed and posted, the settlement applied.
        assert _until(lambda: _state(system, order_id) == S.SETTLED.value, PROVIDER_HOLDS_MS / 1000 + 10), (
            f"order {_state(system, order_id)} while the tick hung"
        )
        assert not release.is_set()
        assert system.sessions is not None
        with system.sessions() as session:
            row = session.get(Order, order_id)
            assert row is not None
            reached = [event.to_state for event in row.events]
        assert reached[-3:] == [S.SUCCEEDED.value, S.PROOF_PENDING.value, S.SETTLED.value], reached
    finally:
        release.set()
        worker._ingest = intake  # type: ignore[method-assign]

    # Once the tick goes on, nothing changes: one top-up at the provider, the order settled on chain.
    assert _until(lambda: worker._in_flight == set(), 10)
    credits = [c for c in sim.get("/_sim/ledger").json()["credits"] if c["order_no"] == order_id]
    assert len(credits) == 1
    escrow = system.escrow(w3)
    assert escrow.functions.orderStatus(bytes.fromhex(order_id[2:])).call() == OrderStatus.SETTLED
    assert _state(system, order_id) == S.SETTLED.value
    gateway.close()
    sim.close()
