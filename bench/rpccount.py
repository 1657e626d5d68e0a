"""What the oracle asks of the node per settled order (issue 12, round 8): a counting JSON-RPC proxy.

    PYTHONPATH=. python -m bench.rpccount [--orders N] [--out FILE]  -> bench/results/rpccount.json

Runs phases ``a`` and ``bmax`` of ``bench.e2e`` (its own code, unchanged) with the oracle's
``CARDLESS_CHAIN_RPC_URL`` pointed at a pass-through proxy in this process. The proxy forwards every
HTTP request to anvil as it came (a JSON-RPC batch stays one batch) and notes, per request, when it came
and its methods. Counted over the same window as e2e's machine table (first pay sent to last order
settled): JSON-RPC calls and HTTP round trips per settled order, by method and by round-trip shape (the
sorted methods of one request: ``eth_blockNumber+eth_getBlockByNumber`` is the watcher's poll).

Anvil's CPU per round trip of each shape is measured after the run, before anvil stops: up to 40 of the
recorded request bodies of each shape are sent again, one at a time, for at least a second of wall time,
and anvil's CPU (``/proc``) is read before and after. Replayed reads see the final chain (a block or
two more than when they were first asked; a replayed ``eth_estimateGas`` of a batch already settled
reverts, which costs about the same: the node executes the call either way). ``eth_sendRawTransaction``
is not replayed (its nonce is used); the settlement transactions' cost is the rest: anvil's CPU per
order in ``bmax`` less one ``pay`` (anvil's CPU per pay in ``a``) less the replayed reads. Their gas
is read from their receipts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
import types
import urllib.parse
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bench.e2e as e2e

RESULTS = Path(__file__).resolve().parent / "results" / "rpccount.json"
_SAMPLES = 40
_REPLAY_MIN_SECONDS = 1.0
_REPLAY_MIN_CALLS = 200
_REPLAY_MAX_CALLS = 4000
_NOT_REPLAYED = frozenset({"eth_sendRawTransaction"})


class CountingProxy:
    """HTTP JSON-RPC pass-through to ``target``, noting each request's time and methods."""

    def __init__(self, target: str) -> None:
        parsed = urllib.parse.urlsplit(target)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.path = parsed.path or "/"
        self.lock = threading.Lock()
        self.requests: list[tuple[float, tuple[str, ...]]] = []
        self.samples: dict[str, list[bytes]] = defaultdict(list)
        self.sent_txs: list[str] = []
        proxy = self
        local = threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                at = time.time()
                connection = getattr(local, "connection", None)
                if connection is None:
                    connection = local.connection = http.client.HTTPConnection(proxy.host, proxy.port)
                connection.request("POST", proxy.path, body, {"Content-Type": "application/json"})
                answer = connection.getresponse()
                data = answer.read()
                proxy._note(at, body, data)  # before the reply: a caller that counts after it sees this call
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _note(self, at: float, body: bytes, answer: bytes) -> None:
        try:
            parsed = json.loads(body)
        except ValueError:
            return
        calls = parsed if isinstance(parsed, list) else [parsed]
        methods = tuple(str(c.get("method")) for c in calls if isinstance(c, dict))
        with self.lock:
            self.requests.append((at, methods))
            shape = _shape(methods)
            if len(self.samples[shape]) < _SAMPLES:
                self.samples[shape].append(body)
            if "eth_sendRawTransaction" in methods:
                try:
                    replies = json.loads(answer)
                except ValueError:
                    replies = None
                for reply in replies if isinstance(replies, list) else [replies]:
                    if isinstance(reply, dict) and isinstance(reply.get("result"), str):
                        self.sent_txs.append(reply["result"])

    def replay(self, anvil_pid: int) -> dict[str, dict[str, float]]:
        """Anvil's CPU per round trip of each recorded shape, by sending its samples again, serially."""
        connection = http.client.HTTPConnection(self.host, self.port)
        costs: dict[str, dict[str, float]] = {}
        for shape, bodies in sorted(self.samples.items()):
            if set(shape.split("+")) & _NOT_REPLAYED:
                continue
            sent = 0
            cpu0 = _cpu(anvil_pid)
            started = time.monotonic()
            while sent < _REPLAY_MAX_CALLS and (
                sent < _REPLAY_MIN_CALLS or time.monotonic() - started < _REPLAY_MIN_SECONDS
            ):
                body = bodies[sent % len(bodies)]
                connection.request("POST", self.path, body, {"Content-Type": "application/json"})
                connection.getresponse().read()
                sent += 1
            wall = time.monotonic() - started
            costs[shape] = {
                "replayed": sent,
                "anvil_cpu_us_per_round_trip": round(1e6 * (_cpu(anvil_pid) - cpu0) / sent, 1),
                "wall_us_per_round_trip": round(1e6 * wall / sent, 1),
            }
        connection.close()
        return costs

    def gas(self) -> dict[str, int]:
        """Receipts of the transactions sent through the proxy: how many mined, and their gas."""
        connection = http.client.HTTPConnection(self.host, self.port)
        used = mined = 0
        for start in range(0, len(self.sent_txs), 100):
            batch = [
                {"jsonrpc": "2.0", "id": i, "method": "eth_getTransactionReceipt", "params": [h]}
                for i, h in enumerate(self.sent_txs[start : start + 100])
            ]
            connection.request("POST", self.path, json.dumps(batch), {"Content-Type": "application/json"})
            for reply in json.loads(connection.getresponse().read()):
                receipt = reply.get("result")
                if receipt:
                    mined += 1
                    used += int(receipt["gasUsed"], 16)
        connection.close()
        return {"transactions_sent": len(self.sent_txs), "transactions_mined": mined, "gas_used": used}

    def window(self, start: float, end: float) -> tuple[Counter[str], Counter[str]]:
        """Calls by method and round trips by shape, from ``start`` to ``end``."""
        methods: Counter[str] = Counter()
        shapes: Counter[str] = Counter()
        with self.lock:
            for at, called in self.requests:
                if start <= at <= end:
                    methods.update(called)
                    shapes[_shape(called)] += 1
        return methods, shapes

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _shape(methods: tuple[str, ...]) -> str:
    return "+".join(sorted(set(methods))) + (f" x{len(methods)}" if len(methods) > 1 else "")


