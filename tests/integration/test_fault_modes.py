"""Every fault the simulated provider can inject, end to end against one embedded system.

One module-scoped ``System`` (dev chain node, deployed escrow, simulated provider, gateway, oracle
worker). Each test buys one order as a wallet would (quote over HTTP, approve + pay signed by a dev
wallet), arms a fault on the simulator for that order id between the quote and the payment, waits for
a terminal state and then checks the whole outcome:

- the end state (settled, or refunded with the refund reason the oracle put on chain);
- the provider's ledger: exactly one credit for a settled order, none for a refunded one, and which
  merchant (so which provider) credited it;
- the order's timeline shows the recovery step the fault calls for;
- the escrow: the order's on-chain status, merchant and fee credited exactly once for a settled
  order, the buyer repaid to the unit for a refunded one;
- the armed fault actually fired (a ``count``-limited fault disappears once used).

Test-only tuning, all through configuration: the oracle's ``not_found_grace`` is 3 s (10 s shipped),
the providers' circuit breakers stay open 8 s (30 s shipped; same failure threshold), their read
timeout is 5 s (10 s shipped; still above the 3 s the slowest deliberate latency holds a reply), the
oracle first queries an unknown outcome after 0.5 s and then every 1 s (1 s and 2 s shipped), and the
simulator completes async top-ups after 2 s (0.5 s by default) so a query can land while an order is
still ``PROCESSING``. The simulator's callback client is replaced by one that records every callback
it sends and the gateway's reply, so the tests can see forged callbacks being refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3
from web3.contract import Contract

from adapters.health import BreakerState
from adapters.signing import callback_message, hmac_sha256_hex
from adapters.simulator.config import default_config
from adapters.simulator.server import SimulatorServer
from cardless.cli.demo import pay_quote
from cardless.cli.system import System
from cardless.protocol import OrderStatus, RefundReason
from cardless.protocol.artifacts import load_artifact
from tests.support.books import Books as ChainBooks
from tests.support.shop import dev_wallet, gateway_settings

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tUSDC"
BUYER_KEY = 3  # a dev wallet of the embedded chain (see gateway/demo.py for who is who)
TERMINAL = {"settled", "refunded", "reclaimed"}
# Which simulator merchant each provider file signs as: the ledger names the merchant that credited.
MERCHANT_OF = {"simulator": "cardless-hmac", "simulator-md5": "cardless-md5"}
CALLBACK_SECRET = {"simulator": "sim-hmac-callback-secret", "simulator-md5": "sim-md5-callback-secret"}
NOT_FOUND_GRACE_S = 3.0
QUERY_BACKOFF_S = 0.5  # the breaker opens on the 5th failure: 1 submit + 4 queries of an outage
BREAKER_OPEN_S = 8.0
READ_TIMEOUT_S = 5.0  # above every latency fault armed below (3 s at most): only `timeout` times out
ASYNC_DELAY_MS = 2_000

RESUBMITTED = "resubmitting under it"  # oracles/outcomes.py, NOT_FOUND after the grace period


# --------------------------------------------------------------------------------------------- harness


@dataclasses.dataclass
class Callback:
    """One callback the simulator sent, exactly as sent, and the gateway's HTTP status."""

    url: str
    raw: bytes
    headers: dict[str, str]
    http_status: int

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.raw)
        return body


@dataclasses.dataclass
class Quote:
    order_id: str
    sku: str
    account: str
    amount: int
    fee_bps: int
    merchant: str
    body: dict[str, Any]

    @property
    def fee(self) -> int:
        return self.amount * self.fee_bps // 10_000


@dataclasses.dataclass(frozen=True)
class Books:
    """What an order may move: merchants' money (escrow balance + payout wallet), fees, the buyer's money."""

    merchants: dict[str, int]
    fees: int
    buyer: int


