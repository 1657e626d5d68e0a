"""API benchmark (issue 12): order-status reads and quote creation against the gateway on loopback.

    PYTHONPATH=. python -m bench.api [--seconds 10] [--chain embedded|anvil] [--profile DIR]

The system starts in this process as ``make run`` starts it (the chain, the simulated provider, the
gateway under uvicorn and one oracle worker, SQLite in a temporary directory); the load comes from
``python -m bench.loadgen api`` in a process of its own: 16 clients, each one keep-alive connection,
requests back to back for ``--seconds`` after a one-second warm-up. Order status is the public view
(no credentials) of 64 quoted orders; quotes are for random wallets and game accounts, so each one is
validated by the simulated provider, signed and written as a production quote is. The per-client and
per-buyer quote rate limits are raised for the run (they answer 429 long before the server's limit:
that is their job, not what is measured here).

``--profile DIR`` samples this process with py-spy during each load (``DIR/api-<kind>.txt``, collapsed
stacks of the thread holding the GIL, so CPU time only; ``python -m bench.profile FILE`` sums them by
function and by component).

First the liveness probe ``/healthz`` (no database, no chain): the ceiling of the HTTP stack on this
machine at this moment, the baseline the two routes are compared with on a shared machine.

Writes ``bench/results/api.json``: ``{"order_status": {"rps", "p50_ms", "p99_ms", ...}, "quote": {...}}``
with the cores and the machine's load average at the time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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


def start_system(var_dir: Path, chain: str) -> Any:
    from cardless.cli.settings import Settings
    from cardless.cli.system import System

    settings = Settings(
        environment="development",
        var_dir=var_dir,
        dev_chain=chain,
        chain_port=0,
        gateway_port=0,
        simulator_port=0,
        quote_rate_per_client=BENCH_QUOTE_RATE,
        quote_rate_per_buyer=BENCH_QUOTE_RATE,
    )
    return System(settings).start()


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
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--chain", choices=("embedded", "anvil"), default="embedded")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--profile", type=Path, help="write py-spy profiles of the server here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cardless-bench-api-") as tmp:
        work = Path(tmp)
        system = start_system(work / "var", args.chain)
        try:
            url = system.gateway_url
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
            results: dict[str, Any] = {}
            idle = _idle_cpu_rate()
            for key, kind in (("healthz", "healthz"), ("order_status", "status"), ("quote", "quote")):
                extra = ["--order-ids", str(ids)] if kind == "status" else []
                spy = _Spy(args.profile, kind)
                cpu0, wall0 = _cpu(), time.monotonic()
                try:
                    results[key] = loadgen([*common, "--kind", kind, *extra], work / f"{kind}.json")
                finally:
                    spy.stop()
                cpu, wall = _cpu() - cpu0, time.monotonic() - wall0
                results[key].update(_cpu_figures(results[key], cpu, wall, idle))
        finally:
            system.stop()
    ceiling = results["healthz"]["rps"]
    for key in ("order_status", "quote"):  # against the same server's liveness probe, same moment
        results[key]["share_of_healthz_rps"] = round(results[key]["rps"] / ceiling, 3) if ceiling else None
    results["chain"] = args.chain
    results["server"] = "uvicorn in the make-run process (gateway, chain, oracle, simulator)"
    results["load_at_end"] = load_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    _table(results)
    return 0


def _cpu() -> float:
    """CPU seconds of this process, every thread (chain, gateway, oracle, simulator)."""
    times = os.times()
    return times.user + times.system


def _idle_cpu_rate(seconds: float = 2.0) -> float:
    """CPU seconds per second this process spends with no request to answer (the oracle polling the
    chain, the dev node's timers): subtracted from each load's CPU before it is divided by requests."""
    cpu0, wall0 = _cpu(), time.monotonic()
    time.sleep(seconds)
    return (_cpu() - cpu0) / (time.monotonic() - wall0)


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
    """py-spy sampling this process (all threads, idle excluded) while one load runs."""

    def __init__(self, directory: Path | None, kind: str) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).with_name("py-spy")
        out = directory / f"api-{kind}.txt"
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
            str(os.getpid()),
        ]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=60)


def _table(results: dict[str, Any]) -> None:
    load = results["order_status"]["load"]
    print(f"API on loopback, {results['chain']} chain; {load['cores']} cores, load {load['loadavg_1m']}")
    print(
        f"{'route':<14}{'rps':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"
        f"{'CPU ms/req':>12}{'gen ms/req':>12}"
    )
    for key in ("healthz", "order_status", "quote"):
        r = results[key]
        print(
            f"{key:<14}{r['rps']:>10}{r['p50_ms']:>10}{r['p99_ms']:>10}{r['errors']:>8}"
            f"{r['server_cpu_ms_per_request']:>12}{r['loadgen_cpu_ms_per_request']:>12}"
        )


if __name__ == "__main__":
    sys.exit(main())
