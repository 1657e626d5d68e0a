"""The embedded system's child processes (``cardless.cli.child``): the simulated provider started as a
process of its own on a port the OS picked and read back, answering; stopped and reaped; and gone when
its parent is killed without a chance to stop it. (``cardless demo`` runs the simulator and the oracle
worker this way: tests/integration/test_demo.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from adapters.simulator.config import default_config
from cardless.cli.child import ChildProcess, ChildStartError
from cardless.cli.embedded import SimulatorProcess

ROOT = Path(__file__).resolve().parents[2]

PARENT = """
import sys, time
from adapters.simulator.config import default_config
from cardless.cli.embedded import SimulatorProcess
sim = SimulatorProcess(default_config()).start()
print(sim.pid, sim.url, flush=True)
time.sleep(120)
"""


def gone(pid: int) -> bool:
    """No such process, or a zombie no one has reaped yet (it runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.slow
def test_the_simulator_runs_as_a_child_on_a_port_it_announces_and_is_reaped() -> None:
    sim = SimulatorProcess(default_config()).start()
    pid = sim.pid
    assert pid is not None and pid != os.getpid()
    try:
        port = int(sim.url.rsplit(":", 1)[1])
        assert port not in (0, 8601)  # the OS's pick, read back
        assert httpx.get(f"{sim.url}/_sim/ledger", timeout=5).json() == {"credits": [], "reversals": []}
    finally:
        sim.stop()
    # stop() waited for it: no longer running, and not left a zombie of ours either.
    assert gone(pid)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    sim.stop()  # twice is harmless


@pytest.mark.slow
def test_a_child_outlives_no_parent_killed_without_warning() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline().split()
        assert len(line) == 2, line
        child = int(line[0])
        assert httpx.get(f"{line[1]}/_sim/faults", timeout=5).status_code == 200
    finally:
        parent.send_signal(signal.SIGKILL)  # no handler, no finally: only the kernel closes its pipe
        parent.wait()
    # The child saw its lifeline close and stopped itself (SIGTERM: uvicorn's graceful stop).
    assert wait_gone(child, 15), f"the simulator (pid {child}) outlived its parent"


def test_a_child_that_dies_at_start_up_is_an_error_not_a_hang() -> None:
    child = ChildProcess("a broken child", "cardless.no_such_module")
    started = time.monotonic()
    with pytest.raises(ChildStartError, match="did not start: it exited with 1"):
        child.start(timeout=30)
    assert time.monotonic() - started < 30
    assert child.process is None