def _cpu(pid: int) -> float:
    return e2e._processes().get(pid, (0, 0.0))[1]


def _anvil_pid() -> int:
    stats = e2e._processes()
    for pid in sorted(e2e._descendants(e2e.os.getpid(), stats)):
        try:
            if b"anvil" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    raise RuntimeError("no anvil under this process")


class _Run:
    """The hooks' state for one phase."""

    def __init__(self) -> None:
        self.proxy: CountingProxy | None = None
        self.pay_start = 0.0
        self.last_settled = 0.0
        self.replay: dict[str, dict[str, float]] = {}
        self.gas: dict[str, int] = {}


RUN = _Run()


def _install_hooks() -> None:
    """Point the oracle at the proxy and measure before anvil stops, without changing bench.e2e."""
    start_oracle, stop, loadgen, settled_times = (
        e2e.Stack._start_oracle,
        e2e.Stack.stop,
        e2e._loadgen,
        e2e.Stack.settled_times,
    )
    real_popen = e2e.subprocess.Popen

    def popen(cmd: Any, *args: Any, **kwargs: Any) -> Any:
        env = kwargs.get("env")
        if RUN.proxy is not None and env is not None and "oracle" in cmd:
            kwargs["env"] = {**env, "CARDLESS_CHAIN_RPC_URL": RUN.proxy.url}
        return real_popen(cmd, *args, **kwargs)

    shim = types.ModuleType("subprocess")
    shim.__dict__.update(e2e.subprocess.__dict__)
    shim.Popen = popen  # type: ignore[attr-defined]
    e2e.subprocess = shim  # type: ignore[assignment]

    def start_hook(self: Any) -> None:
        RUN.proxy = CountingProxy(self.system.deployment.rpc_url)
        start_oracle(self)

    def stop_hook(self: Any) -> None:
        if RUN.proxy is not None and self.oracle is not None:
            self.oracle.terminate()  # no more oracle calls while the replay measures anvil
            self.oracle.wait(timeout=30)
            RUN.gas = RUN.proxy.gas()
            RUN.replay = RUN.proxy.replay(_anvil_pid())
        stop(self)

    def loadgen_hook(stack: Any, orders: int, rate: float, out: Path) -> dict[str, Any]:
        gen = loadgen(stack, orders, rate, out)
        RUN.pay_start = gen["pay_start"]
        return gen

    def settled_hook(self: Any, ids: list[str]) -> dict[str, float]:
        found = settled_times(self, ids)
        if found:
            RUN.last_settled = max(found.values())
        return found

    e2e.Stack._start_oracle = start_hook  # type: ignore[method-assign]
    e2e.Stack.stop = stop_hook  # type: ignore[method-assign]
    e2e._loadgen = loadgen_hook
    e2e.Stack.settled_times = settled_hook  # type: ignore[method-assign]