@dataclasses.dataclass
class Harness:
    system: System
    gateway: httpx.Client
    sim: httpx.Client
    w3: Web3
    escrow: Contract
    token: Contract
    buyer: LocalAccount
    chain_id: int
    callbacks: list[Callback]
    _accounts: Iterator[int] = dataclasses.field(
        default_factory=lambda: iter(range(10_000_001, 99_999_999, 7_919))
    )

    # -- buying -------------------------------------------------------------------------------------

    def quote(self, sku: str) -> Quote:
        account = str(next(self._accounts))
        reply = self.gateway.post(
            "/v1/quotes", json={"sku": sku, "account": account, "token": TOKEN, "buyer": self.buyer.address}
        )
        assert reply.status_code == 201, reply.text
        body = reply.json()
        order = body["order"]
        return Quote(
            order_id=body["order_id"],
            sku=sku,
            account=account,
            amount=int(order["amount"]),
            fee_bps=int(order["feeBps"]),
            merchant=Web3.to_checksum_address(order["merchant"]),
            body=body,
        )

    def arm(self, mode: str, order_id: str, *, count: int | None = 1, **options: Any) -> dict[str, Any]:
        fault: dict[str, Any] = {"mode": mode, "order_no": order_id, **options}
        if count is not None:
            fault["count"] = count
        reply = self.sim.post("/_sim/faults", json=fault)
        assert reply.status_code == 200, reply.text
        armed: dict[str, Any] = reply.json()["fault"]
        return armed

    def pay(self, quote: Quote) -> None:
        pay_quote(self.w3, self.buyer, quote.body, self.chain_id)

    # -- observing ----------------------------------------------------------------------------------

    def status(self, order_id: str) -> dict[str, Any]:
        reply = self.gateway.get(f"/v1/orders/{order_id}")
        assert reply.status_code == 200, reply.text
        status: dict[str, Any] = reply.json()
        return status

    def wait(self, order_id: str, states: set[str] = TERMINAL, timeout: float = 45.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(order_id)
            if status["state"] in states:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"order {order_id} is {status['state']!r} after {timeout} s, "
                    f"expected one of {sorted(states)}; "
                    f"last_error={status['last_error']!r}; timeline:\n{_timeline_text(status)}"
                )
            time.sleep(0.02)

    def ledger(self, order_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        ledger = self.sim.get("/_sim/ledger").raise_for_status().json()
        credits = [c for c in ledger["credits"] if c["order_no"] == order_id]
        reversals = [r for r in ledger["reversals"] if r["order_no"] == order_id]
        return credits, reversals

    def faults_for(self, order_id: str) -> list[dict[str, Any]]:
        faults = self.sim.get("/_sim/faults").raise_for_status().json()["faults"]
        return [f for f in faults if f["order_no"] == order_id]

    def callbacks_for(self, order_id: str) -> list[Callback]:
        return [c for c in self.callbacks if c.body.get("order_no") == order_id]

    def chain_status(self, order_id: str) -> OrderStatus:
        return OrderStatus(self.escrow.functions.orderStatus(bytes.fromhex(order_id[2:])).call())

    def books(self, merchants: list[str]) -> Books:
        """Balances that survive the oracle's merchant sweep: a withdrawal moves escrow balance to the payout
        wallet, so a merchant's money is the sum of both (tests/support/books.py)."""
        token, chain = self.token.address, ChainBooks(self.w3, self.escrow)
        return Books(
            {m: chain.merchant(token, m) for m in merchants},
            chain.fees(token),
            chain.buyer(token, self.buyer.address),
        )


def _timeline_text(status: dict[str, Any]) -> str:
    return "\n".join(f"  {e['from']} -> {e['to']}: {e['reason']}" for e in status["timeline"])


def _states(status: dict[str, Any]) -> list[str]:
    return [e["to"] for e in status["timeline"]]


def _reasons(status: dict[str, Any], to: str | None = None) -> list[str]:
    return [e["reason"] for e in status["timeline"] if to is None or e["to"] == to]


def _provider_files(directory: Path) -> list[Path]:
    """The shipped provider files with only the breaker's open period and the read timeout shortened
    (the `timeout` fault holds a request until the client gives up: 10 s shipped)."""
    files = []
    for name in ("simulator.toml", "simulator-md5.toml"):
        text = (ROOT / "adapters" / "providers" / name).read_text()
        for shipped, tuned in (
            ("open_seconds = 30.0", f"open_seconds = {BREAKER_OPEN_S}"),
            ("read = 10.0", f"read = {READ_TIMEOUT_S}"),
        ):
            assert text.count(shipped) == 1, f"{name}: {shipped!r} changed; update this test"
            text = text.replace(shipped, tuned)
        path = directory / name
        path.write_text(text)
        files.append(path)
    return files


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    var = tmp_path_factory.mktemp("fault-modes")
    settings = gateway_settings(
        var,
        not_found_grace_seconds=NOT_FOUND_GRACE_S,
        query_backoff_seconds=QUERY_BACKOFF_S,
        provider_files=_provider_files(var),
    )
    system = System(settings)
    # The simulator is started here (System uses one it is given) so its config and callback client can be
    # set: async top-ups complete after ASYNC_DELAY_MS, and every callback is recorded with its reply.
    config = default_config().model_copy(update={"async_delay_ms": ASYNC_DELAY_MS})
    system.simulator_config = config
    simulator = SimulatorServer(config, port=0)
    callbacks: list[Callback] = []

    async def record(response: httpx.Response) -> None:
        request = response.request
        callbacks.append(
            Callback(str(request.url), request.content, dict(request.headers), response.status_code)
        )

    simulator.runtime._http = httpx.AsyncClient(
        timeout=config.callback_timeout_s, event_hooks={"response": [record]}
    )
    simulator.start()
    system.simulator = simulator
    system.start()
    try:
        # The operator's view of orders: the provider, the receipt and the timeline are not public.
        gateway = httpx.Client(
            base_url=system.gateway_url,
            timeout=30,
            headers={"Authorization": f"Bearer {system.operator_key}"},
        )
        sim = httpx.Client(base_url=simulator.url, timeout=10)
        assert system.deployment is not None and system.node is not None
        w3 = Web3(HTTPProvider(system.node.url, request_kwargs={"timeout": 60}))
        token = w3.eth.contract(
            address=system.deployment.token(TOKEN).address, abi=load_artifact("test-helpers/MockERC20").abi
        )
        yield Harness(
            system=system,
            gateway=gateway,
            sim=sim,
            w3=w3,
            escrow=system.escrow(w3),
            token=token,
            buyer=dev_wallet(BUYER_KEY),
            chain_id=system.deployment.chain_id,
            callbacks=callbacks,
        )
        gateway.close()
        sim.close()
    finally:
        system.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(harness: Harness) -> Iterator[None]:
    yield
    harness.sim.delete("/_sim/faults").raise_for_status()


# ------------------------------------------------------------------------------------- outcome checks


def _buy(h: Harness, sku: str, *faults: tuple[str, dict[str, Any]]) -> tuple[Quote, Books]:
    """Quote, arm the faults for the new order id, snapshot the books, pay."""
    quote = h.quote(sku)
    for mode, options in faults:
        h.arm(mode, quote.order_id, **options)
    before = h.books([quote.merchant])
    h.pay(quote)
    return quote, before


def _assert_settled(
    h: Harness, quote: Quote, status: dict[str, Any], before: Books, *, provider: str
) -> None:
    timeline = _timeline_text(status)
    assert status["state"] == "settled", timeline
    assert status["refund_reason"] is None
    assert status["provider"] == provider, timeline
    assert status["receipt"]["provider"] == provider
    assert status["chain"]["settle_tx"] and not status["chain"]["refund_tx"]
    credits, reversals = h.ledger(quote.order_id)
    assert len(credits) == 1, f"expected exactly one credit, ledger has {credits}"
    assert credits[0]["merchant_id"] == MERCHANT_OF[provider]
    assert (credits[0]["sku"], credits[0]["account"]) == (quote.sku, quote.account)
    assert credits[0]["provider_ref"] == status["provider_ref"] == status["receipt"]["provider_ref"]
    assert reversals == []
    assert h.chain_status(quote.order_id) is OrderStatus.SETTLED
    after = h.books([quote.merchant])
    assert after.merchants[quote.merchant] - before.merchants[quote.merchant] == quote.amount - quote.fee
    assert after.fees - before.fees == quote.fee
    assert after.buyer - before.buyer == -quote.amount


def _assert_refunded(
    h: Harness, quote: Quote, status: dict[str, Any], before: Books, *, reason: RefundReason
) -> None:
    timeline = _timeline_text(status)
    assert status["state"] == "refunded", timeline
    assert status["refund_reason"] == int(reason), timeline
    assert status["chain"]["refund_tx"] and not status["chain"]["settle_tx"]
    assert status["proof"] is None
    assert h.chain_status(quote.order_id) is OrderStatus.REFUNDED
    after = h.books([quote.merchant])
    assert after.merchants[quote.merchant] == before.merchants[quote.merchant]
    assert after.fees == before.fees
    assert after.buyer == before.buyer, "the buyer must get back exactly what was paid"


def _assert_fired(h: Harness, quote: Quote) -> None:
    """Every fault armed with a count for this order was used up (so it really happened)."""
    assert h.faults_for(quote.order_id) == []


def _calls(status: dict[str, Any]) -> list[str]:
    """The provider calls the oracle made ("submitting to <provider>"), in order."""
    return [r for r in _reasons(status, "submitting") if r.startswith("submitting to ")]


def _resubmitted(status: dict[str, Any]) -> bool:
    return any(RESUBMITTED in r for r in _reasons(status))


def _failovers(status: dict[str, Any]) -> list[str]:
    return [r for r in _reasons(status) if "failing over" in r]


# ----------------------------------------------------------------------------------------------- tests


def test_latency_settles_without_recovery(harness: Harness) -> None:
    quote, before = _buy(harness, "genshin-60", ("latency", {"latency_ms": 1_500}))
    status = harness.wait(quote.order_id)
    _assert_settled(harness, quote, status, before, provider="simulator")
    _assert_fired(harness, quote)
    # A slow provider is just slow: no unknown outcome, one submit, and the reply waited for the latency.
    assert "unknown" not in _states(status)
    events = {e["to"]: datetime.fromisoformat(e["at"]) for e in status["timeline"]}
    assert (events["succeeded"] - events["submitting"]).total_seconds() >= 1.4
    assert _calls(status) == ["submitting to simulator"], _timeline_text(status)
    assert not _resubmitted(status) and not _failovers(status)


def test_timeout_is_queried_then_resubmitted_under_the_same_key(harness: Harness) -> None:
    quote, before = _buy(harness, "genshin-60", ("timeout", {}))
    status = harness.wait(quote.order_id, timeout=60)
    _assert_settled(harness, quote, status, before, provider="simulator")
    _assert_fired(harness, quote)
    # The read timeout is an unknown outcome; the query says NOT_FOUND (the provider committed nothing);
    # after the grace period the oracle resubmits to the SAME provider under the same key.
    unknown = _reasons(status, "unknown")
    assert len(unknown) == 1 and "timeout" in unknown[0].lower(), _timeline_text(status)
    assert _resubmitted(status), _timeline_text(status)
    assert _calls(status) == ["submitting to simulator"] * 2 and not _failovers(status)
    assert _states(status).index("unknown") < _states(status).index("succeeded")


def test_error_5xx_before_commit_is_unknown_then_resubmitted_after_grace(harness: Harness) -> None:
    quote, before = _buy(harness, "genshin-60", ("error_5xx_before_commit", {}))
    status = harness.wait(quote.order_id)
    _assert_settled(harness, quote, status, before, provider="simulator")
    _assert_fired(harness, quote)
    # A 5xx proves nothing about the charge, so no failover: query by our key, and only after NOT_FOUND
    # outlasts the grace period resubmit under the same key.
    unknown = _reasons(status, "unknown")
    assert len(unknown) == 1 and "HTTP 500" in unknown[0], _timeline_text(status)
    assert _resubmitted(status), _timeline_text(status)
    assert _calls(status) == ["submitting to simulator"] * 2 and not _failovers(status)
    events = [(e["to"], datetime.fromisoformat(e["at"])) for e in status["timeline"]]
    first_submit = next(at for to, at in events if to == "submitting")
    resubmit = next(datetime.fromisoformat(e["at"]) for e in status["timeline"] if RESUBMITTED in e["reason"])
    assert (resubmit - first_submit).total_seconds() > NOT_FOUND_GRACE_S
    assert all("failing over" not in r for r in _reasons(status))


def test_lost_after_commit_is_found_by_query_not_resubmitted(harness: Harness) -> None:
    quote, before = _buy(harness, "genshin-60", ("lost_after_commit", {}))
    status = harness.wait(quote.order_id)
    _assert_settled(harness, quote, status, before, provider="simulator")  # exactly one credit
    _assert_fired(harness, quote)
    # The provider credited but the reply was lost: unknown, then the query by our key finds the success.
    states = _states(status)
    assert states.index("unknown") == states.index("submitting") + 1
    assert states[states.index("unknown") + 1] == "succeeded", _timeline_text(status)
    assert _calls(status) == ["submitting to simulator"], _timeline_text(status)
    assert not _resubmitted(status) and not _failovers(status)


def test_async_processing_completes_by_callback_and_query(harness: Harness) -> None:
    quote, before = _buy(harness, "genshin-60", ("async", {}))
    status = harness.wait(quote.order_id)
    _assert_settled(harness, quote, status, before, provider="simulator")
    _assert_fired(harness, quote)
    unknown = _reasons(status, "unknown")
    assert len(unknown) == 1 and "processing" in unknown[0], _timeline_text(status)
    assert _calls(status) == ["submitting to simulator"], _timeline_text(status)
    assert not _resubmitted(status) and not _failovers(status)
    callbacks = harness.callbacks_for(quote.order_id)
    assert [(c.body["status"], c.http_status) for c in callbacks] == [("SUCCESS", 200)]
    assert callbacks[0].url.endswith("/v1/providers/simulator/callback")


def test_duplicate_callback_changes_nothing(harness: Harness) -> None:
    quote, before = _buy(harness, "genshin-60", ("async", {}), ("duplicate_callback", {}))
    status = harness.wait(quote.order_id)
    _assert_settled(harness, quote, status, before, provider="simulator")
    _assert_fired(harness, quote)
    callbacks = harness.callbacks_for(quote.order_id)
    assert len(callbacks) == 2
    assert callbacks[0].raw == callbacks[1].raw
    assert callbacks[0].headers["x-sim-signature"] == callbacks[1].headers["x-sim-signature"]
    assert [c.http_status for c in callbacks] == [200, 200]  # a genuine copy is accepted, as a hint only
    assert _calls(status) == ["submitting to simulator"], _timeline_text(status)
    assert not _resubmitted(status) and not _failovers(status)
    assert _states(status).count("succeeded") == 1


def test_forged_callback_is_refused_and_logged(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.services.callbacks")
    quote, before = _buy(harness, "genshin-60", ("async", {}), ("forged_callback", {}))
    status = harness.wait(quote.order_id)
    _assert_settled(harness, quote, status, before, provider="simulator")
    _assert_fired(harness, quote)
    callbacks = harness.callbacks_for(quote.order_id)
    # The forgery (same body, wrong key) came first, while the order was still unknown: refused with 401.
    assert [c.http_status for c in callbacks] == [401, 200]
    assert callbacks[0].raw == callbacks[1].raw
    assert callbacks[0].headers["x-sim-signature"] != callbacks[1].headers["x-sim-signature"]
    assert any(
        "rejected callback from simulator" in r.getMessage() and "signature" in r.getMessage()
        for r in caplog.records
    )
    assert _calls(status) == ["submitting to simulator"], _timeline_text(status)
    assert not _resubmitted(status) and not _failovers(status)


def test_not_found_in_flight_is_not_resubmitted_within_grace(harness: Harness) -> None:
    quote, before = _buy(harness, "genshin-60", ("async", {}), ("not_found_in_flight", {}))
    status = harness.wait(quote.order_id)
    _assert_settled(harness, quote, status, before, provider="simulator")
    # The fault only fires on a query while the order is PROCESSING: it fired, so the oracle was told
    # NOT_FOUND about an order in flight, and (within the grace period) kept querying instead of resubmitting.
    _assert_fired(harness, quote)
    assert _calls(status) == ["submitting to simulator"], _timeline_text(status)
    assert not _resubmitted(status)


def test_invalid_account_is_refunded_without_failover(harness: Harness) -> None:
    quote, before = _buy(harness, "genshin-60", ("invalid_account", {}))
    status = harness.wait(quote.order_id)
    _assert_refunded(harness, quote, status, before, reason=RefundReason.INVALID_ACCOUNT)
    _assert_fired(harness, quote)
    assert harness.ledger(quote.order_id) == ([], [])
    # The account is wrong for every provider: no failover, straight to the refund.
    assert _calls(status) == ["submitting to simulator"] and status["provider"] == "simulator"
    assert _states(status)[-4:] == ["submitting", "failed_final", "refund_pending", "refunded"]
    assert "refused, not charged" in _reasons(status, "failed_final")[0]


def test_out_of_stock_fails_over_to_the_next_provider(harness: Harness) -> None:
    quote, before = _buy(harness, "genshin-60", ("out_of_stock", {}))
    status = harness.wait(quote.order_id)
    _assert_settled(harness, quote, status, before, provider="simulator-md5")
    _assert_fired(harness, quote)
    assert _calls(status) == ["submitting to simulator", "submitting to simulator-md5"], _timeline_text(
        status
    )
    [failover] = _failovers(status)
    assert "simulator refused and did not charge" in failover and "out_of_stock" in failover.lower()
    assert failover.endswith("failing over to simulator-md5")
    assert "unknown" not in _states(status)


def test_out_of_stock_at_every_provider_is_refunded(harness: Harness) -> None:
    quote, before = _buy(harness, "genshin-60", ("out_of_stock", {"count": 2}))
    status = harness.wait(quote.order_id)
    _assert_refunded(harness, quote, status, before, reason=RefundReason.OUT_OF_STOCK)
    _assert_fired(harness, quote)
    assert harness.ledger(quote.order_id) == ([], [])
    assert _calls(status) == ["submitting to simulator", "submitting to simulator-md5"], _timeline_text(
        status
    )
    assert len(_failovers(status)) == 1
    assert "simulator-md5 refused, not charged" in _reasons(status, "failed_final")[0]


def test_insufficient_balance_fails_over_to_the_next_provider(harness: Harness) -> None:
    quote, before = _buy(harness, "pubg-60uc", ("insufficient_balance", {}))
    status = harness.wait(quote.order_id)
    # pubg-60uc is served first by simulator-md5: its merchant balance "runs out", simulator takes over.
    _assert_settled(harness, quote, status, before, provider="simulator")
    _assert_fired(harness, quote)
    assert _calls(status) == ["submitting to simulator-md5", "submitting to simulator"], _timeline_text(
        status
    )
    [failover] = _failovers(status)
    assert (
        "simulator-md5 refused and did not charge" in failover and "insufficient_balance" in failover.lower()
    )
    assert failover.endswith("failing over to simulator")
    assert "unknown" not in _states(status)


def test_reversal_seen_before_settlement_is_refunded(harness: Harness) -> None:
    """The publisher reverses a top-up while the oracle is still waiting for its outcome.

    The top-up is async; once the oracle has it as unknown (PROCESSING), its next query is held by a
    3 s latency fault. Meanwhile the top-up completes (credited) and is reversed, so the held query
    reads REVERSED: the oracle must refund, never settle."""
    h = harness
    quote, before = _buy(h, "genshin-60", ("async", {}))
    h.wait(quote.order_id, states={"unknown"}, timeout=10)
    h.arm("latency", quote.order_id, latency_ms=3_000)  # < READ_TIMEOUT_S
    deadline = time.monotonic() + 10
    while not h.ledger(quote.order_id)[0]:
        assert time.monotonic() < deadline, "the async top-up was never credited"
        time.sleep(0.02)
    reply = h.sim.post("/_sim/reverse", json={"order_no": quote.order_id, "merchant_id": "cardless-hmac"})
    assert reply.status_code == 200 and reply.json()["status"] == "REVERSED", reply.text
    status = h.wait(quote.order_id)
    _assert_refunded(h, quote, status, before, reason=RefundReason.PROVIDER_REJECTED)
    _assert_fired(h, quote)
    assert "simulator reversed the top-up" in _reasons(status, "failed_final")[0], _timeline_text(status)
    assert "succeeded" not in _states(status)
    # The credit was clawed back: one credit and one reversal, the game account is back to zero.
    credits, reversals = h.ledger(quote.order_id)
    assert len(credits) == 1 and len(reversals) == 1
    points = h.sim.get(f"/_sim/accounts/{quote.account}").raise_for_status().json()["points"]
    assert points.get("genshin", 0) == 0


def test_provider_down_fails_over_new_orders_and_the_unknown_one_settles_on_recovery(
    harness: Harness,
) -> None:
    """`simulator` stops answering (every request for order A gets HTTP 500, until cleared).

    A's outcome is unknown (a 5xx proves nothing), so A is never failed over: it is queried until the
    provider answers. Those failures open the oracle's circuit breaker for `simulator`; B (same SKU) is
    then refused by the breaker without being sent, which proves it was not charged, so B fails over to
    `simulator-md5`. C (a SKU served first by `simulator-md5`) is not held up at all. When the provider
    recovers, A's query says NOT_FOUND and A is resubmitted to `simulator` under the same key."""
    h = harness
    breaker = h.system.worker.adapters["simulator"] if h.system.worker else None
    assert breaker is not None
    quote_a = h.quote("genshin-60")
    quote_b = h.quote("genshin-60")
    quote_c = h.quote("pubg-60uc")
    merchants = sorted({quote_a.merchant, quote_c.merchant})
    before = h.books(merchants)
    h.arm("error_5xx_before_commit", quote_a.order_id, count=None)
    h.pay(quote_a)

    deadline = time.monotonic() + 30
    while breaker.health().state is not BreakerState.OPEN:
        assert time.monotonic() < deadline, f"breaker never opened: {breaker.health()}"
        time.sleep(0.02)
    opened = time.monotonic()
    h.pay(quote_b)
    h.pay(quote_c)
    status_c = h.wait(quote_c.order_id, timeout=BREAKER_OPEN_S)
    status_b = h.wait(quote_b.order_id, timeout=BREAKER_OPEN_S)
    assert time.monotonic() - opened < BREAKER_OPEN_S, "B and C must not wait for the outage to end"

    # B: refused by the open breaker (never sent), failed over, credited by the md5 merchant.
    assert status_b["state"] == "settled" and status_b["provider"] == "simulator-md5", _timeline_text(
        status_b
    )
    assert any(
        "simulator unavailable, not called" in r and "failing over" in r for r in _reasons(status_b)
    ), _timeline_text(status_b)
    credits_b, _ = h.ledger(quote_b.order_id)
    assert [c["merchant_id"] for c in credits_b] == ["cardless-md5"]
    assert h.chain_status(quote_b.order_id) is OrderStatus.SETTLED
    # C: untouched by the outage.
    assert status_c["state"] == "settled" and status_c["provider"] == "simulator-md5", _timeline_text(
        status_c
    )
    assert _calls(status_c) == ["submitting to simulator-md5"] and "unknown" not in _states(status_c)
    assert not _failovers(status_c)
    assert [c["merchant_id"] for c in h.ledger(quote_c.order_id)[0]] == ["cardless-md5"]

    # A: waiting, not failed over, not refunded, nothing credited; the breaker is what it waits behind.
    status_a = h.status(quote_a.order_id)
    assert status_a["state"] == "unknown" and status_a["provider"] == "simulator", _timeline_text(status_a)
    assert h.ledger(quote_a.order_id) == ([], [])
    assert h.chain_status(quote_a.order_id) is OrderStatus.PAID

    h.sim.delete("/_sim/faults").raise_for_status()  # the provider recovers
    status_a = h.wait(quote_a.order_id, timeout=BREAKER_OPEN_S + 20)
    assert status_a["state"] == "settled" and status_a["provider"] == "simulator", _timeline_text(status_a)
    assert _resubmitted(status_a), _timeline_text(status_a)
    assert _calls(status_a) == ["submitting to simulator"] * 2 and not _failovers(status_a)
    credits_a, _ = h.ledger(quote_a.order_id)
    assert [c["merchant_id"] for c in credits_a] == ["cardless-hmac"]
    assert h.chain_status(quote_a.order_id) is OrderStatus.SETTLED
    assert breaker.health().state is BreakerState.CLOSED

    after = h.books(merchants)
    for merchant in merchants:
        owed = sum(q.amount - q.fee for q in (quote_a, quote_b, quote_c) if q.merchant == merchant)
        assert after.merchants[merchant] - before.merchants[merchant] == owed
    assert after.fees - before.fees == sum(q.fee for q in (quote_a, quote_b, quote_c))
    assert after.buyer - before.buyer == -sum(q.amount for q in (quote_a, quote_b, quote_c))


def test_callback_endpoint_refuses_forgeries_and_replays_change_nothing(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Callbacks sent by hand to POST /v1/providers/{name}/callback, after an async order has settled."""
    h = harness
    caplog.set_level(logging.WARNING, logger="gateway.services.callbacks")
    quote, before = _buy(h, "genshin-60", ("async", {}))
    settled = h.wait(quote.order_id)
    _assert_settled(h, quote, settled, before, provider="simulator")
    [genuine] = h.callbacks_for(quote.order_id)
    assert genuine.http_status == 200
    ledger_before = h.sim.get("/_sim/ledger").json()
    url = "/v1/providers/simulator/callback"
    stamp = genuine.headers["x-sim-timestamp"]

    def post(raw: bytes, headers: dict[str, str], path: str = url) -> httpx.Response:
        return h.gateway.post(path, content=raw, headers={"Content-Type": "application/json", **headers})

    def signed(raw: bytes, secret: str, timestamp: str) -> dict[str, str]:
        signature = hmac_sha256_hex(secret, callback_message("{timestamp}.{body}", timestamp, raw))
        return {"X-Sim-Timestamp": timestamp, "X-Sim-Signature": signature}

    # A replay of the genuine callback, byte for byte: accepted as a hint, changes nothing.
    replay = post(
        genuine.raw, {"X-Sim-Timestamp": stamp, "X-Sim-Signature": genuine.headers["x-sim-signature"]}
    )
    assert replay.status_code == 200, replay.text

    # Forgeries: each is refused with 401 and logged.
    tampered = json.dumps({**genuine.body, "status": "FAILED", "reason": "INVALID_ACCOUNT"}).encode()
    forgeries = {
        "wrong key": (genuine.raw, signed(genuine.raw, "not-the-callback-secret", stamp)),
        "other provider's key": (genuine.raw, signed(genuine.raw, CALLBACK_SECRET["simulator-md5"], stamp)),
        "tampered body": (
            tampered,
            {"X-Sim-Timestamp": stamp, "X-Sim-Signature": genuine.headers["x-sim-signature"]},
        ),
        "no signature": (genuine.raw, {"X-Sim-Timestamp": stamp}),
        "stale": (
            genuine.raw,
            signed(genuine.raw, CALLBACK_SECRET["simulator"], str(int(time.time()) - 3_600)),
        ),
    }
    for name, (raw, headers) in forgeries.items():
        reply = post(raw, headers)
        assert reply.status_code == 401, f"{name}: {reply.status_code} {reply.text}"
    rejected = [r for r in caplog.records if "rejected callback from simulator" in r.getMessage()]
    assert len(rejected) == len(forgeries)
    unknown = post(genuine.raw, {"X-Sim-Timestamp": stamp}, "/v1/providers/nobody/callback")
    assert unknown.status_code == 404

    # Nothing moved: same state and timeline, no second credit, still settled on chain once.
    after = h.status(quote.order_id)
    assert after["state"] == "settled"
    assert after["timeline"] == settled["timeline"]
    assert (after["provider_ref"], after["receipt_hash"]) == (
        settled["provider_ref"],
        settled["receipt_hash"],
    )
    assert h.sim.get("/_sim/ledger").json() == ledger_before
    assert len(h.ledger(quote.order_id)[0]) == 1
    assert h.chain_status(quote.order_id) is OrderStatus.SETTLED
    books = h.books([quote.merchant])
    assert books.merchants[quote.merchant] - before.merchants[quote.merchant] == quote.amount - quote.fee
