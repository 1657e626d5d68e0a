"""End-to-end benchmark (issue 12): how fast the oracle settles paid orders, against the node's own rate.

    PYTHONPATH=. python -m bench.e2e [--orders N] [--phases a,b50,bmax,c,d1,d4]  -> bench/results/e2e.json
    PYTHONPATH=. python -m bench.e2e --embedded [--orders N]  -> bench/results/e2e-embedded.json

Each phase starts a fresh system and measures one thing:

- ``a``: anvil takes ``N`` ``pay`` transactions with no oracle running: the baseline ``raw_pay_tps``;
- ``b50`` / ``bmax``: the same payments with the oracle at 0 confirmations, offered at 50 per second and
  as fast as the node takes them: paid -> settled latency and settled orders per second;
- ``c``: ``bmax`` with every provider request held 200 ms (the simulator's ``latency`` fault);
- ``d1`` / ``d4``: ``bmax`` on PostgreSQL (a fresh database on the local server, ``CARDLESS_TEST_PG_URL``
  or ``.ci/postgres``) with ``cardless oracle --workers 1`` and ``--workers 4``.

On anvil, the chain is anvil (npm, pinned), the gateway runs in this process, the simulated provider
is ``python -m bench.provider`` and the oracle ``cardless oracle``, in processes of their own, as in
production. ``--embedded`` is
``make run``: the gateway in this process, the py-evm node, the simulator and the oracle in its child
processes (``System(children=True)``; phases a, b50, bmax, c).
The buyers are ``python -m bench.loadgen buyers``, another process: they take the quotes first, sign
every ``pay``, then send them at the offered rate (see bench/loadgen.py).

Paid is when the node accepted the ``pay`` transaction (anvil and the dev node mine it before they
answer); settled is the time the oracle wrote the order's ``settled`` transition, after it saw its
settlement transaction mined. Settled orders per second = orders settled / (last settlement - first
payment sent), so the pipeline's fill and drain count against it. Every phase records the cores and the
machine's load average: on a shared machine, compare the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import load_info, percentiles
from bench.provider import ProviderProcess, bench_simulator_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PHASES = ("a", "b50", "bmax", "c", "d1", "d4")
EMBEDDED_PHASES = ("a", "b50", "bmax", "c")
BENCH_QUOTE_RATE = "10000000/minute"
"""Per client and per buyer during a bench: the limiter answers 429 long before the server's limit."""


def _pg_admin_url() -> str:
    url = os.environ.get("CARDLESS_TEST_PG_URL")
    if url:
        return url
    out = subprocess.run([str(ROOT / ".ci" / "postgres")], check=True, capture_output=True, text=True).stdout
    return out.strip().rpartition("=")[2]


