"""``cardless run --chain anvil``: the embedded system on anvil from npm instead of the py-evm node, with
the same dev accounts and deployment, bought from by the demo as a wallet would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cardless.cli.demo import run_demo
from cardless.cli.system import System
from cardless.devchain.anvil import AnvilNode, dev_accounts
from tests.support.shop import gateway_settings

# A whole system on a node of its own, started twice (about 15 s on a busy machine): make test-long.
pytestmark = [pytest.mark.slow, pytest.mark.long]


def test_the_embedded_system_runs_on_anvil_and_settles_purchases(tmp_path: Path) -> None:
    system = System(gateway_settings(tmp_path / "var", dev_chain="anvil")).start()
    try:
        assert isinstance(system.node, AnvilNode)
        assert system.deployment is not None and system.deployment.chain_id == 31337
        assert system.deployment.owner == dev_accounts()[0].address  # key 1, as on the embedded chain
        assert (tmp_path / "var" / "embedded" / "anvil.log").exists()
        report = run_demo(system.gateway_url, orders=3, timeout=60)
        totals = report.totals()
        assert (totals["settled"], totals["open"], totals["double_topups"]) == (3, 0, 0)
        assert totals["balance_mismatch_wei"] == 0
        pid = system.node.pid
    finally:
        system.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # anvil does not outlive the system


def test_cardless_run_chain_anvil_as_an_operator_starts_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDLESS_")}
    env |= {
        "CARDLESS_VAR_DIR": str(tmp_path / "var"),
        "CARDLESS_CHAIN_PORT": "0",
        "CARDLESS_GATEWAY_PORT": "0",
        "CARDLESS_SIMULATOR_PORT": "0",
        "CARDLESS_KEYSTORE_SCRYPT_N": "1024",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cardless.cli.main", "run", "--chain", "anvil"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:  # until the command says it is up (it handles Ctrl-C from then on)
            lines.append(line)
            if "Ctrl-C stops." in line:
                break
        assert proc.poll() is None, "".join(lines)
        time.sleep(0.3)
        deployment = tmp_path / "var" / "embedded" / "deployment.json"
        rpc_url = __import__("json").loads(deployment.read_text())["rpc_url"]
        reply = httpx.post(rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "web3_clientVersion"}).json()
        assert reply["result"].startswith("anvil/")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    with pytest.raises(httpx.HTTPError):
        httpx.post(rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=2)
