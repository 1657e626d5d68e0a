"""verifier/verify-order.mjs (viem, no Cardless code) against the real history: a settled order from a
batch verifies with the proof's signer and money; a refunded order with its authorisation; an order
id never paid does not verify (exit 1). `make test` runs the first (one Node.js start); `make test-long`
the others.

Node.js and the npm package viem are required: the test fails, never skips, without them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.audit.conftest import History

pytestmark = [pytest.mark.xdist_group("audit"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "verifier" / "verify-order.mjs"


def _verify(history: History, order_id: str) -> tuple[int, dict[str, Any]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is not installed: the verifier test needs `node` (20 or later) on PATH")
    proc = subprocess.run(
        [node, str(SCRIPT), "--rpc", history.node.url, "--escrow", history.escrow, "--order", order_id],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"the verifier printed nothing; stderr:\n{proc.stderr[-4000:]}"
    return proc.returncode, json.loads(lines[-1])


def test_the_viem_verifier_proves_a_batch_settlement_on_two_signatures(history: History) -> None:
    order = history.batch_by_two[1]
    code, result = _verify(history, "0x" + order.order_id.hex())
    assert code == 0, result
    assert result["verified"] is True and result["status"] == "settled"
    proof = next(s for s in result["steps"] if s["step"] == "proof")
    assert proof["kind"] == "settleBatch" and proof["threshold"] == 2
    assert proof["signers"] == sorted(
        [history.new_oracle.address, history.second_oracle.address], key=lambda a: int(a, 16)
    )
    assert int(result["fee"]) == order.fee and int(result["merchantAmount"]) == order.merchant_amount


@pytest.mark.long
def test_the_viem_verifier_proves_a_refund_and_rejects_an_unknown_order(history: History) -> None:
    code, result = _verify(history, "0x" + history.refunded_by_two.order_id.hex())
    assert code == 0, result
    assert result["status"] == "refunded"
    assert next(s for s in result["steps"] if s["step"] == "refund")["threshold"] == 2
    code, result = _verify(history, "0x" + history.settled_batch[2].order_id.hex())  # one signer, threshold 1
    assert code == 0, result
    assert next(s for s in result["steps"] if s["step"] == "proof")["signers"] == [history.old_oracle.address]
    code, result = _verify(history, "0x" + "cd" * 32)
    assert code == 1 and result["verified"] is False
    assert "OrderPaid" in result["error"]