class Stack:
    """One system for one phase: chain, simulator, gateway (this process) and, on anvil, the oracle in
    ``workers`` processes of its own (0: no oracle)."""

    def __init__(
        self, work: Path, *, chain: str, workers: int, database_url: str = "", latency_ms: int = 0
    ) -> None:
        self.work, self.chain, self.workers = work, chain, workers
        self.database_url, self.latency_ms = database_url, latency_ms
        self.system: Any = None
        self.oracle: subprocess.Popen[bytes] | None = None

    def start(self) -> Stack:
        from cardless.cli.settings import Settings
        from cardless.cli.system import System

        settings = Settings(
            environment="development",
            var_dir=self.work / "var",
            dev_chain="anvil" if self.chain == "anvil" else "embedded",
            chain_port=0,
            gateway_port=0,
            simulator_port=0,
            database_url=self.database_url,
            quote_rate_per_client=BENCH_QUOTE_RATE,
            quote_rate_per_buyer=BENCH_QUOTE_RATE,
        )
        embedded_oracle = self.chain == "embedded" and self.workers > 0
        # Embedded: as `make run` starts it, the node, the simulator and the oracle in child processes.
        self.system = System(settings, oracle=embedded_oracle, children=self.chain == "embedded")
        self.system.simulator_config = bench_simulator_config()
        if self.chain == "anvil":
            # The simulated provider in a process of its own, as a real provider is another server: in
            # this process it shared a GIL with the gateway and answered in 0.3-1 s under load.
            self.system.simulator = ProviderProcess(self.work / "provider.log").start()
        self.system.start()
        if self.latency_ms:
            httpx.post(
                f"{self.system.simulator.url}/_sim/faults",
                json={"mode": "latency", "latency_ms": self.latency_ms},
            ).raise_for_status()
        if self.chain == "anvil" and self.workers > 0:
            self._start_oracle()
        return self

    def _start_oracle(self) -> None:
        from cardless.cli.system import simulator_secrets

        system = self.system
        settings = system.settings
        env = {
            **os.environ,
            **simulator_secrets(system.simulator_config),
            "PYTHONPATH": str(ROOT),
            "CARDLESS_ENVIRONMENT": "development",
            "CARDLESS_VAR_DIR": str(settings.var_dir),
            "CARDLESS_DATABASE_URL": settings.effective_database_url,
            "CARDLESS_DEPLOYMENT_FILE": str(settings.effective_deployment_file),
            "CARDLESS_CHAIN_RPC_URL": system.deployment.rpc_url,
            "CARDLESS_PROVIDER_BASE_URL": system.simulator.url,
            "CARDLESS_PUBLIC_URL": system.gateway_url,
        }
        log_path = self.work / "oracle.log"
        cmd = [sys.executable, "-m", "cardless.cli.main", "oracle", "--workers", str(self.workers)]
        with log_path.open("wb") as log:
            self.oracle = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while b"oracle running:" not in log_path.read_bytes():
            if self.oracle.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the oracle did not start; see {log_path}")
            time.sleep(0.2)

    @property
    def oracle_pid(self) -> int | None:
        """The oracle's process: ``cardless oracle`` on anvil, the embedded system's oracle child."""
        if self.oracle is not None:
            return self.oracle.pid
        child = getattr(self.system, "oracle_process", None)
        return child.pid if child is not None else None

    def stop(self) -> None:
        if self.oracle is not None:
            self.oracle.terminate()
            try:
                self.oracle.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.oracle.kill()
                self.oracle.wait()
            keep = os.environ.get("CARDLESS_BENCH_KEEP_LOGS")
            if keep:  # the oracle's log outlives the phase's temporary directory
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(self.work / "oracle.log", Path(keep) / f"oracle-{self.work.name}.log")
        if self.system is not None:
            self.system.stop()

    def stage_times(self, ids: list[str]) -> dict[str, dict[str, float]]:
        """Order id -> state -> wall-clock time the order first reached it (the ledger's timeline)."""
        from sqlalchemy import select

        from cardless.ledger.models import OrderEvent

        found: dict[str, dict[str, float]] = {}
        wanted = set(ids)
        with self.system.sessions() as session:
            rows = session.execute(select(OrderEvent.order_id, OrderEvent.to_state, OrderEvent.at)).all()
        for order_id, state, at in rows:
            if order_id in wanted:
                when = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
                found.setdefault(order_id, {}).setdefault(state, when)
        return found

    def settled_times(self, ids: list[str]) -> dict[str, float]:
        """Order id -> wall-clock time of its ``settled`` transition, for those settled so far."""
        from sqlalchemy import select

        from cardless.ledger.models import OrderEvent

        found: dict[str, float] = {}
        with self.system.sessions() as session:
            rows = session.execute(
                select(OrderEvent.order_id, OrderEvent.at).where(OrderEvent.to_state == "settled")
            ).all()
        wanted = set(ids)
        for order_id, at in rows:
            if order_id in wanted:
                found[order_id] = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
        return found


