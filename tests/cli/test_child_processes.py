"""The embedded system's child processes (``cardless.cli.child``): the simulated provider started as a
process of its own on a port the OS picked and read back, answering, and gone when its parent is killed
without a chance to stop it; a child that fails at start-up. (``cardless demo`` runs the chain, the
simulator and the oracle worker as children, and checks that none outlives it:
tests/integration/test_demo.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cardless.cli.child import ChildProcess, ChildStartError

ROOT = Path(__file__).resolve().parents[2]

PARENT = """
import time
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
        assert int(line[1].rsplit(":", 1)[1]) not in (0, 8601)  # the port the OS picked, read back
        assert httpx.get(f"{line[1]}/_sim/ledger", timeout=5).json() == {"credits": [], "reversals": []}
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
