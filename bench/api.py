"""API benchmark (issue 12): order-status reads and quote creation against the gateway on loopback.

    PYTHONPATH=. python -m bench.api [--seconds 10] [--setup production|embedded] [--gateways 2]
                                     [--chain embedded|anvil] [--profile DIR]

``--setup production`` (the default) runs the pieces as production does, each in a process of its own:
anvil (npm, pinned) with the escrow deployed, the simulated provider (this process, which does nothing
else during the loads), ``--gateways`` ``cardless gateway`` processes (default 2, one per core) on one
port (``CARDLESS_GATEWAY_REUSE_PORT``: the kernel spreads the connections) sharing one SQLite database
(WAL) in which they also count the quote limits, and the load generator. ``--setup embedded`` starts
the system in this process as ``make run`` does (the chain, ``--chain embedded`` or anvil, the simulated
provider, the gateway under uvicorn and one oracle worker).

The load comes from ``python -m bench.loadgen api`` in a process of its own, twice per route. First at
the issue's rate (``--status-rate`` 1,000/s, ``--quote-rate`` 300/s) in an open loop: requests due on a
fixed schedule, each latency counted from when it was due, so a server that falls behind shows it (the
issue's keys, ``order_status`` and ``quote``, hold these figures). Then at saturation, a closed loop
(``saturation`` in the JSON): 16 clients, each one keep-alive connection, requests back to back for
``--seconds`` after a one-second warm-up. Order status
is the public view (no credentials) of 64 quoted orders; quotes are for random wallets and game
accounts, so each one is validated by the simulated provider, signed and written as a production quote
is. The per-client and per-buyer quote rate limits are raised for the run (they answer 429 long before
the server's limit: that is their job, not what is measured here), but still counted.

``--profile DIR`` samples the server with py-spy during each load (``DIR/api-<kind>[-<pid>].txt``,
collapsed stacks of the thread holding the GIL, so CPU time only; ``python -m bench.profile FILE`` sums
them by function and by component).

First the liveness probe ``/healthz`` (no database, no chain): the ceiling of the HTTP stack on this
machine at this moment, the baseline the two routes are compared with on a shared machine.

Writes ``bench/results/api.json``: ``{"order_status": {"rps", "p50_ms", "p99_ms", ...}, "quote": {...},
"saturation": {"order_status": {...}, "quote": {...}}, "targets": {...}}``
with the setup, the server's CPU per request (every gateway process), the other processes' CPU per
request (simulated provider, chain, load generator), the cores and the machine's load average.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import buyer_keys, load_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "api.json"

BENCH_QUOTE_RATE = "10000000/minute"
"""Per client and per buyer during a bench: the limiter answers 429 long before the server's limit."""


def start_system(
    var_dir: Path, chain: str, *, gateway: bool = True, oracle: bool = True, database_url: str = ""
) -> Any:
    from cardless.cli.settings import Settings
    from cardless.cli.system import System

    settings = Settings(
        environment="development",
        var_dir=var_dir,
        dev_chain=chain,
        chain_port=0,
        gateway_port=0,
        simulator_port=0,
        database_url=database_url,
        quote_rate_per_client=BENCH_QUOTE_RATE,
        quote_rate_per_buyer=BENCH_QUOTE_RATE,
    )
    return System(settings, gateway=gateway, oracle=oracle).start()


