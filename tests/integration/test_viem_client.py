"""A checkout by viem (Node.js) against the embedded system: an independent client of the dev chain
node and the gateway, sharing no code with Cardless (``tests/js/viem_checkout.mjs``).

Node.js and the npm ``viem`` package are required: the test fails, never skips, without them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cardless.cli.system import System
from tests.support.shop import gateway_settings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "js" / "viem_checkout.mjs"


@pytest.fixture
def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is not installed: the viem client test needs `node` (20 or later) on PATH")
    if not (ROOT / "node_modules" / "viem" / "package.json").is_file():
        pytest.fail("the npm package viem is missing: run `npm ci` in the repository root")
    return node


@pytest.fixture
def running(tmp_path: Path) -> Iterator[System]:
    system = System(gateway_settings(tmp_path))
    system.start()
    try:
        yield system
    finally:
        system.stop()


def test_viem_buyer_pays_and_sees_the_order_settled(node_binary: str, running: System) -> None:
    assert running.node is not None
    env = {
        **os.environ,
        "CARDLESS_RPC_URL": running.node.url,
        "CARDLESS_GATEWAY_URL": running.gateway_url,
        "CARDLESS_BUYER_KEY": "0x" + (4).to_bytes(32, "big").hex(),
    }
    proc = subprocess.run(
        [node_binary, str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"viem printed nothing; stderr:\n{proc.stderr[-4000:]}"
    result = json.loads(lines[-1])
    print(result)
    assert proc.returncode == 0, f"{result}\n{proc.stderr[-4000:]}"
    assert result["result"] == "settled"
    assert result["chainId"] == 31337
    assert [t["step"] for t in result["transactions"]] == ["approve", "pay"]

    # The chain is the truth and the gateway follows it: the oracle records "settled" once it has seen
    # its settlement's receipt, a tick after the OrderSettled log the script waited for.
    deadline = time.monotonic() + 60
    while True:
        order = httpx.get(f"{running.gateway_url}/v1/orders/{result['orderId']}", timeout=10).json()
        if order["state"] != "proof_pending" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert order["state"] == "settled", order
