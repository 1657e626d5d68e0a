"""Foundry's ``cast`` (npm ``@foundry-rs/cast``) against the DevNode: a standard client, unmodified.

These are the commands a new user tried first; they failed on eth-tester's RPC dialect (``input``
refused by eth_estimateGas, receipts without ``logsBloom``). The test fails, never skips, when cast
is not installed (``npm ci`` installs it).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cardless.devchain.node import DevNode

# Foundry's cast as a child process per command (seconds); make test-fast leaves it out
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CAST = ROOT / "node_modules" / ".bin" / "cast"
BUYER_KEY = "0x" + (3).to_bytes(32, "big").hex()
RECEIVER = "0x00000000000000000000000000000000000000C0"


def cast(node: DevNode, *args: str) -> str:
    if not CAST.exists():
        pytest.fail("Foundry's cast is missing: run `npm ci` in the repository root (@foundry-rs/cast)")
    proc = subprocess.run(
        [str(CAST), *args, "--rpc-url", node.url], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, f"cast {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout.strip()


def test_cast_sends_with_its_own_estimates_and_reads_the_receipt(node: DevNode) -> None:
    assert cast(node, "chain-id") == "31337"
    receipt = json.loads(cast(node, "send", "--private-key", BUYER_KEY, RECEIVER, "--value", "7", "--json"))
    assert receipt["status"] == "0x1"
    assert cast(node, "balance", RECEIVER) == "7"

    tx = json.loads(cast(node, "tx", receipt["transactionHash"], "--json"))
    assert (tx["type"], tx["chainId"]) == ("0x2", "0x7a69")
    again = json.loads(cast(node, "receipt", receipt["transactionHash"], "--json"))
    assert again["logsBloom"] == receipt["logsBloom"] and again["blockHash"] == receipt["blockHash"]
    block = json.loads(cast(node, "block", "latest", "--json"))
    assert block["hash"] == receipt["blockHash"]


def test_cast_call_and_estimate_send_input(node: DevNode) -> None:
    # the calldata travels as "input", which eth-tester refused
    assert int(cast(node, "estimate", RECEIVER, "0x12345678"), 0) > 21_000
    assert cast(node, "call", RECEIVER, "0x12345678") == "0x"
