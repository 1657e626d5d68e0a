"""`cardless demo` end to end, as a user runs it: a subprocess that starts its own embedded system
(dev chain node, contracts, simulated provider, gateway, oracle; the provider and the oracle in child
processes) and prints JSON totals last."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _processes_of(var_dir: Path) -> list[int]:
    """Processes started with ``CARDLESS_VAR_DIR=var_dir`` (the demo's children inherit it)."""
    marker = f"CARDLESS_VAR_DIR={var_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def _demo(tmp_path: Path, *args: str) -> dict[str, object]:
    env = {
        **os.environ,
        "CARDLESS_VAR_DIR": str(tmp_path / "var"),
        "CARDLESS_KEYSTORE_SCRYPT_N": "1024",
        # a port nothing listens on, so the demo starts its own embedded system
        "CARDLESS_GATEWAY_PORT": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "cardless.cli.main", "demo", "--json", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.stdout.strip(), f"no output; stderr:\n{proc.stderr[-4000:]}"
    totals = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, f"demo failed: {totals}\n{proc.stderr[-4000:]}"
    # The simulated provider and the oracle worker ran as its child processes; it stopped and reaped them.
    assert _processes_of(tmp_path / "var") == []
    return totals


def test_demo_settles_every_order(tmp_path: Path) -> None:
    totals = _demo(tmp_path, "--orders", "12")
    assert totals["orders"] == 12
    assert totals["settled"] == 12
    assert totals["open"] == 0
    assert totals["double_topups"] == 0
    assert totals["balance_mismatch_wei"] == 0
    assert isinstance(totals["p50_ms"], float) and isinstance(totals["p99_ms"], float)
    # The demo's loopback receiver got each order's paid, fulfilled and settled events, all verified.
    assert totals["webhooks"] == {
        "events": 36,
        "duplicates": 0,
        "bad_signatures": 0,
        "orders_missing_events": 0,
    }
    # The analytics' record of provider calls was written on the oracle's path: one answered call each.
    with sqlite3.connect(tmp_path / "var" / "embedded" / "cardless.db") as db:
        calls = db.execute("SELECT outcome, COUNT(*) FROM provider_attempts GROUP BY outcome").fetchall()
    assert calls == [("succeeded", 12)], calls


# `long`: 30 s of a 2-core machine, and what it checks `make test` covers fault by fault
# (tests/integration/test_fault_modes.py) while `make test-long`'s chaos test runs 500 orders with the
# same mixed faults, worker kills and PostgreSQL.
@pytest.mark.long
def test_demo_with_mixed_faults_ends_every_order_exactly_once(tmp_path: Path) -> None:
    # 26 orders = two rounds of every fault in cardless.cli.demo.FAULT_PLAN
    totals = _demo(tmp_path, "--orders", "26", "--faults", "mixed")
    assert totals["orders"] == 26
    assert totals["open"] == 0
    assert totals["settled"] + totals["refunded"] == 26
    assert totals["refunded"] == 2  # the two forced invalid-account refusals
    assert totals["double_topups"] == 0
    assert totals["wrong_credits"] == 0
    assert totals["balance_mismatch_wei"] == 0
    assert totals["webhooks"]["orders_missing_events"] == 0 and totals["webhooks"]["bad_signatures"] == 0  # type: ignore[index]
