"""The ceiling (issue 12): the settled rate an oracle costing nothing would reach on this machine.

    PYTHONPATH=. python -m bench.ceiling [--orders N] [--batch 50]  -> bench/results/ceiling.json

One run, two phases, each on a fresh system (bench.e2e's ``Stack``: anvil, the simulated provider in a
process of its own, the gateway in this process):

- ``a``: bench.e2e's phase a, unchanged: the buyers' ``pay`` transactions with no oracle, ``raw_pay_tps``;
- ``z``: the same buyers paying as fast as the node takes them (bench.e2e's ``bmax`` load), but instead of
  ``cardless oracle`` a minimal **driver** process (``python -m bench.ceiling driver``) does only the
  external work every order needs. Everything the oracle would compute is done here, in this process,
  before the timer (the first pay) starts, while the buyers wait (stopped, ``SIGSTOP``, between their
  last quote and signing their pays; resumed once the driver has read the plan):
  each order's provider top-up request (the simulator adapter's own signed body, ``HttpAdapter``) and
  the settlement transactions: the orders cut into batches of ``--batch`` (the oracle's ``max_batch``),
  each batch's ``FulfilmentBatch`` proof signed with the oracle's proof key, ``settleBatch`` encoded as
  ``oracles/settlement.py`` encodes it, and the transaction signed with the gas key at sequential
  nonces. The driver then only polls ``eth_getLogs`` for ``OrderPaid`` over the blocks since its last
  poll, sends each paid order's top-up to the simulator, sends a batch's raw transaction once all its
  orders are paid and topped up (batches in nonce order), and polls that transaction's receipt. An
  order is settled when the driver sees its batch's receipt (there is no ledger).

Settled orders per second = settled / (last settlement seen - first pay sent), as in bench.e2e. The
machine table gives each component's CPU per order over the same window (bench.e2e's sampler). After
phase z every order's ``orderStatus`` is read (all must be ``Settled``) and the escrow's merchant and
fee balances must have grown by exactly the orders' amounts less fees and their fees.

The oracle-CPU budget for ratio 0.8: at a settled rate of 0.8 x raw the phase of N orders lasts
``T = N / (0.8 raw)`` seconds, the two cores offer ``cores x T`` CPU seconds, of which everything but the
oracle costs what it cost per order in phase z (driver excluded: its work is the oracle's):
``budget_ms = (cores x T - N x non_oracle_ms / 1000) / N x 1000 = 1000 cores / (0.8 raw) - non_oracle_ms``.

The driver is bench code: nothing shipped imports ``bench``, and no test uses it for the oracle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.e2e import RESULTS, ROOT, Stack, _loadgen, _MachineSampler, _per_order, run_phase
from bench.loadgen import _Connection, _Rpc, load_info, percentiles

TARGET_RATIO = 0.8
OURS = ("anvil", "provider", "load generator", "bench (gateway)")
"""Phase z's components besides the driver; the sampler's "oracle", "postgresql" and "other" there are
other processes of the shared machine (other benches, other helpers' systems), not this run's."""
SETTLE_GAS_BASE = 120_000
SETTLE_GAS_PER_ORDER = 30_000
"""The settlement transactions' gas limit: ~12,000-16,000 per order measured (docs/gas.md), unused gas
is not charged."""
TOPUP_CONCURRENCY = 16
"""Top-ups in flight at most: the oracle's ``submit_concurrency``."""


# ----------------------------------------------------------------------------- plan (this process)


def _order_rows(stack: Stack) -> list[Any]:
    from sqlalchemy import select

    from cardless.ledger.models import Order

    with stack.system.sessions() as session:
        rows = list(session.execute(select(Order)).scalars())
        session.expunge_all()
    return rows


def build_plan(stack: Stack, rows: list[Any], *, batch: int, from_block: int) -> dict[str, Any]:
    """Everything the oracle would compute for ``rows``, done before the first pay: the top-up request
    bodies (signed by the simulator's adapter) and the settlement transactions, signed."""
    import httpx
    from eth_utils import keccak

    from cardless import protocol
    from cardless.ledger.store import order_from_row
    from oracles.rawabi import RawFunction

    system = stack.system
    w3 = system.w3
    deployment = system.deployment
    domain = deployment.domain
    proof_key = system.keys.require("oracle")
    gas_key = system.keys.require("gas")
    escrow = system.escrow()
    threshold = escrow.functions.oracleThreshold().call()
    if threshold != 1:
        raise RuntimeError(f"the ceiling signs with one proof key; the escrow's threshold is {threshold}")
    settle_one = RawFunction.of(escrow.abi, "settle")
    settle_batch = RawFunction.of(escrow.abi, "settleBatch")
    latest = w3.eth.get_block("latest")
    base = int(latest.get("baseFeePerGas", 0))
    fee = {"maxFeePerGas": max(4 * base, 50 * 10**9), "maxPriorityFeePerGas": 10**9}
    nonce = w3.eth.get_transaction_count(gas_key.address, "pending")

    # The buyers take quote N-1 first and pay in index order (bench/loadgen.py): newest quote first is
    # about the order the pays arrive in, so a batch is complete about when its last pay is mined.
    rows = sorted(rows, key=lambda r: r.created_at, reverse=True)
    clients: list[httpx.AsyncClient] = []
    adapters = system._adapters(clients)
    orders: list[dict[str, Any]] = []
    for row in rows:
        provider = row.providers[row.provider_index]
        adapter = adapters[provider]
        operation = adapter.config.operations.by_name("submit")
        values = {
            "order_key": row.id,
            "sku": row.sku,
            "account": system.cipher.decrypt(row.account_ciphertext, row.id),
            "callback_url": f"{system.gateway_url}/v1/providers/{provider}/callback",
        }
        body = adapter._body(adapter._signed(operation, values))  # the bytes the adapter posts
        orders.append({"id": row.id, "path": operation.path, "body": body.decode()})
    batches: list[dict[str, Any]] = []
    chain_now = int(latest["timestamp"])
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        refs = [order_from_row(r) for r in chunk]
        fulfilments = [
            protocol.Fulfilment(
                order_id=protocol.order_id_from_hex(r.id),
                # what the oracle hashes is the provider's receipt, known only after the top-up: a stand-in
                # of the same size (the escrow stores and checks nothing of it but its presence)
                receipt_hash=keccak(b"cardless-ceiling-receipt:" + bytes.fromhex(r.id[2:])),
                fulfilled_at=min(chain_now, r.fulfilment_deadline),
            )
            for r in chunk
        ]
        if len(chunk) == 1:
            digest = protocol.fulfilment_digest(domain, fulfilments[0])
            signature = protocol.sign_digest(proof_key.key, digest)
            data = settle_one.encode(
                refs[0].as_ref_tuple(), fulfilments[0].as_tuple(), [proof_key.address], [signature]
            )
        else:
            signature = protocol.sign_digest(proof_key.key, protocol.batch_digest(domain, fulfilments))
            data = settle_batch.encode(
                [o.as_ref_tuple() for o in refs],
                [f.as_tuple() for f in fulfilments],
                [proof_key.address],
                [signature],
            )
        tx = {
            "to": deployment.escrow,
            "value": 0,
            "data": data,
            "gas": SETTLE_GAS_BASE + SETTLE_GAS_PER_ORDER * len(chunk),
            "nonce": nonce + len(batches),
            "chainId": domain.chain_id,
            **fee,
        }
        signed = gas_key.sign_transaction(tx)
        batches.append(
            {
                "orders": [r.id for r in chunk],
                "raw": "0x" + bytes(signed.raw_transaction).hex(),
                "hash": "0x" + bytes(signed.hash).hex(),
            }
        )
    paid_topic = (
        "0x"
        + keccak(
            text="OrderPaid(bytes32,address,address,address,uint256,uint16,uint48,uint48,bytes32,bytes32,address)"
        ).hex()
    )
    return {
        "rpc": deployment.rpc_url,
        "provider": system.simulator.url,
        "escrow": deployment.escrow,
        "paid_topic": paid_topic,
        "from_block": from_block,
        "orders": orders,
        "batches": batches,
    }


# ----------------------------------------------------------------------------- the driver (its process)


async def _drive(plan: dict[str, Any], poll: float, timeout: float) -> dict[str, Any]:
    from urllib.parse import urlsplit

    rpc = _Rpc(plan["rpc"])
    where = urlsplit(plan["provider"])
    provider_idle: list[_Connection] = []
    slots = asyncio.Semaphore(TOPUP_CONCURRENCY)
    requests = {o["id"]: (o["path"], o["body"].encode()) for o in plan["orders"]}
    batches = plan["batches"]
    batch_of = {order_id: k for k, b in enumerate(batches) for order_id in b["orders"]}
    missing = [len(b["orders"]) for b in batches]
    paid_seen: dict[str, float] = {}
    topped_up: dict[str, float] = {}
    settled: dict[str, float] = {}
    topup_failures: list[str] = []
    reverted: list[str] = []
    sent_at: dict[int, float] = {}
    ready = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    polls = 0

    async def topup(order_id: str) -> None:
        path, body = requests[order_id]
        async with slots:
            if provider_idle:
                connection = provider_idle.pop()
            else:
                connection = _Connection(where.hostname or "", where.port or 80)
            try:
                status, payload = await connection.request("POST", path, body)
            except BaseException:
                connection.close()
                raise
            provider_idle.append(connection)
        answer = json.loads(payload) if payload else {}
        if status != 200 or answer.get("status") != "SUCCESS":
            topup_failures.append(f"{order_id}: HTTP {status} {payload[:120]!r}")
            return
        topped_up[order_id] = time.time()
        k = batch_of[order_id]
        missing[k] -= 1
        if missing[k] == 0:
            ready.set()

    async def receipt(k: int) -> None:
        found = await rpc.receipt(batches[k]["hash"], timeout=timeout)
        when = time.time()
        if int(found["status"], 16) != 1:
            reverted.append(batches[k]["hash"])
        for order_id in batches[k]["orders"]:
            settled[order_id] = when

    async def sender() -> None:
        # in nonce order, each once all its orders are paid and topped up (the oracle's gapless nonces)
        for k, b in enumerate(batches):
            while missing[k] > 0:
                ready.clear()
                await ready.wait()
            await rpc.call("eth_sendRawTransaction", b["raw"])
            sent_at[k] = time.time()
            task = asyncio.create_task(receipt(k))
            tasks.add(task)

    deadline = time.monotonic() + timeout
    send = asyncio.create_task(sender())
    start = int(plan["from_block"])
    topic = plan["paid_topic"]
    wanted = set(requests)
    while len(paid_seen) < len(wanted) and time.monotonic() < deadline:
        head = int(await rpc.call("eth_blockNumber"), 16)
        if head >= start:
            logs = await rpc.call(
                "eth_getLogs",
                {"address": plan["escrow"], "topics": [topic], "fromBlock": hex(start), "toBlock": hex(head)},
            )
            polls += 1
            now = time.time()
            for log in logs:
                order_id = log["topics"][1]
                if order_id in wanted and order_id not in paid_seen:
                    paid_seen[order_id] = now
                    task = asyncio.create_task(topup(order_id))
                    tasks.add(task)
            start = head + 1
        await asyncio.sleep(poll)
    try:
        await asyncio.wait_for(send, max(1.0, deadline - time.monotonic()))
        while len(settled) < len(wanted) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    except TimeoutError:
        pass
    for task in tasks:
        task.cancel()
    rpc.close()
    for connection in provider_idle:
        connection.close()
    used = os.times()
    return {
        "orders": len(wanted),
        "batches": len(batches),
        "log_polls": polls,
        "paid_seen": paid_seen,
        "topped_up": topped_up,
        "settled": settled,
        "batch_sent": {str(k): t for k, t in sent_at.items()},
        "topup_failures": topup_failures[:10],
        "topup_failure_count": len(topup_failures),
        "reverted": reverted,
        "driver_cpu_s": round(used.user + used.system, 3),
    }


def driver_main(args: argparse.Namespace) -> int:
    plan_path = Path(args.plan)
    deadline = time.monotonic() + args.timeout
    while not plan_path.exists():  # written whole (renamed into place) by the bench once quoted
        if time.monotonic() > deadline:
            raise SystemExit("no plan")
        time.sleep(0.05)
    plan = json.loads(plan_path.read_text())
    Path(args.ready).write_text(str(time.time()))
    result = asyncio.run(_drive(plan, args.poll, args.timeout))
    Path(args.out).write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------- phase z (this process)


def _wait_for_quotes(stack: Stack, orders: int, loadgen: threading.Thread, timeout: float) -> list[Any]:
    from sqlalchemy import func, select

    from cardless.ledger.models import Order

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with stack.system.sessions() as session:
            count = session.execute(select(func.count()).select_from(Order)).scalar_one()
        if count >= orders or not loadgen.is_alive():
            return _order_rows(stack)
        time.sleep(0.05)
    raise TimeoutError(f"the buyers did not take {orders} quotes in {timeout} s")


def _loadgen_pid() -> int:
    """The buyers' process (``python -m bench.loadgen buyers``), a child of this one."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == me and b"bench.loadgen\0buyers" in cmdline:
            return int(entry.name)
    raise RuntimeError("the buyers' process was not found")


def _chain_checks(stack: Stack, rows: list[Any], before: dict[str, int]) -> dict[str, Any]:
    """Every order's ``orderStatus``, and the merchant and fee balances' growth against the orders'."""
    from eth_abi import decode

    from cardless import protocol
    from cardless.ledger.store import order_from_row
    from oracles.rawabi import call_batch, encode_call, selector

    system = stack.system
    escrow = system.escrow()
    status_of = selector("orderStatus(bytes32)")
    statuses: dict[str, int] = {}
    for start in range(0, len(rows), 200):
        chunk = rows[start : start + 200]
        calls = [encode_call(status_of, ("bytes32",), (protocol.order_id_from_hex(r.id),)) for r in chunk]
        for row, result in zip(chunk, call_batch(system.w3, escrow.address, calls), strict=True):
            statuses[row.id] = int(decode(["uint8"], result)[0])
    refs = [order_from_row(r) for r in rows]
    merchant_due: dict[tuple[str, str], int] = {}
    fee_due: dict[str, int] = {}
    for o in refs:
        key = (o.merchant, o.token)
        merchant_due[key] = merchant_due.get(key, 0) + o.amount - o.fee
        fee_due[o.token] = fee_due.get(o.token, 0) + o.fee
    after = _balances(stack, rows)
    merchant_got = {
        k: after[f"merchant:{k[0]}:{k[1]}"] - before[f"merchant:{k[0]}:{k[1]}"] for k in merchant_due
    }
    fee_got = {t: after[f"fee:{t}"] - before[f"fee:{t}"] for t in fee_due}
    settled = sum(s == protocol.OrderStatus.SETTLED for s in statuses.values())
    return {
        "orders_settled_on_chain": settled,
        "orders_not_settled_on_chain": len(rows) - settled,
        "merchant_credit_expected": sum(merchant_due.values()),
        "merchant_credit_on_chain": sum(merchant_got.values()),
        "fee_credit_expected": sum(fee_due.values()),
        "fee_credit_on_chain": sum(fee_got.values()),
        "balances_match": merchant_got == merchant_due and fee_got == fee_due,
    }


def _balances(stack: Stack, rows: list[Any]) -> dict[str, int]:
    escrow = stack.system.escrow()
    found: dict[str, int] = {}
    for merchant, token in sorted({(r.merchant, r.token) for r in rows}):
        found[f"merchant:{merchant}:{token}"] = escrow.functions.balanceOf(merchant, token).call()
        found[f"fee:{token}"] = escrow.functions.feeBalance(token).call()
    return found


def run_zero(work: Path, *, orders: int, batch: int, poll: float, timeout: float) -> dict[str, Any]:
    phase_dir = work / "z"
    phase_dir.mkdir()
    stack = Stack(phase_dir, chain="anvil", workers=0)
    driver: subprocess.Popen[bytes] | None = None
    try:
        stack.start()
        from_block = stack.system.w3.eth.block_number + 1
        plan_path, ready_path = phase_dir / "plan.json", phase_dir / "ready"
        out_path = phase_dir / "driver.json"
        cmd = [
            sys.executable,
            "-m",
            "bench.ceiling",
            "driver",
            "--plan",
            str(plan_path),
            "--ready",
            str(ready_path),
            "--out",
            str(out_path),
            "--poll",
            str(poll),
            "--timeout",
            str(timeout),
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with (phase_dir / "driver.log").open("wb") as log:
            driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        machine = _MachineSampler(None)
        gen: dict[str, Any] = {}

        def buyers() -> None:
            gen.update(_loadgen(stack, orders, 0.0, phase_dir / "loadgen.json"))

        loadgen = threading.Thread(target=buyers)
        loadgen.start()
        rows = _wait_for_quotes(stack, orders, loadgen, timeout)
        # The last quote is in the ledger before its answer leaves: the buyers have yet to sign their N
        # pays. They wait, stopped, while the plan is made and the driver reads it, so the timer (their
        # first pay) starts with all of the oracle's computing done, however loaded the machine is.
        buyers_pid = _loadgen_pid()
        os.kill(buyers_pid, signal.SIGSTOP)
        try:
            before = _balances(stack, rows)
            plan = build_plan(stack, rows, batch=batch, from_block=from_block)
            partial = plan_path.with_suffix(".part")
            partial.write_text(json.dumps(plan))
            partial.rename(plan_path)
            while not ready_path.exists() and driver.poll() is None:
                time.sleep(0.01)
            planned_at = time.time()
        finally:
            os.kill(buyers_pid, signal.SIGCONT)
        loadgen.join()
        if driver.wait(timeout=timeout) != 0:
            raise RuntimeError(f"the driver failed; see {phase_dir / 'driver.log'}")
        driven = json.loads(out_path.read_text())
        settled: dict[str, float] = driven["settled"]
        window = machine.window(gen["pay_start"], max(settled.values()) if settled else None)
        pays = {p["order_id"]: p["sent_at"] for p in gen["pays"]}
        latencies = [(settled[o] - pays[o]) * 1000 for o in settled if o in pays]
        span = max(settled.values()) - gen["pay_start"] if settled else 0.0
        p = percentiles(latencies)
        checks = _chain_checks(stack, [r for r in rows if r.id in pays], before)
        driver_ready = float(ready_path.read_text())
        return {
            "phase": "z",
            "chain": "anvil",
            "orders": orders,
            "offered_rate": "max",
            "batch": batch,
            "batches": driven["batches"],
            "log_polls": driven["log_polls"],
            "poll_seconds": poll,
            "quote_rps": gen["quote_rps"],
            "paid": gen["paid"],
            "send_errors": gen["send_error_count"],
            "raw_pay_tps": gen["raw_pay_tps"],
            "pay_mined_seconds": gen["pay_mined_seconds"],
            # the plan must be ready before the first pay: its work is not the driver's
            "plan_ready_before_first_pay_s": round(gen["pay_start"] - max(planned_at, driver_ready), 6),
            "topped_up": len(driven["topped_up"]),
            "topup_failures": driven["topup_failure_count"],
            "settlement_reverts": len(driven["reverted"]),
            "settled": len(settled),
            "unsettled": len(pays) - len(settled),
            "settled_tps": round(len(settled) / span, 2) if span > 0 else 0.0,
            "p50_ms": p["p50"],
            "p95_ms": p["p95"],
            "p99_ms": p["p99"],
            "max_ms": round(max(latencies), 1) if latencies else None,
            "driver_cpu_s_total": driven["driver_cpu_s"],
            "machine": _per_order(window, len(settled)),
            "chain_checks": checks,
            "load_during": gen["load"],
            "load_after": load_info(),
        }
    finally:
        if driver is not None and driver.poll() is None:
            driver.terminate()
            driver.wait(timeout=30)
        stack.stop()


# ----------------------------------------------------------------------------- report


def summarise(a: dict[str, Any], z: dict[str, Any]) -> dict[str, Any]:
    raw = a["raw_pay_tps"]
    settled = z["settled_tps"]
    cores = int(load_info()["cores"] or 2)
    per_order = z["machine"]["cpu_ms_per_order"]
    non_oracle = round(sum(per_order.get(name, 0.0) for name in OURS), 2)
    foreign = round(sum(ms for name, ms in per_order.items() if name not in (*OURS, "driver")), 2)
    budget = round(1000 * cores / (TARGET_RATIO * raw) - non_oracle, 2) if raw else None
    one_process = round(1000 / (TARGET_RATIO * raw), 2) if raw else None
    return {
        "raw_pay_tps": raw,
        "ceiling_settled_tps": settled,
        "ceiling_ratio": round(settled / raw, 3) if raw and settled else None,
        "ceiling_p50_ms": z["p50_ms"],
        "busy_cores_z": z["machine"]["busy_cores"],
        "cpu_ms_per_order_z": per_order,
        "non_oracle_cpu_ms_per_order": non_oracle,
        "foreign_cpu_ms_per_order": foreign,
        "oracle_budget_ms_per_order_at_0_8": budget,
        # one oracle process runs on one core at most: at 0.8 x raw it has 1000 / (0.8 x raw) ms per order
        "oracle_budget_ms_per_order_at_0_8_one_process": one_process,
        # the same when the machine's other processes keep what they took in phase z (a shared machine)
        "oracle_budget_ms_per_order_at_0_8_less_foreign": round(budget - foreign, 2) if budget else None,
        "oracle_budget_formula": (
            "budget_ms = (cores x T - N x non_oracle_ms / 1000) x 1000 / N with T = N / (0.8 x raw_pay_tps), "
            "= 1000 x cores / (0.8 x raw_pay_tps) - non_oracle_ms; non_oracle_ms = phase z's CPU per settled "
            "order of anvil, the provider, the load generator and the gateway (not the driver, nor the "
            "machine's other processes: foreign_cpu_ms_per_order)"
        ),
        "cores": cores,
        "all_settled_on_chain": z["chain_checks"]["orders_not_settled_on_chain"] == 0 and z["unsettled"] == 0,
        "balances_match": z["chain_checks"]["balances_match"],
    }


def _table(report: dict[str, Any]) -> None:
    from bench.e2e import _machine_table

    load = load_info()
    print(f"ceiling on anvil, N={report['orders']}; {load['cores']} cores, load {load['loadavg_1m']}")
    print(f"{'phase':<6}{'raw tps':>9}{'settled/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'load':>7}")
    for name, r in report["phases"].items():
        cells = [r.get(k) for k in ("settled_tps", "p50_ms", "p95_ms")]
        print(
            f"{name:<6}{r['raw_pay_tps']!s:>9}"
            + "".join(f"{c!s:>{w}}" for c, w in zip(cells, (11, 9, 9), strict=True))
            + f"{r['load_during']['loadavg_1m']:>7}"
        )
    _machine_table(report["phases"])
    for key, value in report["summary"].items():
        if key != "oracle_budget_formula":
            print(f"  {key} = {value}")
    print(f"  oracle budget: {report['summary']['oracle_budget_formula']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling")
    sub = parser.add_subparsers(dest="mode")
    drive = sub.add_parser("driver", help="(internal) the minimal driver of phase z")
    drive.add_argument("--plan", required=True)
    drive.add_argument("--ready", required=True)
    drive.add_argument("--out", required=True)
    drive.add_argument("--poll", type=float, default=0.02)
    drive.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=50, help="orders per settlement (max_batch)")
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between the driver's eth_getLogs")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", type=Path, default=RESULTS / "ceiling.json")
    args = parser.parse_args(argv)
    if args.mode == "driver":
        return driver_main(args)
    phases: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="cardless-bench-ceiling-") as tmp:
        phases["a"] = run_phase("a", Path(tmp), chain="anvil", orders=args.orders, timeout=args.timeout)
        print(f"a: {json.dumps({k: v for k, v in phases['a'].items() if k != 'load_during'})}", flush=True)
        phases["z"] = run_zero(
            Path(tmp), orders=args.orders, batch=args.batch, poll=args.poll, timeout=args.timeout
        )
        print(f"z: {json.dumps({k: v for k, v in phases['z'].items() if k != 'load_during'})}", flush=True)
    summary = summarise(phases["a"], phases["z"])
    report = {**summary, "orders": args.orders, "load": load_info(), "phases": phases, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    _table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