class Production:
    """anvil and the simulated provider (``System`` with neither gateway nor oracle: anvil in its own
    process, the simulator in this one), then ``count`` ``cardless gateway`` processes on one port."""

    def __init__(self, work: Path, count: int, database_url: str = "") -> None:
        self.work, self.count, self.database_url = work, count, database_url
        self.system: Any = None
        self.gateways: list[subprocess.Popen[bytes]] = []
        self.gateway_url = ""

    def start(self) -> Production:
        from cardless.cli.system import simulator_secrets

        self.system = system = start_system(
            self.work / "var", "anvil", gateway=False, oracle=False, database_url=self.database_url
        )
        settings = system.settings
        port = _free_port()
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
            "CARDLESS_GATEWAY_PORT": str(port),
            "CARDLESS_GATEWAY_REUSE_PORT": "true",
            "CARDLESS_QUOTE_RATE_PER_CLIENT": BENCH_QUOTE_RATE,
            "CARDLESS_QUOTE_RATE_PER_BUYER": BENCH_QUOTE_RATE,
            # Production's default (development reads the node for every quote: tests warp its clock).
            "CARDLESS_CHAIN_TIME_CACHE_SECONDS": "1",
        }
        # One after the other: the first one creates the development keys and seeds the catalogue.
        for i in range(self.count):
            log_path = self.work / f"gateway-{i + 1}.log"
            cmd = [sys.executable, "-m", "cardless.cli.main", "gateway"]
            with log_path.open("wb") as log:
                process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            self.gateways.append(process)
            deadline = time.monotonic() + 120
            while b"gateway running:" not in log_path.read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gateway {i + 1} did not start; see {log_path}")
                time.sleep(0.1)
        self.gateway_url = f"http://127.0.0.1:{port}"
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.gateways]

    @property
    def chain_pid(self) -> int | None:
        process = getattr(self.system.node, "_process", None) if self.system is not None else None
        return process.pid if process is not None else None

    def stop(self) -> None:
        for process in self.gateways:
            process.terminate()
        for process in self.gateways:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.system is not None:
            self.system.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _proc_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (``/proc``), every thread."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def loadgen(args: list[str], out: Path) -> dict[str, Any]:
    subprocess.run(
        [sys.executable, "-m", "bench.loadgen", *args, "--out", str(out)],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def quoted_orders(url: str, count: int) -> list[str]:
    from eth_account import Account

    buyer = Account.from_key(buyer_keys(1)[0]).address
    ids = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for i in range(count):
            body = {"sku": "genshin-60", "account": str(10_000_000 + i), "token": "tUSDC", "buyer": buyer}
            ids.append(http.post("/v1/quotes", json=body).raise_for_status().json()["order_id"])
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16, help="clients of the saturation phases")
    parser.add_argument("--status-rate", type=float, default=1000, help="order reads offered per second")
    parser.add_argument("--quote-rate", type=float, default=300, help="quotes offered per second")
    parser.add_argument("--setup", choices=("production", "embedded"), default="production")
    parser.add_argument("--gateways", type=int, default=2, help="gateway processes (production setup)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--chain", choices=("embedded", "anvil"), default="embedded", help="embedded setup")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--profile", type=Path, help="write py-spy profiles of the server here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cardless-bench-api-") as tmp, contextlib.ExitStack() as dbs:
        work = Path(tmp)
        stack: Any
        if args.setup == "production":
            database_url = ""
            if args.database == "postgresql":
                from bench.e2e import _pg_admin_url
                from tests.support.postgres import PostgresServer

                database_url = dbs.enter_context(PostgresServer(_pg_admin_url()).database(migrated=False))
            stack = Production(work, args.gateways, database_url)
            server_pids: list[int] | None = None
            try:
                stack.start()
            except BaseException:
                stack.stop()
                raise
            server_pids = stack.pids
            chain_pid = stack.chain_pid

            def server_cpu() -> float:
                return _proc_cpu(stack.pids)

            # This process serves the simulated provider and nothing else during the loads.
            sides: dict[str, Any] = {"simulator": _cpu}
            if chain_pid is not None:
                sides["chain"] = lambda: _proc_cpu([chain_pid])
            chain = "anvil"
            server = f"{args.gateways} `cardless gateway` processes on one port, one {args.database} database"
        else:
            stack = start_system(work / "var", args.chain)
            server_pids = [os.getpid()]
            server_cpu, sides, chain = _cpu, {}, args.chain
            server = "uvicorn in the make-run process (gateway, chain, oracle, simulator)"
        try:
            url = stack.gateway_url
            ids = work / "ids.json"
            ids.write_text(json.dumps(quoted_orders(url, 64)))
            common = [
                "api",
                "--url",
                url,
                "--seconds",
                str(args.seconds),
                "--concurrency",
                str(args.concurrency),
            ]
            results: dict[str, Any] = {"saturation": {}}
            idle = _idle_cpu_rate(server_cpu)
            # The at-rate phase of a route before its saturation phase: a saturated SQLite file (the quotes'
            # rows) is then the same size or smaller when the figure is taken.
            phases = [("healthz", "healthz", 0.0)]
            for key, kind, rate in (
                ("order_status", "status", args.status_rate),
                ("quote", "quote", args.quote_rate),
            ):
                phases += [(key, kind, rate), (key, kind, 0.0)]
            for key, kind, rate in phases:
                extra = ["--order-ids", str(ids)] if kind == "status" else []
                if rate:
                    extra += ["--rate", str(rate)]
                name = f"{kind}-{rate:g}" if rate else kind
                spies = [_Spy(args.profile, name, pid, len(server_pids) > 1) for pid in server_pids]
                cpu0, wall0 = server_cpu(), time.monotonic()
                side0 = {name: meter() for name, meter in sides.items()}
                try:
                    result = loadgen([*common, "--kind", kind, *extra], work / f"{name}.json")
                finally:
                    for spy in spies:
                        spy.stop()
                cpu, wall = server_cpu() - cpu0, time.monotonic() - wall0
                result.update(_cpu_figures(result, cpu, wall, idle))
                requests = max(1, int(result.get("requests_total", result["requests"])))
                for name, meter in sides.items():
                    result[f"{name}_cpu_ms_per_request"] = round(1000 * (meter() - side0[name]) / requests, 3)
                # The keys hold the figures at the target rate; the closed loop's go under saturation.
                if rate or key == "healthz":
                    results[key] = result
                else:
                    results["saturation"][key] = result
        finally:
            stack.stop()
    ceiling = results["healthz"]["rps"]
    for key in ("order_status", "quote"):  # against the same server's liveness probe, same moment
        saturated = results["saturation"][key]
        saturated["share_of_healthz_rps"] = round(saturated["rps"] / ceiling, 3) if ceiling else None
    results["targets"] = {
        key: {
            "offered_rps": rate,
            "p99_ms_at_most": 50,
            "met": results[key]["rps"] >= 0.99 * rate
            and results[key]["errors"] == 0
            and results[key]["p99_ms"] is not None
            and results[key]["p99_ms"] <= 50,
        }
        for key, rate in (("order_status", args.status_rate), ("quote", args.quote_rate))
    }
    results["setup"] = args.setup
    results["chain"] = chain
    results["server"] = server
    results["load_at_end"] = load_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    _table(results)
    return 0


