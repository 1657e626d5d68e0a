"""docs/protocol.md's viem recipe, run as printed (extracted from the page at test time) by Node.js against
the dev chain over JSON-RPC: a 2-of-n settlement given an upper-case order id verifies with both signers
and the threshold; a refunded order (never settled) does not. Node.js and viem are required: the test
fails, never skips, without them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak

from cardless.devchain.node import DevNode
from tests.contracts.harness import build_env

pytestmark = pytest.mark.slow  # two Node.js starts: ~3 s

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "js" / "run_viem_recipe.mjs"
PROTOCOL_MD = ROOT / "docs" / "protocol.md"


def _recipe_block() -> str:
    text = PROTOCOL_MD.read_text()
    section = text[text.index("### JavaScript (viem)") : text.index("### JavaScript (ethers v6)")]
    match = re.search(r"```js\n(.*?)```", section, re.DOTALL)
    assert match, "docs/protocol.md has no viem code block"
    return match.group(1)


def _run(recipe: Path, node: DevNode, escrow: str, order_id: str) -> dict[str, Any]:
    executable = shutil.which("node")
    if executable is None:
        pytest.fail("Node.js is not installed: the viem recipe test needs `node` on PATH")
    proc = subprocess.run(
        [executable, str(RUNNER), str(recipe), node.url, escrow, order_id],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"the recipe printed nothing; stderr:\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_the_viem_recipe_verifies_a_two_of_n_settlement_by_upper_case_id(node: DevNode) -> None:
    env = build_env(node.chain)
    second = Account.from_key(keccak(b"viem-recipe-second-oracle"))
    env.add_oracle_signer(second.address)
    env.set_oracle_threshold(2)
    settled, refunded = env.make_order(), env.make_order()
    for order in (settled, refunded):
        env.pay(order)
    env.settle(settled, keys=[env.oracle_key, second])
    env.refund(refunded, keys=[env.oracle_key, second])

    # the recipe must resolve viem from the repository's node_modules: write it inside the repository
    recipe = ROOT / "tests" / "js" / f".recipe-{os.getpid()}.mjs"
    recipe.write_text(_recipe_block())
    try:
        upper = "0x" + settled.order_id.hex().upper()
        result = _run(recipe, node, env.escrow.address, upper)
        never_settled = _run(recipe, node, env.escrow.address, "0x" + refunded.order_id.hex())
    finally:
        recipe.unlink()

    assert result["ok"] is True, result
    expected = sorted([env.oracle_key.address, second.address], key=lambda a: int(a, 16))
    assert (result["signers"], result["threshold"]) == (expected, 2)
    assert (int(result["fee"]), int(result["merchantAmount"])) == (settled.fee, settled.merchant_amount)
    assert never_settled == {"ok": False, "error": "order not settled"}
