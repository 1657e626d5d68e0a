"""The benches' load generator and JSON writers (the benches themselves run only under `make bench-*`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench import e2e, loadgen


class _Orders(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the gateway
    # Headers and body go out as two writes: with Nagle on, the body waited for the client's delayed ACK
    # (~40 ms), so each request on a kept-alive connection took 40 ms and the tests measured that.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        known = self.path.endswith("0x" + "11" * 32)
        body = b'{"state": "settled"}' if known else b"{}"
        self.send_response(200 if known else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Orders)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _run(server: str, tmp_path: Path, ids: list[str]) -> dict[str, object]:
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    out = tmp_path / "out.json"
    args = ["api", "--url", server, "--kind", "status", "--order-ids", str(tmp_path / "ids.json")]
    loadgen.main([*args, "--seconds", "0.2", "--warmup", "0.05", "--concurrency", "2", "--out", str(out)])
    result: dict[str, object] = json.loads(out.read_text())
    return result


def test_the_api_load_generator_writes_rates_latencies_and_the_machine_load(
    server: str, tmp_path: Path
) -> None:
    result = _run(server, tmp_path, ["0x" + "11" * 32])
    assert result["errors"] == 0
    assert isinstance(result["requests"], int) and result["requests"] > 0
    assert isinstance(result["rps"], float) and result["rps"] > 0
    assert isinstance(result["p50_ms"], float) and 0 < result["p50_ms"] <= result["p99_ms"]  # type: ignore[operator]
    load = result["load"]
    assert isinstance(load, dict) and load["cores"] >= 1 and load["loadavg_1m"] >= 0


def test_answers_other_than_the_expected_status_count_as_errors(server: str, tmp_path: Path) -> None:
    result = _run(server, tmp_path, ["0x" + "22" * 32])
    assert result["requests"] == 0
    assert isinstance(result["errors"], int) and result["errors"] > 0


class _Chunked(BaseHTTPRequestHandler):
    """Every other answer chunked, every third one closing the connection: the generator's hand-written
    HTTP/1.1 client must read each whole and reconnect when told."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as _Orders
    count = 0

    def do_GET(self) -> None:
        type(self).count += 1
        n = type(self).count
        self.send_response(200)
        if n % 3 == 0:
            self.send_header("Connection", "close")
        if n % 2:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b'5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n')
        else:
            self.send_header("Content-Length", "7")
            self.end_headers()
            self.wfile.write(b'{"a":1}')
        if n % 3 == 0:
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_the_generator_reads_chunked_answers_and_reconnects_after_connection_close(tmp_path: Path) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Chunked)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        result = _run(f"http://127.0.0.1:{httpd.server_address[1]}", tmp_path, ["0x" + "11" * 32])
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result["errors"] == 0
    assert isinstance(result["requests"], int) and result["requests"] > 3


