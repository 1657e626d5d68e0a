"""``cardless run`` supervises its child processes (``cardless.cli.supervisor``), with real processes: an
oracle worker or simulated provider killed with SIGKILL is started again and orders still settle; the
dev chain killed stops ``cardless run`` with exit 3 and a message that says why; a child that crashes
at once, again and again, is given up on with an error. (A clean stop stops every child:
tests/cli/test_child_processes.py, tests/integration/test_demo.py.)"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cardless.cli.child import ChildProcess
from cardless.cli.main import EXIT_CHILD_FAILED
from cardless.cli.supervisor import RestartPolicy, Supervisor
from cardless.cli.system import System
from tests.cli.test_child_processes import wait_gone
from tests.support.shop import Shop, dev_wallet, gateway_settings

ROOT = Path(__file__).resolve().parents[2]
FAST = RestartPolicy(first_delay=0.05, max_delay=0.2, max_restarts=3, window=60)


def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.02)
    return result


# ---------------------------------------------------------------------------- given up on


@pytest.mark.parametrize("crash_at", ["running", "start"])
def test_a_child_that_crashes_at_once_again_and_again_is_given_up_on(
    crash_at: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = {**os.environ, "CRASH_AT": crash_at, "PYTHONPATH": str(ROOT)}

    def spawn() -> ChildProcess:
        return ChildProcess("the crasher", "tests.cli.crashing_child", env=env).spawn()

    fatal: list[str] = []
    halted = threading.Event()
    supervisor = Supervisor(FAST, lambda message: (fatal.append(message), halted.set()))
    first = spawn()
    if crash_at == "running":
        assert first.ready(10) == "ready"
    caplog.set_level(logging.WARNING, logger="cardless.supervisor")
    supervisor.watch("crasher", first, child=lambda c: c, spawn=spawn, ready=lambda c: c.ready(10))
    try:
        assert halted.wait(30), "the supervisor never gave up"
    finally:
        supervisor.stop()
    assert supervisor.states() == {"crasher": "down"}
    # The first exit and each failed restart count: 4 failures > max_restarts=3 within the window.
    assert len(fatal) == 1
    assert re.fullmatch(r"the crasher failed 4 times in 60 s \(the last time it .+\); giving up", fatal[0])
    if crash_at == "running":
        assert supervisor.restarts() == {"crasher": 3}  # each came up, announced itself, then crashed
        assert "exited with 3" in fatal[0]
    else:
        assert supervisor.restarts() == {"crasher": 0}
        assert "did not start again" in fatal[0]
    # Logged: the name, the pid, how it ended and its last words on stderr; then each back-off, doubling.
    text = caplog.text
    assert re.search(r"the crasher \(pid \d+\) exited with 3 after [\d.]+ s; its last lines:", text)
    assert "crashing on purpose" in text
    delays = [float(d) for d in re.findall(r"restarting the crasher in ([\d.]+) s", text)]
    assert delays == [0.05, 0.1, 0.2]
    assert "the system stops" in text
    assert first.process is None  # the dead one was reaped


# ---------------------------------------------------------------------------- restarted


@pytest.fixture
def children_system(tmp_path: Path) -> Iterator[System]:
    """The embedded system as ``cardless run`` starts it: node, simulator and oracle in child processes."""
    system = System(gateway_settings(tmp_path), children=True)
    system.restart_policy = RestartPolicy(first_delay=0.1)
    system.start()
    try:
        yield system
    finally:
        system.stop()


def settle_one(shop: Shop, wallet: int) -> None:
    buyer = dev_wallet(wallet)
    quote = shop.quote(buyer).json()
    shop.pay(buyer, quote)
    shop.wait_for(quote["order_id"], "settled", timeout=60)


@pytest.mark.slow
def test_a_killed_oracle_or_simulator_comes_back_and_orders_still_settle(children_system: System) -> None:
    system = children_system
    shop = Shop(system)
    health = httpx.Client(base_url=system.gateway_url, timeout=10)
    try:
        body = health.get("/v1/health").json()
        assert body["status"] == "ok"
        assert body["processes"] == {"dev_chain": "running", "simulator": "running", "oracle": "running"}

        oracle = system.oracle_process
        assert oracle is not None and oracle.pid is not None
        os.kill(oracle.pid, signal.SIGKILL)
        # /v1/health says so while it is away (a worker takes seconds to start).
        body = until(
            lambda: (b := health.get("/v1/health").json())["processes"]["oracle"] == "restarting" and b,
            10,
            "the oracle's death seen in /v1/health",
        )
        assert body["status"] == "degraded"
        until(lambda: system.process_states()["oracle"] == "running", 60, "the oracle restarted")
        assert system.oracle_process is not None and system.oracle_process.pid not in (None, oracle.pid)
        assert wait_gone(oracle.pid, 5)
        assert health.get("/v1/health").json()["status"] == "ok"
        settle_one(shop, 3)  # the new worker takes the order end to end

        simulator = system.simulator
        assert simulator is not None and simulator.pid is not None
        url, pid = simulator.url, simulator.pid
        os.kill(pid, signal.SIGKILL)
        until(lambda: system.simulator is not simulator, 30, "the simulator replaced")
        assert system.process_states()["simulator"] == "running"
        # Same URL (the adapters and the oracle know it), a new process.
        assert system.simulator.url == url and system.simulator.pid != pid
        shop.sim = httpx.Client(base_url=url, timeout=10)
        settle_one(shop, 4)
        assert health.get("/v1/health").json()["processes"] == {
            "dev_chain": "running",
            "simulator": "running",
            "oracle": "running",
        }
        assert system.failure is None and not system.halt.is_set()
    finally:
        health.close()
        shop.close()


# ---------------------------------------------------------------------------- not replaced


def children_of(pid: int) -> dict[int, str]:
    """The child processes of ``pid`` with their command lines."""
    found: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found[int(child)] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return found


@pytest.mark.slow
def test_the_dev_chain_dying_stops_cardless_run_with_exit_3_and_why(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CARDLESS_ENVIRONMENT": "development",
        "CARDLESS_VAR_DIR": str(tmp_path),
        "CARDLESS_CHAIN_PORT": "0",
        "CARDLESS_GATEWAY_PORT": "0",
        "CARDLESS_SIMULATOR_PORT": "0",
        "CARDLESS_KEYSTORE_SCRYPT_N": "1024",
        "CARDLESS_LOG_FORMAT": "json",
    }
    run = subprocess.Popen(
        [sys.executable, "-m", "cardless.cli.main", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert run.stderr is not None
        for line in run.stderr:
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        else:
            pytest.fail("cardless run did not start:\n" + "".join(lines[-30:]))
        children = children_of(run.pid)
        node = [pid for pid, command in children.items() if "cardless.devchain" in command]
        assert len(node) == 1 and len(children) == 3, children
        os.kill(node[0], signal.SIGKILL)
        code = run.wait(60)
        lines += run.stderr.readlines()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    output = "".join(lines)
    assert code == EXIT_CHILD_FAILED, output[-3000:]
    assert re.search(
        r"cardless run stopped: the dev chain was killed by SIGKILL and is not restarted: it keeps the chain "
        r"in memory",
        " ".join(output.split()),
    ), output[-3000:]
    for pid in children:  # the oracle and the simulator were stopped, not left behind
        assert wait_gone(pid, 15), f"{children[pid]} (pid {pid}) outlived cardless run"