def _loadgen(stack: Stack, orders: int, rate: float, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "buyers",
        "--gateway",
        stack.system.gateway_url,
        "--rpc",
        stack.system.deployment.rpc_url,
        "--orders",
        str(orders),
        "--rate",
        str(rate),
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _spy(stack: Stack, profile: Path | None, name: str) -> subprocess.Popen[bytes] | None:
    """py-spy on the oracle's process (``cardless oracle``, or the embedded system's oracle child), GIL
    holder only."""
    if profile is None:
        return None
    pid = stack.oracle_pid or os.getpid()
    profile.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    out = profile / f"e2e-{stack.chain}-{name}.txt"
    cmd = [str(spy), "record", "-f", "raw", "-r", "250", "--gil", "-o", str(out), "--pid", str(pid)]
    if stack.workers > 1:
        cmd.append("--subprocesses")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (``/proc``; 0.0 where it has none)."""
    return sum(_tree_cpu_by_process(pid).values())


def _processes() -> dict[int, tuple[int, float]]:
    """Every live process: pid -> (parent pid, user + system CPU seconds), from ``/proc``."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # after the command: state, ppid, ..., utime (11), stime (12), counted from state = 0
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    return stats


def _descendants(pid: int, stats: dict[int, tuple[int, float]]) -> set[int]:
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, (parent, _) in stats.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return tree


def _tree_cpu_by_process(pid: int) -> dict[int, float]:
    """User + system CPU seconds of ``pid`` and of each of its live descendants, by process id."""
    stats = _processes()
    return {member: stats.get(member, (0, 0.0))[1] for member in _descendants(pid, stats)}


def _machine_busy_seconds() -> float:
    """CPU seconds the machine's cores have spent busy since boot (``/proc/stat``: all but idle and
    iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(v) for v in fields[:8]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


# What each process on the machine is, by its command line (first match wins); the bench's own process
# serves the gateway.
_COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("anvil", ("anvil",)),
    ("dev node", ("cardless.cli.child\0cardless.devchain",)),  # the embedded system's children
    ("load generator", ("bench.loadgen",)),
    ("oracle", ("cardless.cli.main\0oracle", "cardless.cli.embedded_oracle")),
    ("provider", ("bench.provider", "cardless.cli.child\0adapters.simulator")),
    ("postgresql", ("postgres",)),
    ("py-spy", ("py-spy",)),
    ("driver", ("bench.ceiling\0driver",)),  # bench.ceiling's phase z: the oracle's external work alone
)


def _component(pid: int, oracle: set[int], cache: dict[int, str]) -> str:
    if pid == os.getpid():
        return "bench (gateway)"
    if pid in oracle:
        return "oracle"
    if pid in cache:
        return cache[pid]
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        return "other"
    name = next((name for name, marks in _COMPONENTS if any(m in cmdline for m in marks)), "other")
    if cmdline != _OWN_CMDLINE:  # a child seen between fork and exec still shows this process's
        cache[pid] = name
    return name


_OWN_CMDLINE = Path("/proc/self/cmdline").read_text(errors="replace")


class _MachineSampler:
    """Where the machine's CPU goes during a phase: every process's CPU seconds by component (anvil,
    the load generator, the oracle, the provider, PostgreSQL, the gateway in this process, other) and
    the cores' busy seconds, sampled every 0.2 s in a thread so a window known only afterwards (the
    first pay to the last settlement) can be read. A process counts from 0 if it started inside the
    window, and up to its last sample if it exited inside it (the load generator in phase a)."""

    def __init__(self, oracle_pid: int | None) -> None:
        self.oracle_pid = oracle_pid
        self._names: dict[int, str] = {}
        self.samples: list[tuple[float, float, dict[int, tuple[str, float]]]] = [self._sample()]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> tuple[float, float, dict[int, tuple[str, float]]]:
        at, busy, stats = time.time(), _machine_busy_seconds(), _processes()
        oracle = _descendants(self.oracle_pid, stats) if self.oracle_pid is not None else set()
        return at, busy, {pid: (_component(pid, oracle, self._names), cpu) for pid, (_, cpu) in stats.items()}

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append(self._sample())

    def window(self, start: float, end: float | None = None) -> dict[str, Any]:
        """CPU seconds by component and the mean busy cores from the last sample at or before ``start``
        to the first at or after ``end`` (now when None). Stops the sampler, with one last sample."""
        self.stop()
        first = max((i for i, s in enumerate(self.samples) if s[0] <= start), default=0)
        last = min((i for i, s in enumerate(self.samples) if end is not None and s[0] >= end), default=None)
        last = len(self.samples) - 1 if last is None else last
        seen: dict[int, tuple[str, float]] = {}
        for _, _, procs in self.samples[first : last + 1]:
            seen.update(procs)  # each process as last seen, up to the window's end
        (t0, busy0, procs0), (t1, busy1, _) = self.samples[first], self.samples[last]
        seconds: dict[str, float] = {}
        for pid, (name, cpu) in seen.items():
            used = cpu - procs0.get(pid, (name, 0.0))[1]
            if used > 0:
                seconds[name] = round(seconds.get(name, 0.0) + used, 3)
        return {
            "seconds": round(t1 - t0, 2),
            "busy_cores": round((busy1 - busy0) / (t1 - t0), 2) if t1 > t0 else None,
            "cpu_seconds": dict(sorted(seconds.items(), key=lambda kv: -kv[1])),
        }

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self.samples.append(self._sample())


class _CpuSampler:
    """The CPU seconds of a process tree, sampled every 0.2 s in a thread, so the CPU from a moment known
    only afterwards (the first pay sent, in the load generator) can be read: the oracle's idle polling
    while the quotes are taken is left out."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        # The first sample here, not in the thread: a moment after construction always has a sample at or
        # before it (the thread's first one could come after a busy stretch, which was then not counted).
        self.samples: list[tuple[float, dict[int, float]]] = [(time.time(), _tree_cpu_by_process(pid))]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append((time.time(), _tree_cpu_by_process(self.pid)))

    def stop(self) -> None:
        """Stop sampling, with one last sample now: the thread's last one may be 0.2 s old."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self.samples.append((time.time(), _tree_cpu_by_process(self.pid)))

    def since(self, when: float) -> float:
        """CPU seconds from the last sample at or before ``when`` to now (stops the sampler)."""
        return sum(self.by_process(when).values())

    def by_process(self, when: float) -> dict[int, float]:
        """CPU seconds of each process from the last sample at or before ``when`` to now (stops the
        sampler); a process that started later counts from 0, one that exited is left out."""
        self.stop()
        before = [cpu for at, cpu in self.samples if at <= when] or [self.samples[0][1]]
        last = self.samples[-1][1]
        return {pid: cpu - before[-1].get(pid, 0.0) for pid, cpu in last.items()}


def _stop_spy(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


def run_phase(
    name: str,
    work: Path,
    *,
    chain: str,
    orders: int,
    timeout: float,
    pg_admin: str | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    rate = 50.0 if name == "b50" else 0.0
    workers = {"a": 0, "d4": 4}.get(name, 1)
    latency = 200 if name == "c" else 0
    with ExitStack() as stack_exit:
        database_url = ""
        if name.startswith("d"):
            assert pg_admin is not None
            from tests.support.postgres import PostgresServer

            database_url = stack_exit.enter_context(PostgresServer(pg_admin).database(migrated=False))
        phase_dir = work / name
        phase_dir.mkdir()
        stack = Stack(phase_dir, chain=chain, workers=workers, database_url=database_url, latency_ms=latency)
        stack_exit.callback(stack.stop)
        stack.start()
        spy = _spy(stack, profile, name)
        cpu = _CpuSampler(stack.oracle_pid) if stack.oracle_pid is not None else None
        machine = _MachineSampler(stack.oracle_pid)
        started = time.time()
        gen = _loadgen(stack, orders, rate, phase_dir / "loadgen.json")
        result: dict[str, Any] = {
            "phase": name,
            "chain": chain,
            "orders": orders,
            "offered_rate": rate or "max",
            "provider_latency_ms": latency,
            "database": "postgresql" if database_url else "sqlite",
            "oracle_workers": workers,
            "quote_rps": gen["quote_rps"],
            "paid": gen["paid"],
            "send_errors": gen["send_error_count"],
            "raw_pay_tps": gen["raw_pay_tps"],
            "pay_mined_seconds": gen["pay_mined_seconds"],
            "load_during": gen["load"],
        }
        if workers == 0:
            _stop_spy(spy)
            if cpu is not None:
                cpu.stop()
            result["machine"] = _per_order(
                machine.window(gen["pay_start"], gen["pay_start"] + gen["pay_mined_seconds"]), gen["paid"]
            )
            return result
        pays = {p["order_id"]: p["sent_at"] for p in gen["pays"]}
        deadline = time.monotonic() + timeout
        settled: dict[str, float] = {}
        while time.monotonic() < deadline:
            settled = stack.settled_times(list(pays))
            if len(settled) >= len(pays):
                break
            time.sleep(0.25)
        oracle_cpus = cpu.by_process(gen["pay_start"]) if cpu is not None else None
        machine_cpu = machine.window(gen["pay_start"], max(settled.values()) if settled else None)
        oracle_cpu = sum(oracle_cpus.values()) if oracle_cpus is not None else None
        _stop_spy(spy)
        latencies = [(settled[o] - pays[o]) * 1000 for o in settled]
        span = max(settled.values()) - gen["pay_start"] if settled else 0.0
        p = percentiles(latencies)
        stages = stack.stage_times(list(pays))
        by_state: dict[str, list[float]] = {}
        for order_id, reached in stages.items():
            for state, when in reached.items():
                by_state.setdefault(state, []).append((when - pays[order_id]) * 1000)
        result.update(
            {
                "stage_p50_ms_after_pay": {
                    state: percentiles(values)["p50"]
                    for state, values in sorted(
                        by_state.items(), key=lambda kv: sorted(kv[1])[len(kv[1]) // 2]
                    )
                },
                "settled": len(settled),
                "unsettled": len(pays) - len(settled),
                "settled_tps": round(len(settled) / span, 2) if span > 0 else 0.0,
                "p50_ms": p["p50"],
                "p95_ms": p["p95"],
                "p99_ms": p["p99"],
                "max_ms": round(max(latencies), 1) if latencies else None,
                "phase_seconds": round(time.time() - started, 1),
                # the oracle process(es)' CPU (user + system) from the first pay sent to the last
                # settlement, per settled order: the measure the machine's load disturbs least
                "oracle_cpu_ms_per_order": (
                    round(1000 * oracle_cpu / len(settled), 2) if oracle_cpu is not None and settled else None
                ),
                # the same per process (the pool supervisor among them with several workers), busiest first
                "oracle_cpu_ms_per_order_by_process": (
                    sorted((round(1000 * c / len(settled), 2) for c in oracle_cpus.values()), reverse=True)
                    if oracle_cpus is not None and settled
                    else None
                ),
                "machine": _per_order(machine_cpu, len(settled)),
                "load_after": load_info(),
            }
        )
        return result


def _per_order(window: dict[str, Any], orders: int) -> dict[str, Any]:
    """A machine window with each component's CPU per order (ms) beside its seconds."""
    cpu = window["cpu_seconds"]
    per = {name: round(1000 * seconds / orders, 2) for name, seconds in cpu.items()} if orders else {}
    return {**window, "cpu_ms_per_order": per, "cpu_ms_per_order_total": round(sum(per.values()), 2)}