class _Stall(BaseHTTPRequestHandler):
    """Answers at once, except the 10th request, which takes 300 ms."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as _Orders
    count = 0

    def do_GET(self) -> None:
        type(self).count += 1
        if type(self).count == 10:
            time.sleep(0.3)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_the_open_loop_counts_latency_from_when_a_request_was_due(tmp_path: Path) -> None:
    # One connection, 100 requests/s: the ~30 requests due during the 300 ms stall wait for it. A closed
    # loop would count one slow request; the open loop counts every one that waited, from its due time.
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stall)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    (tmp_path / "ids.json").write_text(json.dumps(["0x" + "11" * 32]))
    out = tmp_path / "out.json"
    try:
        loadgen.main(
            [
                *("api", "--url", f"http://127.0.0.1:{httpd.server_address[1]}", "--kind", "status"),
                *("--order-ids", str(tmp_path / "ids.json"), "--seconds", "0.5", "--warmup", "0.05"),
                *("--rate", "100", "--connections", "1", "--out", str(out)),
            ]
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
    result = json.loads(out.read_text())
    assert result["loop"] == "open" and result["offered_rps"] == 100 and result["connections_opened"] == 1
    assert result["errors"] == 0 and 45 <= result["requests"] <= 50
    assert result["p99_ms"] >= 250
    assert result["p50_ms"] > 20  # a closed loop's median here is about 1 ms
    assert result["most_in_flight"] >= 20


def test_percentiles_and_the_e2e_summary_keys() -> None:
    assert loadgen.percentiles(list(range(1, 101))) == {
        "p50": 50.5,
        "p95": 95.0,
        "p99": 99.0,
    }  # rounded to 0.1
    assert loadgen.percentiles([]) == {"p50": None, "p95": None, "p99": None}
    phases = {
        "a": {"raw_pay_tps": 80.0},
        "b50": {"settled_tps": 40.0, "p50_ms": 300.0, "p95_ms": 700.0, "p99_ms": 900.0},
        "bmax": {"settled_tps": 64.0},
        "c": {"settled_tps": 60.0},
        "d4": {"settled_tps": 70.0},
    }
    summary = e2e.summarise(phases)
    assert summary["ratio"] == 0.8
    assert (summary["p50_ms"], summary["p99_ms"]) == (300.0, 900.0)
    assert summary["settled_tps_provider_200ms"] == 60.0
    assert summary["settled_tps_pg_4_workers"] == 70.0
    assert summary["settled_tps_pg_1_worker"] is None


def test_a_phases_subset_merges_into_the_existing_e2e_file(tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"
    full = {
        "a": {"raw_pay_tps": 100.0},
        "b50": {"settled_tps": 40.0, "p50_ms": 300.0, "p95_ms": 700.0, "p99_ms": 900.0},
        "bmax": {"settled_tps": 50.0},
        "c": {"settled_tps": 45.0},
        "d1": {"settled_tps": 30.0},
        "d4": {"settled_tps": 31.0},
    }
    out.write_text(json.dumps(e2e.merge_report(out, chain="anvil", orders=200, phases=full)))
    report = e2e.merge_report(
        out, chain="anvil", orders=200, phases={"a": {"raw_pay_tps": 80.0}, "bmax": {"settled_tps": 64.0}}
    )
    assert report["phases"]["a"] == {"raw_pay_tps": 80.0}
    assert list(report["phases"]) == ["a", "b50", "bmax", "c", "d1", "d4"]
    assert report["ratio"] == report["summary"]["ratio"] == 0.8
    assert (report["p50_ms"], report["settled_tps_provider_200ms"]) == (300.0, 45.0)
    assert report["settled_tps_pg_4_workers"] == 31.0
    # another N is another experiment: it replaces the file instead of mixing with it
    other = e2e.merge_report(out, chain="anvil", orders=1000, phases={"a": {"raw_pay_tps": 90.0}})
    assert list(other["phases"]) == ["a"] and other["p50_ms"] is None


def test_the_oracles_cpu_is_split_by_process() -> None:
    """The e2e bench's CPU per order per process: each process of a tree by pid, from a moment on."""
    import os
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        sampler = e2e._CpuSampler(os.getpid())
        start = time.time()
        busy = time.process_time() + 0.3
        while time.process_time() < busy:  # burn 0.3 s of this process's CPU
            pass
        by_process = sampler.by_process(start)  # to now: it takes a last sample when it stops
        assert set(by_process) >= {os.getpid(), child.pid}
        assert 0.25 <= by_process[os.getpid()] <= 5.0  # /proc counts in 10 ms ticks
        assert by_process[child.pid] < 0.2  # asleep
        tree = e2e._tree_cpu_by_process(os.getpid())
        assert abs(e2e._tree_cpu_seconds(os.getpid()) - sum(tree.values())) < 0.1
    finally:
        child.kill()
        child.wait()


