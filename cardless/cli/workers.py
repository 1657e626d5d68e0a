"""``cardless oracle --workers N``: N oracle worker processes on one machine, kept running.

Each worker is a process of its own (``cardless oracle`` with ``--workers 1``): its own interpreter,
event loop, database connections and provider clients. Workers share nothing in memory; they
coordinate only through the database (work leases, the watcher's cursor lock, the nonce row), exactly as
workers on different machines do, so N processes here and N machines are the same system.

The pool is a supervisor that does no oracle work and imports nothing heavy:

- it starts the N workers and prefixes every line they print with ``w<slot> <pid> |``;
- a worker that dies is started again. One killed by a signal (the OOM killer, an operator) or that ran
  for a while comes back after ``restart_delay``; one that keeps failing at start-up (bad settings, the
  database down) is retried with a doubling delay, and after ``max_start_failures`` in a row the pool
  stops everything and exits 1 rather than loop forever;
- with ``CARDLESS_METRICS_PORT=P``, worker k serves its metrics on ``P + k - 1`` (one port each);
- SIGTERM or SIGINT stops the workers with SIGTERM (each finishes the provider calls it started) and
  SIGKILLs any that has not exited after ``stop_timeout``.

A worker's leases outlive it: its restarted successor on this host frees them at once (same host, dead
pid: ``oracles.worker.dead_local_workers``); other hosts' workers take them over when they lapse.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO

__all__ = ["WorkerPool", "worker_command"]

METRICS_PORT = "CARDLESS_METRICS_PORT"
READY = b"oracle running:"
"""What ``cardless oracle`` prints once it is up and handles SIGTERM."""


def worker_command() -> list[str]:
    """One worker: this interpreter running ``cardless oracle --workers 1``."""
    return [sys.executable, "-m", "cardless.cli.main", "oracle", "--workers", "1"]


@dataclasses.dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ready: bool = False
    starts: int = 0
    start_failures: int = 0  # consecutive exits with an error before it lived `settle_time`
    restart_at: float | None = None
    reader: threading.Thread | None = None


class WorkerPool:
    def __init__(
        self,
        count: int,
        *,
        command: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        out: IO[bytes] | None = None,
        restart_delay: float = 0.5,
        max_restart_delay: float = 30.0,
        settle_time: float = 10.0,
        max_start_failures: int = 5,
        stop_timeout: float = 20.0,
    ) -> None:
        if count < 1:
            raise ValueError(f"a pool needs at least one worker, not {count}")
        self.count = count
        self.command = list(command or worker_command())
        self.env = env
        self.out: IO[bytes] = out or sys.stderr.buffer
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.settle_time = settle_time
        self.max_start_failures = max_start_failures
        self.stop_timeout = stop_timeout
        self.slots = [_Slot(i + 1) for i in range(count)]
        self._write_lock = threading.Lock()

    # ------------------------------------------------------------------ output

    def say(self, line: str) -> None:
        self._write(f"pool | {line}\n".encode())

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            self.out.write(data)
            self.out.flush()

    def _pump(self, slot: _Slot, process: subprocess.Popen[bytes]) -> None:
        """Copy a worker's output, each line prefixed with its slot and pid; notice it is ready."""
        assert process.stdout is not None
        prefix = f"w{slot.index} {process.pid} | ".encode()
        for line in iter(process.stdout.readline, b""):
            if READY in line and slot.process is process:
                slot.ready = True
            self._write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
        process.stdout.close()

    # ------------------------------------------------------------------ life cycle

    def _env(self, slot: _Slot) -> dict[str, str] | None:
        """A worker's environment: the pool's, with its own metrics port (``CARDLESS_METRICS_PORT`` +
        slot - 1) when the pool was given one, as every worker serves its own /metrics."""
        base = (self.env if self.env is not None else os.environ).get(METRICS_PORT, "")
        if not base.isascii() or not base.isdigit() or int(base) == 0:
            return self.env
        return {
            **(self.env if self.env is not None else os.environ),
            METRICS_PORT: str(int(base) + slot.index - 1),
        }

    def _start(self, slot: _Slot) -> None:
        process = subprocess.Popen(
            self.command,
            env=self._env(slot),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        slot.process, slot.started, slot.ready, slot.restart_at = process, time.monotonic(), False, None
        slot.starts += 1
        slot.reader = threading.Thread(
            target=self._pump, args=(slot, process), name=f"worker-{slot.index}-output", daemon=True
        )
        slot.reader.start()
        self.say(f"worker {slot.index} started: pid {process.pid}")

    def _reap(self, slot: _Slot, code: int) -> bool:
        """A worker exited on its own (or was killed): schedule its restart. False to give up."""
        lived = time.monotonic() - slot.started
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        slot.process = None
        if code > 0 and lived < self.settle_time:
            slot.start_failures += 1
        else:
            slot.start_failures = 0
        if slot.start_failures >= self.max_start_failures:
            self.say(
                f"worker {slot.index} {how} after {lived:.1f} s, {slot.start_failures} times in a row at "
                "start-up: giving up (its output above says why)"
            )
            return False
        delay = min(self.max_restart_delay, self.restart_delay * 2**slot.start_failures)
        slot.restart_at = time.monotonic() + delay
        self.say(f"worker {slot.index} {how} after {lived:.1f} s; restarting in {delay:.1f} s")
        return True

    def run(self, stop: threading.Event, *, on_ready: Callable[[], None] | None = None) -> int:
        """Run the pool until ``stop`` is set (0) or a worker keeps failing at start-up (1)."""
        for slot in self.slots:
            self._start(slot)
        announced = False
        code = 0
        try:
            while not stop.is_set():
                for slot in self.slots:
                    if slot.process is not None:
                        exited = slot.process.poll()
                        if exited is not None and not self._reap(slot, exited):
                            code = 1
                            stop.set()
                            break
                    elif slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                        self._start(slot)
                if not announced and all(s.ready for s in self.slots):
                    announced = True
                    if on_ready is not None:
                        on_ready()
                stop.wait(0.1)
        finally:
            self.stop()
        return code

    def stop(self) -> None:
        """SIGTERM every worker; SIGKILL whoever is still there after ``stop_timeout``."""
        running = [s.process for s in self.slots if s.process is not None and s.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"pid {process.pid} ignored SIGTERM for {self.stop_timeout:.0f} s: SIGKILL")
                process.kill()
                process.wait(10)
        for slot in self.slots:
            if slot.reader is not None:
                slot.reader.join(5)
            slot.process = None

    def pids(self) -> list[int]:
        return [s.process.pid for s in self.slots if s.process is not None]


def pool_environment() -> dict[str, str]:
    """The workers' environment: this one, unbuffered so lines arrive as they are written."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