def _cpu() -> float:
    """CPU seconds of this process, every thread (chain, gateway, oracle, simulator)."""
    times = os.times()
    return times.user + times.system


def _idle_cpu_rate(cpu: Any = _cpu, seconds: float = 2.0) -> float:
    """CPU seconds per second the server spends with no request to answer (in the make-run process: the
    oracle polling the chain, the dev node's timers): subtracted from each load's CPU before it is
    divided by requests."""
    cpu0, wall0 = cpu(), time.monotonic()
    time.sleep(seconds)
    return float(cpu() - cpu0) / (time.monotonic() - wall0)


def _cpu_figures(result: dict[str, Any], cpu: float, wall: float, idle: float) -> dict[str, Any]:
    """The server's CPU per request (ms; less sensitive to the machine's load than rps) and the cores it
    kept busy, with the generator's own CPU per request beside it."""
    requests = max(1, int(result.get("requests_total", result["requests"])))
    return {
        "server_cpu_ms_per_request": round(1000 * max(0.0, cpu - idle * wall) / requests, 3),
        "server_cores_busy": round(cpu / wall, 2),
        "idle_cpu_cores": round(idle, 3),
        "loadgen_cpu_ms_per_request": round(1000 * float(result.get("loadgen_cpu_s", 0)) / requests, 3),
    }


class _Spy:
    """py-spy sampling one server process (all threads, idle excluded) while one load runs."""

    def __init__(self, directory: Path | None, kind: str, pid: int, several: bool) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).with_name("py-spy")
        out = directory / (f"api-{kind}-{pid}.txt" if several else f"api-{kind}.txt")
        cmd = [
            str(spy),
            "record",
            "-f",
            "raw",
            "-r",
            "250",
            "--gil",
            "-o",
            str(out),
            "--pid",
            str(pid),
        ]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=60)


def _table(results: dict[str, Any]) -> None:
    load = results["load_at_end"]
    print(f"API on loopback, {results['server']}, {results['chain']} chain")
    print(f"{load['cores']} cores, load at the end {load['loadavg_1m']}")
    print(
        f"{'route':<14}{'load':>16}{'rps':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'CPU ms/req':>12}{'gen ms/req':>12}{'sim ms/req':>12}{'chain ms/req':>14}"
    )
    rows = [("healthz", results["healthz"])]
    for key in ("order_status", "quote"):
        rows += [(key, results[key]), (key, results["saturation"][key])]
    for key, r in rows:
        shape = f"{r['offered_rps']:g}/s offered" if r["loop"] == "open" else f"{r['concurrency']} clients"
        print(
            f"{key:<14}{shape:>16}{r['rps']:>9}{r['p50_ms']:>9}{r['p99_ms']:>9}{r['errors']:>8}"
            f"{r['server_cpu_ms_per_request']:>12}{r['loadgen_cpu_ms_per_request']:>12}"
            f"{r.get('simulator_cpu_ms_per_request', '-'):>12}{r.get('chain_cpu_ms_per_request', '-'):>14}"
        )
    for key, target in results["targets"].items():
        print(
            f"{key}: {target['offered_rps']:g}/s with p99 <= {target['p99_ms_at_most']} ms: "
            + ("met" if target["met"] else "NOT met")
        )


if __name__ == "__main__":
    sys.exit(main())
