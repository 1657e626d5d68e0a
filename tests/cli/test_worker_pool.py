"""``cardless oracle --workers N``'s supervisor (``cardless.cli.workers.WorkerPool``) with stand-in
workers: small Python processes that behave like ``cardless oracle`` (say "oracle running:", exit 0 on
SIGTERM) or that fail at start-up. The real pool of oracle workers runs in the chaos test
(tests/integration/test_several_workers.py)."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from cardless.cli.workers import WorkerPool

WORKER = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("oracle running: stand-in", os.getpid(), "metrics", os.environ.get("CARDLESS_METRICS_PORT"), flush=True)
while True:
    time.sleep(0.05)
"""
FAILING = "import sys; print('CARDLESS_DATABASE_URL: the database does not answer', flush=True); sys.exit(1)"


class Output(io.BytesIO):
    """The pool's output, readable while it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, data: bytes) -> int:  # type: ignore[override]
        with self.lock:
            return super().write(data)

    def text(self) -> str:
        with self.lock:
            return self.getvalue().decode()


@pytest.fixture
def output() -> Output:
    return Output()


def wait_until(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def running(output: Output) -> Iterator[tuple[WorkerPool, threading.Event, list[int]]]:
    pool = WorkerPool(2, command=[sys.executable, "-c", WORKER], out=output, restart_delay=0.1)
    stop = threading.Event()
    ready: list[int] = []
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(pool.run(stop, on_ready=lambda: ready.append(len(pool.pids()))))
    )
    thread.start()
    try:
        yield pool, stop, ready
    finally:
        stop.set()
        thread.join(30)
    assert result == [0]


def test_the_pool_starts_every_worker_and_says_when_all_are_running(
    running: tuple[WorkerPool, threading.Event, list[int]], output: Output
) -> None:
    pool, _, ready = running
    wait_until(lambda: ready)
    assert ready == [2]
    pids = pool.pids()
    assert len(set(pids)) == 2
    for slot, pid in enumerate(pids, start=1):  # every line says which worker wrote it
        wait_until(lambda pid=pid: f"| oracle running: stand-in {pid}" in output.text())
        assert f"w{slot} {pid} | oracle running: stand-in {pid} metrics None" in output.text()


def test_a_killed_worker_is_started_again_and_stop_ends_them_all_with_sigterm(
    running: tuple[WorkerPool, threading.Event, list[int]], output: Output
) -> None:
    pool, stop, ready = running
    wait_until(lambda: ready)
    first, second = pool.pids()
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: len(pool.pids()) == 2 and first not in pool.pids())
    assert second in pool.pids()  # the other worker was left alone
    assert "worker 1 killed by SIGKILL" in output.text()
    replacement = next(p for p in pool.pids() if p != second)
    wait_until(lambda: f"w1 {replacement} | oracle running" in output.text())

    stop.set()
    wait_until(lambda: not pool.pids())
    for pid in (replacement, second):  # exited (and reaped), not left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_worker_that_keeps_failing_at_start_up_stops_the_pool(output: Output) -> None:
    pool = WorkerPool(
        2, command=[sys.executable, "-c", FAILING], out=output, restart_delay=0.01, max_start_failures=3
    )
    began = time.monotonic()
    assert pool.run(threading.Event()) == 1
    assert time.monotonic() - began < 20
    text = output.text()
    assert "the database does not answer" in text  # the worker's own reason is in the output
    assert "3 times in a row at start-up: giving up" in text
    assert not pool.pids()


def test_each_worker_serves_its_metrics_on_a_port_of_its_own(output: Output) -> None:
    env = {**os.environ, "CARDLESS_METRICS_PORT": "9300"}
    pool = WorkerPool(3, command=[sys.executable, "-c", WORKER], env=env, out=output)
    stop = threading.Event()
    thread = threading.Thread(target=pool.run, args=(stop,), kwargs={"on_ready": stop.set})
    thread.start()
    thread.join(30)
    ports = sorted(int(line.rsplit(" ", 1)[1]) for line in output.text().splitlines() if "metrics" in line)
    assert ports == [9300, 9301, 9302]