def report(a: dict[str, Any], bmax: dict[str, Any]) -> dict[str, Any]:
    assert RUN.proxy is not None
    settled = bmax["settled"]
    methods, shapes = RUN.proxy.window(RUN.pay_start, RUN.last_settled)
    per = lambda n: round(n / settled, 3)  # noqa: E731
    shape_rows = {}
    reads_ms = 0.0
    for shape, trips in shapes.most_common():
        cost = RUN.replay.get(shape)
        row: dict[str, Any] = {"round_trips_per_order": per(trips)}
        if cost is not None:
            ms = trips * cost["anvil_cpu_us_per_round_trip"] / 1000 / settled
            reads_ms += ms
            row.update(cost, anvil_cpu_ms_per_order=round(ms, 3))
        shape_rows[shape] = row
    anvil_bmax = bmax["machine"]["cpu_ms_per_order"].get("anvil", 0.0)
    anvil_pay = a["machine"]["cpu_ms_per_order"].get("anvil", 0.0)
    return {
        "settled": settled,
        "window_seconds": round(RUN.last_settled - RUN.pay_start, 2),
        "raw_pay_tps": a["raw_pay_tps"],
        "settled_tps": bmax["settled_tps"],
        "ratio": round(bmax["settled_tps"] / a["raw_pay_tps"], 3) if a["raw_pay_tps"] else None,
        "anvil_cpu_ms_per_order_bmax": anvil_bmax,
        "anvil_cpu_ms_per_pay_a": anvil_pay,
        "oracle_cpu_ms_per_order": bmax["oracle_cpu_ms_per_order"],
        "busy_cores": bmax["machine"]["busy_cores"],
        "calls_per_order": {m: per(n) for m, n in methods.most_common()},
        "calls_per_order_total": per(sum(methods.values())),
        "round_trips_per_order_total": per(sum(shapes.values())),
        "shapes": shape_rows,
        "reads_anvil_cpu_ms_per_order": round(reads_ms, 3),
        "settlement_txs_anvil_cpu_ms_per_order_rest": round(anvil_bmax - anvil_pay - reads_ms, 3),
        **RUN.gas,
        "gas_per_order": round(RUN.gas.get("gas_used", 0) / settled) if settled else None,
        "orders_per_tx": round(settled / RUN.gas["transactions_mined"], 1)
        if RUN.gas.get("transactions_mined")
        else None,
        "load_during": bmax["load_during"],
    }


def _table(result: dict[str, Any]) -> None:
    print(f"{'round trip (methods)':<72}{'/order':>9}{'us/trip':>9}{'ms/order':>10}")
    for shape, row in result["shapes"].items():
        print(
            f"{shape[:71]:<72}{row['round_trips_per_order']:>9}"
            f"{row.get('anvil_cpu_us_per_round_trip', '-')!s:>9}"
            f"{row.get('anvil_cpu_ms_per_order', '-')!s:>10}"
        )
    print(f"{'method':<40}{'calls/order':>12}")
    for method, n in result["calls_per_order"].items():
        print(f"{method:<40}{n:>12}")
    keys = (
        "calls_per_order_total",
        "round_trips_per_order_total",
        "reads_anvil_cpu_ms_per_order",
        "settlement_txs_anvil_cpu_ms_per_order_rest",
        "anvil_cpu_ms_per_order_bmax",
        "anvil_cpu_ms_per_pay_a",
        "oracle_cpu_ms_per_order",
        "gas_per_order",
        "orders_per_tx",
        "raw_pay_tps",
        "settled_tps",
        "ratio",
        "busy_cores",
    )
    print(json.dumps({k: result[k] for k in keys}))


def paced_a(rates: list[float], orders: int, timeout: float, out: Path) -> int:
    """Phase a (no oracle) with the pays offered at each rate: anvil's CPU per pay against the rate the
    node saw them at. In bmax the pays arrive slower than in a (the oracle shares the cores)."""
    loadgen = e2e._loadgen
    rows = []
    for rate in rates:
        blocks: list[int] = []

        def offered(
            stack: Any, n: int, _rate: float, path: Path, rate: float = rate, blocks: list[int] = blocks
        ) -> dict[str, Any]:
            before = _head(stack.system.deployment.rpc_url)
            gen = loadgen(stack, n, rate, path)
            blocks.append(_head(stack.system.deployment.rpc_url) - before)
            return gen

        e2e._loadgen = offered
        with tempfile.TemporaryDirectory(prefix="cardless-bench-rpccount-") as tmp:
            a = e2e.run_phase("a", Path(tmp), chain="anvil", orders=orders, timeout=timeout)
        rows.append(
            {
                "offered_rate": rate or "max",
                "raw_pay_tps": a["raw_pay_tps"],
                "anvil_cpu_ms_per_pay": a["machine"]["cpu_ms_per_order"].get("anvil"),
                "pays_per_block": round(a["paid"] / blocks[0], 2) if blocks and blocks[0] else None,
                "busy_cores": a["machine"]["busy_cores"],
                "loadavg_1m": a["load_during"]["loadavg_1m"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    e2e._loadgen = loadgen
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _head(url: str) -> int:
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port or 80)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
    connection.request("POST", parsed.path or "/", body, {"Content-Type": "application/json"})
    head = int(json.loads(connection.getresponse().read())["result"], 16)
    connection.close()
    return head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rpccount")
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--a-rates",
        help="instead: phase a alone with the pays offered at each of these rates (comma-separated, 0: as "
        "fast as the node takes them), and anvil's CPU per pay at each",
    )
    args = parser.parse_args(argv)
    if args.a_rates:
        return paced_a([float(r) for r in args.a_rates.split(",")], args.orders, args.timeout, args.out)
    _install_hooks()
    with tempfile.TemporaryDirectory(prefix="cardless-bench-rpccount-") as tmp:
        a = e2e.run_phase("a", Path(tmp), chain="anvil", orders=args.orders, timeout=args.timeout)
        bmax = e2e.run_phase("bmax", Path(tmp), chain="anvil", orders=args.orders, timeout=args.timeout)
    result = report(a, bmax)
    if RUN.proxy is not None:
        RUN.proxy.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