def test_the_machines_cpu_is_split_by_component() -> None:
    """The e2e bench's machine table: each process's CPU charged to its component by command line (the
    oracle by its process tree), over a window, with the cores' busy time beside it."""
    import subprocess
    import sys
    import time

    # each child burns 0.3 s of CPU once told to (a line on stdin), then sleeps
    burn = (
        "import sys, time\nsys.stdin.readline()\n"
        "end = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    )
    oracle = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
    generator = subprocess.Popen([sys.executable, "-c", burn + "  # bench.loadgen"], stdin=subprocess.PIPE)
    try:
        sampler = e2e._MachineSampler(oracle.pid)
        start = time.time()
        for child in (oracle, generator):
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            child.stdin.flush()
        time.sleep(1.0)  # both burn inside the window
        window = sampler.window(start)
        cpu = window["cpu_seconds"]
        assert 0.2 <= cpu["oracle"] <= 1.0 and 0.2 <= cpu["load generator"] <= 1.0, cpu
        assert cpu.get("bench (gateway)", 0.0) < 0.2  # this process slept
        assert window["busy_cores"] is not None and window["busy_cores"] >= 0.4  # 0.6 s busy in ~1 s
        per = e2e._per_order(window, 100)
        assert per["cpu_ms_per_order"]["oracle"] == round(10 * cpu["oracle"], 2)
        assert per["cpu_ms_per_order_total"] == round(sum(per["cpu_ms_per_order"].values()), 2)
    finally:
        for child in (oracle, generator):
            child.kill()
            child.wait()


class _JsonRpc(BaseHTTPRequestHandler):
    """eth_blockNumber answers; any other method is a JSON-RPC error; every 3rd connection's 2nd request
    is answered with ``Connection: close``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as _Orders
    connections = 0

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1
        self.served = 0

    def do_POST(self) -> None:
        call = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.served += 1
        if call["method"] == "eth_blockNumber":
            reply = {"jsonrpc": "2.0", "id": call["id"], "result": hex(call["id"])}
        else:
            error = {"code": -32601, "message": "no such method"}
            reply = {"jsonrpc": "2.0", "id": call["id"], "error": error}
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.connections % 3 == 0 and self.served == 2:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_buyers_json_rpc_reuses_connections_and_reports_node_errors() -> None:
    import asyncio

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _JsonRpc)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()

    async def calls() -> list[int]:
        rpc = loadgen._Rpc(f"http://127.0.0.1:{httpd.server_address[1]}")
        got = [int(n, 16) for n in await asyncio.gather(*(rpc.call("eth_blockNumber") for _ in range(8)))]
        got += [int(await rpc.call("eth_blockNumber"), 16) for _ in range(20)]  # one at a time: reused
        with pytest.raises(RuntimeError, match=r"eth_nope: .*no such method"):
            await rpc.call("eth_nope")
        rpc.close()
        return got

    try:
        got = asyncio.run(calls())
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert sorted(got) == list(range(1, 29))  # every call answered with its own id
    # 8 at once open 8; the 20 in a row reuse them, reconnecting only after a `Connection: close`
    assert 8 <= _JsonRpc.connections <= 14


def test_the_embedded_systems_children_are_named() -> None:
    """`make run`'s children (the py-evm node, the simulator, the oracle) are charged to their component
    by their command line, as anvil and bench.provider are."""
    import os
    import subprocess
    import sys
    import time

    def named(*args: str) -> str:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", *args])
        try:
            deadline = time.monotonic() + 10
            while b"time.sleep" not in Path(f"/proc/{child.pid}/cmdline").read_bytes():  # exec'd yet?
                assert time.monotonic() < deadline
                time.sleep(0.01)
            return e2e._component(child.pid, set(), {})
        finally:
            child.kill()
            child.wait()

    assert named("-m", "cardless.cli.child", "cardless.devchain", "--ws") == "dev node"
    assert named("-m", "cardless.cli.child", "adapters.simulator") == "provider"
    assert named("-m", "cardless.cli.child", "cardless.cli.embedded_oracle") == "oracle"
    assert named("-m", "something.else") == "other"
    assert e2e._component(os.getpid(), set(), {}) == "bench (gateway)"
