"""Chaos: four oracle worker processes on one PostgreSQL database, 500 orders on anvil, provider faults,
and one worker SIGKILLed every few seconds.

Real components, all on loopback:

- anvil from npm (``tests.support.anvil``) with the dev deployment (tUSDC and the escrow);
- PostgreSQL: a fresh database of this test (``tests.support.postgres``), migrated;
- the simulated provider (``cardless simulator``, a real HTTP server in its own process with a ledger
  of every credit), its faults armed per order from the demo's mixed plan (latency, 5xx, replies lost
  after the top-up, asynchronous top-ups, duplicate and forged callbacks, out of stock and low balance
  (fail over), invalid accounts (refund), "not found" while in flight, timeouts);
- two gateway processes (``cardless gateway``) on the same database, quotes alternating between them;
- ``cardless oracle --workers 4``: four worker processes under the pool that restarts them.

While six dev wallets buy 500 orders (tUSDC and ETH) through the gateways, a killer SIGKILLs a random
running worker every 1 to 2 seconds (one that has been running for 3 s, so it dies mid-order, and only
while another one is running as well); the pool starts it again. The workers share nothing but the database.

Then: every order is settled or refunded (and the escrow says the same), no order was topped up twice
on the provider's ledger (and every settled one exactly once, every refunded one never), and not one
wei is out of place on chain: what the escrow holds is exactly what it owes (merchants, fees, buyers),
merchants and fees gained exactly the settled amounts and buyers lost exactly what they paid for
settled orders plus their gas.

The test prints its run time and how the work spread over the worker processes (orders each claimed
for a provider call, orders taken over from a worker that was killed); the processes' logs stay in the
pytest temporary directory it names. ``CHAOS_ORDERS`` and ``CHAOS_SEED`` change the run.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import select
from web3 import HTTPProvider, Web3

from adapters.simulator.config import default_config
from cardless.cli.demo import FAULT_PLAN, pay_quote
from cardless.cli.settings import DEVELOPMENT_RISK
from cardless.cli.system import simulator_secrets
from cardless.devchain.anvil import AnvilNode, dev_accounts
from cardless.devchain.deploy import deploy_dev_system
from cardless.ledger import Order, create_engine_for, session_factory
from cardless.protocol import NATIVE_TOKEN, OrderStatus
from cardless.protocol.artifacts import load_artifact
from oracles.keys import load_or_create_keystore
from tests.support.anvil import running_anvil
from tests.support.books import Books, Totals
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.long, pytest.mark.xdist_group("chaos")]

ROOT = Path(__file__).resolve().parents[2]
ORDERS = int(os.environ.get("CHAOS_ORDERS", "500"))
SEED = int(os.environ.get("CHAOS_SEED", "11"))
WORKERS = 4
GATEWAYS = 2
# The oracle settles the 500 orders about as fast as the gateways take them (since the batched stages),
# so the run lasts little longer than the placing: kills come often enough for at least five of them.
KILL_EVERY = (1.0, 2.0)  # seconds between SIGKILLs, uniformly drawn
MIN_LIFE = 3.0  # a worker is killed once it has run this long: time to work, so it dies mid-order
PASSWORD = "chaos-test-keystore-password"
ACCOUNT_KEY = base64.b64encode(bytes(range(32, 64))).decode()
BUYER_KEYS = (3, 4, 5, 8, 9, 10)  # dev accounts (1 deploys, 2 collects fees, 6 and 7 are the merchants)
# uvicorn closes a connection idle for 5 s, and httpx keeps one 5 s: a request sent on a connection the
# server is closing at that moment gets "Server disconnected" (seen when a payment on a loaded machine
# took about 5 s between two quotes). A client's idle timeout must be below the server's.
IDLE_BELOW_THE_SERVERS = httpx.Limits(keepalive_expiry=2.0)
GAS_FUNDING = 1_000 * 10**18
START_TIMEOUT = 120.0
SETTLE_TIMEOUT = 1200.0  # after the last payment, for every order to close (a bound, not a target)
TERMINAL = frozenset({"settled", "refunded", "reclaimed"})
CLAIM = re.compile(rb"(submit|query):(0x[0-9a-f]{64})")
LINE = re.compile(rb"^w(\d+) (\d+) \| ")
STARTED = re.compile(rb"^pool \| worker (\d+) started: pid (\d+)")
RUNNING = re.compile(rb"^w\d+ (\d+) \| .*oracle running:")
FREED = r"freed (\d+) leases of dead workers"


@dataclasses.dataclass
class Placed:
    index: int
    order_id: str
    sku: str
    token: str  # address
    amount: int
    buyer: str
    fault: str | None


@dataclasses.dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path
    label: str

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 8000) -> str:
        return self.text()[-chars:]


def start_process(args: list[str], env: dict[str, str], log: Path, label: str) -> Process:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cardless.cli.main", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Process(proc, log, label)


def wait_for_line(process: Process, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, process.text())
        if found:
            return found
        if process.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{process.label} never printed {pattern!r}\n{process.tail()}")
        time.sleep(0.1)


def stop_process(process: Process, timeout: float = 30.0) -> int:
    if process.proc.poll() is None:
        process.proc.send_signal(signal.SIGTERM)
        try:
            process.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            process.proc.kill()
            process.proc.wait(10)
            pytest.fail(f"{process.label} ignored SIGTERM for {timeout} s\n{process.tail()}")
    return int(process.proc.returncode)


@dataclasses.dataclass
class Spread:
    """How the provider work spread over the worker processes, read from the pool's log."""

    claims: dict[int, Counter[str]]  # pid -> order id -> claims
    slot_of: dict[int, int]  # pid -> slot
    killed: list[int]  # pids SIGKILLed by the test

    @classmethod
    def read(cls, log: bytes, killed: list[int]) -> Spread:
        claims: dict[int, Counter[str]] = defaultdict(Counter)
        slot_of: dict[int, int] = {}
        for line in log.splitlines():
            started = STARTED.match(line)
            if started:
                slot_of[int(started[2])] = int(started[1])
            prefix = LINE.match(line)
            if prefix:
                for _, order_id in CLAIM.findall(line):
                    claims[int(prefix[2])][order_id.decode()] += 1
        return cls(dict(claims), slot_of, list(killed))

    def handlers(self) -> dict[str, list[int]]:
        """Order id -> the processes that claimed it, in order of their pids' first claim."""
        by_order: dict[str, list[int]] = defaultdict(list)
        for pid, orders in self.claims.items():
            for order_id in orders:
                by_order[order_id].append(pid)
        return by_order

    def per_slot(self) -> dict[int, int]:
        """Worker slot (its successive processes together) -> distinct orders it claimed."""
        orders: dict[int, set[str]] = defaultdict(set)
        for pid, claimed in self.claims.items():
            orders[self.slot_of.get(pid, 0)].update(claimed)
        return {slot: len(ids) for slot, ids in sorted(orders.items())}