def summarise(phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's keys from the phases that ran (None for one that did not)."""

    def get(phase: str, key: str) -> Any:
        return phases.get(phase, {}).get(key)

    raw = get("a", "raw_pay_tps")
    saturated = get("bmax", "settled_tps")
    summary: dict[str, Any] = {
        "raw_pay_tps": raw,
        "settled_tps": saturated,
        "ratio": round(saturated / raw, 3) if raw and saturated else None,
        "p50_ms": get("b50", "p50_ms"),
        "p95_ms": get("b50", "p95_ms"),
        "p99_ms": get("b50", "p99_ms"),
        "settled_tps_at_50": get("b50", "settled_tps"),
        "settled_tps_provider_200ms": get("c", "settled_tps"),
        "settled_tps_pg_1_worker": get("d1", "settled_tps"),
        "settled_tps_pg_4_workers": get("d4", "settled_tps"),
    }
    return summary


def merge_report(out: Path, *, chain: str, orders: int, phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The report to write to ``out``: the phases just run over those already in the file, when the file
    is a run of the same chain and N (a ``--phases`` subset replaces only its own phases, and the summary
    keys of the others keep their values); a file of another chain or N is replaced whole, since its
    figures would not be comparable. Each phase keeps its own ``load_during``."""
    merged: dict[str, dict[str, Any]] = {}
    try:
        previous = json.loads(out.read_text())
    except (OSError, ValueError):
        previous = None
    if isinstance(previous, dict) and previous.get("chain") == chain and previous.get("orders") == orders:
        old = previous.get("phases")
        if isinstance(old, dict):
            merged.update({name: r for name, r in old.items() if name not in phases and isinstance(r, dict)})
    merged.update(phases)
    order = {name: i for i, name in enumerate(PHASES)}
    merged = dict(sorted(merged.items(), key=lambda kv: order.get(kv[0], len(order))))
    return {
        **summarise(merged),
        "chain": chain,
        "orders": orders,
        "load": load_info(),
        "phases": merged,
        "summary": summarise(merged),
    }


def _table(report: dict[str, Any]) -> None:
    load = load_info()
    print(f"e2e on {report['chain']}, N={report['orders']}; {load['cores']} cores, load {load['loadavg_1m']}")
    head = f"{'phase':<6}{'offered':>9}{'db':>12}{'wk':>4}{'raw tps':>9}{'settled/s':>11}"
    print(head + f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'load':>7}")
    for name, r in report["phases"].items():
        cells = [r.get(k) for k in ("settled_tps", "p50_ms", "p95_ms", "p99_ms")]
        print(
            f"{name:<6}{r['offered_rate']!s:>9}{r['database']:>12}{r['oracle_workers']:>4}"
            f"{r['raw_pay_tps']!s:>9}"
            + "".join(f"{c!s:>{w}}" for c, w in zip(cells, (11, 9, 9, 9), strict=True))
            + f"{r['load_during']['loadavg_1m']:>7}"
        )
    _machine_table(report["phases"])
    for key, value in report["summary"].items():
        print(f"  {key} = {value}")


def _machine_table(phases: dict[str, dict[str, Any]]) -> None:
    """CPU ms per order by component (per paid order in phase a, per settled one elsewhere) and the
    cores busy: what the two cores are spent on."""
    shown = {name: r["machine"] for name, r in phases.items() if r.get("machine")}
    if not shown:
        return
    components = sorted({c for m in shown.values() for c in m["cpu_ms_per_order"]})
    head = "".join(f"{c[:14]:>15}" for c in components)
    print(f"{'CPU ms per order':<29}{head}{'total':>8}{'cores':>7}")
    for name, m in shown.items():
        cells = "".join(f"{m['cpu_ms_per_order'].get(c, 0.0):>15}" for c in components)
        print(f"{name:<29}{cells}{m['cpu_ms_per_order_total']:>8}{m['busy_cores']!s:>7}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e")
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--embedded", action="store_true", help="the make-run system (py-evm node)")
    parser.add_argument("--phases", help=f"comma-separated, of {','.join(PHASES)}")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for settlement")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", type=Path, help="py-spy profiles of the oracle per phase, here")
    args = parser.parse_args(argv)
    chain = "embedded" if args.embedded else "anvil"
    names = args.phases.split(",") if args.phases else list(EMBEDDED_PHASES if args.embedded else PHASES)
    pg_admin = _pg_admin_url() if any(n.startswith("d") for n in names) else None
    phases: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="cardless-bench-e2e-") as tmp:
        for name in names:
            phases[name] = run_phase(
                name,
                Path(tmp),
                chain=chain,
                orders=args.orders,
                timeout=args.timeout,
                pg_admin=pg_admin,
                profile=args.profile,
            )
            shown = {k: v for k, v in phases[name].items() if k != "load_during"}
            print(f"{name}: {json.dumps(shown)}", flush=True)
    out = args.out or RESULTS / ("e2e-embedded.json" if args.embedded else "e2e.json")
    report = merge_report(out, chain=chain, orders=args.orders, phases=phases)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    _table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