class Chaos:
    def __init__(self, var: Path, postgres: PostgresServer) -> None:
        self.var = var
        self.logs = var / "logs"
        self.logs.mkdir(parents=True)
        self.postgres = postgres
        self.stack: list[Any] = []
        self.placed: list[Placed] = []
        self.gas_spent: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.killed: list[int] = []
        self.kill_times: list[float] = []
        self.ready_since: dict[int, float] = {}  # pid -> when the test first saw it running
        self.held_at_death: dict[int, list[str]] = {}  # killed pid -> orders it held a lease on
        self.gateways: list[Process] = []

    # ------------------------------------------------------------------ start / stop

    def start(self) -> Chaos:
        keys = self.var / "keys"
        quote = load_or_create_keystore(keys / "quote-signer.json", PASSWORD, scrypt_n=2**10)
        oracle = load_or_create_keystore(keys / "oracle-signer.json", PASSWORD, scrypt_n=2**10)
        gas = load_or_create_keystore(keys / "gas-payer.json", PASSWORD, scrypt_n=2**10)

        anvil = running_anvil()
        self.node: AnvilNode = anvil.__enter__()
        self.stack.append(lambda: anvil.__exit__(None, None, None))
        self.w3 = Web3(HTTPProvider(self.node.url, request_kwargs={"timeout": 60}))
        accounts = [a.address for a in dev_accounts()]
        funding = self.w3.eth.send_transaction({"from": accounts[0], "to": gas.address, "value": GAS_FUNDING})
        assert self.w3.eth.wait_for_transaction_receipt(funding)["status"] == 1
        self.deployment = deploy_dev_system(
            self.w3,
            quote_signer=quote.address,
            oracle_signer=oracle.address,
            owner=accounts[0],
            fee_recipient=accounts[1],
            funded_accounts=accounts,
            rpc_url=self.node.url,
        )
        deployment_file = self.var / "deployment.json"
        self.deployment.save(deployment_file)
        self.escrow = self.w3.eth.contract(
            address=self.deployment.escrow, abi=load_artifact("CardlessEscrow").abi
        )
        self.chain_id = self.w3.eth.chain_id

        # The provider in a process of its own (`cardless simulator`), as a real one would be: in this
        # process it would share the interpreter with six busy wallets.
        config = default_config()
        sim_log = self.logs / "simulator.log"
        simulator = start_process(["simulator", "--port", "0"], os.environ.copy(), sim_log, "simulator")
        self.stack.append(lambda: stop_process(simulator))
        self.simulator_url = wait_for_line(simulator, r"simulated provider at (http://127\.0\.0\.1:\d+)")[1]
        self.sim = httpx.Client(base_url=self.simulator_url, timeout=30, limits=IDLE_BELOW_THE_SERVERS)
        self.stack.append(self.sim.close)

        database = self.postgres.database()
        self.database_url = database.__enter__()
        self.stack.append(lambda: database.__exit__(None, None, None))
        engine = create_engine_for(self.database_url)
        self.stack.append(engine.dispose)
        self.sessions = session_factory(engine)

        # The bundled provider files with roomier client timeouts. A worker's tick runs its database and
        # JSON-RPC calls on the event loop, so on a loaded machine (the suite shares two cores) a 2 s
        # connect timeout expires while the loop is busy and opens the circuit breaker: a fault of
        # the machine, not of the provider. The simulator's own `timeout` fault still times out.
        provider_files = []
        for name in ("simulator.toml", "simulator-md5.toml"):
            text = (ROOT / "adapters" / "providers" / name).read_text()
            for old, new in (
                ("connect = 2.0", "connect = 10.0"),
                ("pool = 2.0", "pool = 10.0"),
                ("read = 10.0", "read = 15.0"),
            ):
                assert old in text, f"{name} no longer says {old}"
                text = text.replace(old, new)
            (self.var / name).write_text(text)
            provider_files.append(str(self.var / name))

        self.env = {
            **os.environ,
            "CARDLESS_ENVIRONMENT": "test",
            # A few wallets place every order in seconds: the shop defaults' velocity rules would hold them.
            "CARDLESS_RISK_RULES": DEVELOPMENT_RISK.model_dump_json(),
            "CARDLESS_VAR_DIR": str(self.var),
            "CARDLESS_CHAIN_RPC_URL": self.node.url,
            "CARDLESS_DEPLOYMENT_FILE": str(deployment_file),
            "CARDLESS_DATABASE_URL": self.database_url,
            "CARDLESS_PROVIDER_BASE_URL": self.simulator_url,
            "CARDLESS_PROVIDER_FILES": json.dumps(provider_files),
            "CARDLESS_KEYSTORE_PASSWORD": PASSWORD,
            "CARDLESS_ACCOUNT_KEY": ACCOUNT_KEY,
            "CARDLESS_GATEWAY_PORT": "0",
            "CARDLESS_NOT_FOUND_GRACE_SECONDS": "2",
            "CARDLESS_QUOTE_RATE_PER_CLIENT": "100000/minute",
            "CARDLESS_QUOTE_RATE_PER_BUYER": "100000/minute",
            "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1",
            **simulator_secrets(config),
        }
        self.env.pop("CARDLESS_FAILPOINTS", None)
        for i in range(GATEWAYS):
            gateway = start_process(
                ["gateway"], self.env, self.logs / f"gateway-{i + 1}.log", f"gateway {i + 1}"
            )
            self.gateways.append(gateway)
            self.stack.append(lambda g=gateway: stop_process(g))
        self.gateway_urls = [
            wait_for_line(g, r"gateway running: (http://127\.0\.0\.1:\d+)")[1] for g in self.gateways
        ]
        self.http = [
            httpx.Client(base_url=url, timeout=60, limits=IDLE_BELOW_THE_SERVERS) for url in self.gateway_urls
        ]
        for client in self.http:
            self.stack.append(client.close)
        # Asynchronous top-ups call back to the first gateway (a hint to query at once).
        self.env["CARDLESS_PUBLIC_URL"] = self.gateway_urls[0]
        self.pool = start_process(
            ["oracle", "--workers", str(WORKERS)], self.env, self.logs / "oracle-pool.log", "oracle pool"
        )
        self.stack.append(self._kill_pool)

        catalogue = self.http[0].get("/v1/catalogue").raise_for_status().json()
        self.merchants = [m["address"] for m in catalogue["merchants"]]
        self.choices = [
            (sku["id"], price["token"], int(price["amount"]))
            for sku in catalogue["skus"]
            for price in sku["prices"]
            if sku["id"] != "pubg-660uc"  # sold out everywhere: refused at the quote (tests/gateway)
        ]
        self.tokens = [t.address for t in self.deployment.tokens]
        self.buyers: list[LocalAccount] = [dev_accounts()[k - 1] for k in BUYER_KEYS]
        self.books = Books(self.w3, self.escrow)
        return self

    def _kill_pool(self) -> None:
        """Teardown after a failure: the pool and every worker it still has."""
        if self.pool.proc.poll() is None:
            for pid in self.live_workers().values():
                os.kill(pid, signal.SIGKILL)
            self.pool.proc.kill()
            self.pool.proc.wait(10)

    def stop(self) -> None:
        while self.stack:
            try:
                self.stack.pop()()
            except Exception as exc:  # keep stopping the rest
                print(f"chaos teardown: {exc!r}", file=sys.stderr)

    # ------------------------------------------------------------------ the pool

    def pool_log(self) -> bytes:
        return self.pool.log.read_bytes()

    def live_workers(self, *, ready: bool = False) -> dict[int, int]:
        """Slot -> pid of each worker process the pool says it started and that is still running (with
        ``ready``: that also said it is running, i.e. it is past its start-up and working)."""
        latest: dict[int, int] = {}
        running: set[int] = set()
        for line in self.pool_log().splitlines():
            started = STARTED.match(line)
            if started:
                latest[int(started[1])] = int(started[2])
            up = RUNNING.match(line)
            if up:
                running.add(int(up[1]))
        now = time.monotonic()
        for pid in running:
            self.ready_since.setdefault(pid, now)
        live = {}
        for slot, pid in latest.items():
            if ready and (pid not in running or now - self.ready_since[pid] < MIN_LIFE):
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            if pid not in self.killed:
                live[slot] = pid
        return live

    # ------------------------------------------------------------------ orders

    def place_all(self, rng: random.Random) -> None:
        """Six wallets buy ORDERS orders, through alternating gateways, with the demo's mixed faults."""
        plan = []
        for index in range(ORDERS):
            sku, symbol, amount = self.choices[rng.randrange(len(self.choices))]
            plan.append((index, sku, symbol, amount, FAULT_PLAN[index % len(FAULT_PLAN)]))
        errors: list[BaseException] = []

        def buyer_loop(b: int) -> None:
            buyer = self.buyers[b]
            accounts = random.Random(SEED * 100 + b)
            try:
                for index, sku, symbol, _, (fault, options) in plan[b :: len(self.buyers)]:
                    http = self.http[index % len(self.http)]
                    account = str(accounts.randrange(10_000_000, 99_999_998))
                    quote = http.post(
                        "/v1/quotes",
                        json={"sku": sku, "account": account, "token": symbol, "buyer": buyer.address},
                    )
                    assert quote.status_code == 201, quote.text
                    body = quote.json()
                    order_id = body["order_id"]
                    extra = dict(options)
                    if extra.pop("with_async", False):
                        self.arm("async", order_id)
                    if fault:
                        self.arm(fault, order_id, **extra)
                    _, gas = pay_quote(self.w3, buyer, body, self.chain_id)
                    placed = Placed(
                        index,
                        order_id,
                        sku,
                        Web3.to_checksum_address(body["token"]["address"]),
                        int(body["order"]["amount"]),
                        buyer.address,
                        fault,
                    )
                    with self.lock:
                        self.gas_spent[buyer.address] += gas
                        self.placed.append(placed)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [
            threading.Thread(target=buyer_loop, args=(b,), name=f"buyer-{b}") for b in range(len(self.buyers))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, f"placing orders failed: {errors[0]!r}"
        assert len(self.placed) == ORDERS

    def arm(self, mode: str, order_id: str, **options: Any) -> None:
        self.sim.post(
            "/_sim/faults", json={"mode": mode, "order_no": order_id, "count": 1, **options}
        ).raise_for_status()

    def leases_of(self, pid: int) -> list[str]:
        """Orders whose lease a worker process holds (worker ids are hostname-pid-random)."""
        with self.sessions() as session:
            held = session.execute(
                select(Order.id).where(Order.lease_owner.contains(f"-{pid}-", autoescape=True))
            )
            return list(held.scalars())

    def states(self) -> dict[str, str]:
        with self.sessions() as session:
            return dict(session.execute(select(Order.id, Order.state)).all())


@pytest.fixture
def chaos(tmp_path: Path, postgres: PostgresServer) -> Iterator[Chaos]:
    run = Chaos(tmp_path / "chaos", postgres)
    try:
        run.start()
        yield run
    finally:
        run.stop()


def test_four_workers_on_postgresql_survive_sigkills_with_500_orders(
    chaos: Chaos, request: pytest.FixtureRequest
) -> None:
    began = time.monotonic()
    wait_for_line(chaos.pool, r"oracle running: 4 workers")
    rng = random.Random(SEED)
    kill_rng = random.Random(SEED + 1)
    before = {
        t: chaos.books.totals(t, merchants=chaos.merchants, buyers=[b.address for b in chaos.buyers])
        for t in chaos.tokens
    }

    placing_errors: list[BaseException] = []

    def place() -> None:
        try:
            chaos.place_all(rng)
        except BaseException as exc:
            placing_errors.append(exc)

    placing = threading.Thread(target=place, name="placer")
    placing.start()

    # The killer: while orders are being placed or are open, SIGKILL a random running worker every few
    # seconds (the pool restarts it). Bounded by the time allowed for the whole run.
    deadline = time.monotonic() + SETTLE_TIMEOUT + 600
    next_kill = time.monotonic() + kill_rng.uniform(*KILL_EVERY)
    placed_at: float | None = None
    while time.monotonic() < deadline:
        states = chaos.states()
        open_orders = [o for o in chaos.placed if states.get(o.order_id) not in TERMINAL]
        if not placing.is_alive():
            placed_at = placed_at or time.monotonic()
            if placing_errors or not open_orders:
                break
            if time.monotonic() - placed_at > SETTLE_TIMEOUT:
                break
        assert chaos.pool.proc.poll() is None, f"the pool exited\n{chaos.pool.tail()}"
        if time.monotonic() >= next_kill:
            # A worker past its start-up, and never the last one working: on a loaded machine a start-up
            # can take longer than the interval, and killing only starting workers would test nothing.
            live = chaos.live_workers(ready=True)
            if len(live) >= 2:
                slot = kill_rng.choice(sorted(live))
                os.kill(live[slot], signal.SIGKILL)
                chaos.killed.append(live[slot])
                chaos.kill_times.append(time.monotonic())
                chaos.held_at_death[live[slot]] = chaos.leases_of(live[slot])
            next_kill = time.monotonic() + kill_rng.uniform(*KILL_EVERY)
        time.sleep(0.2)
    placing.join(60)
    assert not placing_errors, f"placing orders failed: {placing_errors[0]!r}"
    elapsed = time.monotonic() - began
    settle_s = time.monotonic() - (placed_at or time.monotonic())

    # Stop the pool cleanly (SIGTERM: every worker finishes what it started) before reading everything.
    assert stop_process(chaos.pool) == 0, chaos.pool.tail()
    states = chaos.states()
    spread = Spread.read(chaos.pool_log(), chaos.killed)
    report = summary(chaos, states, spread, elapsed, settle_s)
    (chaos.var / "summary.json").write_text(json.dumps(report, indent=2))
    _print(request, report, chaos)

    problems = check(chaos, states, before)
    assert not problems, "\n".join(problems[:40]) + f"\n(logs: {chaos.logs})"
    assert len(chaos.killed) >= 5, f"only {len(chaos.killed)} SIGKILLs"
    assert taken_over(chaos, states), "no worker was killed holding a lease: nothing was taken over"
    assert sum(1 for n in spread.per_slot().values() if n) == WORKERS, spread.per_slot()


def taken_over(chaos: Chaos, states: dict[str, str]) -> set[str]:
    """Orders a killed worker held a lease on at its death, and that were closed all the same."""
    held = {order_id for orders in chaos.held_at_death.values() for order_id in orders}
    return {order_id for order_id in held if states.get(order_id) in TERMINAL}


def check(chaos: Chaos, states: dict[str, str], before: Mapping[str, Totals]) -> list[str]:
    """Every order settled or refunded (ledger and escrow agree), no double top-up, no wei astray."""
    problems: list[str] = []
    ledger = chaos.sim.get("/_sim/ledger").raise_for_status().json()
    credits = Counter(entry["order_no"] for entry in ledger["credits"])
    for order in chaos.placed:
        state = states.get(order.order_id)
        if state not in ("settled", "refunded"):
            problems.append(f"{order.order_id} (fault {order.fault}): {state}, not settled or refunded")
            continue
        status = OrderStatus(chaos.escrow.functions.orderStatus(bytes.fromhex(order.order_id[2:])).call())
        if status.name.lower() != state:
            problems.append(f"{order.order_id}: ledger {state}, escrow {status.name}")
        want = 1 if state == "settled" else 0
        if credits[order.order_id] != want:
            problems.append(
                f"{order.order_id} ({state}, fault {order.fault}): {credits[order.order_id]} credits on the "
                f"provider's ledger" + (" (DOUBLE TOP-UP)" if credits[order.order_id] > 1 else "")
            )
    buyers = [b.address for b in chaos.buyers]
    gas = sum(chaos.gas_spent.values())
    for token in chaos.tokens:
        after = chaos.books.totals(token, merchants=chaos.merchants, buyers=buyers)
        settled = sum(o.amount for o in chaos.placed if o.token == token and states[o.order_id] == "settled")
        paid = sum(o.amount for o in chaos.placed if o.token == token)
        refunded = sum(
            o.amount for o in chaos.placed if o.token == token and states[o.order_id] == "refunded"
        )
        gained = (after.merchants - before[token].merchants) + (after.fees - before[token].fees)
        if gained != settled:
            problems.append(f"{token}: merchants + fees gained {gained} wei, settled orders were {settled}")
        moved = after.buyers - before[token].buyers
        expected = -paid + refunded - (gas if token == NATIVE_TOKEN else 0)
        if moved != expected:
            problems.append(f"{token}: buyers moved {moved} wei, expected {expected}")
        # Solvency: what the escrow holds is exactly what it owes (no order is open any more).
        holds = chaos.books.wallet(token, chaos.escrow.address)
        owed = (
            sum(chaos.books.in_escrow(token, m) for m in chaos.merchants)
            + chaos.books.fees(token)
            + sum(chaos.books.in_escrow(token, b) for b in buyers)
        )
        if holds != owed:
            problems.append(f"{token}: the escrow holds {holds} wei, owes {owed}")
    return problems


def summary(
    chaos: Chaos, states: dict[str, str], spread: Spread, elapsed: float, settle_s: float
) -> dict[str, Any]:
    log = chaos.pool.text()
    final = Counter(states[o.order_id] for o in chaos.placed)
    return {
        "orders": len(chaos.placed),
        "states": dict(final),
        "faults": dict(Counter(o.fault or "none" for o in chaos.placed)),
        "run_s": round(elapsed, 1),
        "after_last_payment_s": round(settle_s, 1),
        "sigkills": len(chaos.killed),
        "mean_s_between_sigkills": round(
            (chaos.kill_times[-1] - chaos.kill_times[0]) / (len(chaos.kill_times) - 1), 1
        )
        if len(chaos.kill_times) > 1
        else None,
        "worker_processes": len(spread.slot_of),
        "orders_claimed_per_worker_slot": spread.per_slot(),
        "orders_claimed_per_process": {
            f"w{spread.slot_of.get(pid, 0)}/{pid}{' (killed)' if pid in chaos.killed else ''}": len(orders)
            for pid, orders in sorted(spread.claims.items())
        },
        "orders_claimed_by_several_processes": sum(1 for p in spread.handlers().values() if len(p) > 1),
        # Leases a worker held when it was SIGKILLed: each of those orders was finished by another.
        "leases_held_by_killed_workers": sum(len(v) for v in chaos.held_at_death.values()),
        "orders_taken_over_from_killed_workers": len(taken_over(chaos, states)),
        "leases_freed_at_restart": sum(
            int(n) for n in re.findall(r"freed (\d+) leases of dead workers", log)
        ),
        "failed_ticks_retried": log.count("oracle tick failed"),
        "database": "postgresql",
        "chain": "anvil",
    }


def _print(request: pytest.FixtureRequest, report: dict[str, Any], chaos: Chaos) -> None:
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_sep("-", "chaos: 4 workers, PostgreSQL, anvil")
        for key, value in report.items():
            reporter.write_line(f"{key:<36} {value}")
        reporter.write_line(f"logs: {chaos.logs}")
