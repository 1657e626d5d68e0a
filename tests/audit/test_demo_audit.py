"""`cardless demo --orders 200 --faults mixed`, then `cardless audit --json` on the same chain: 200 orders,
no violation, and the audit's totals are the demo's (issue 10, "Must show").

The demo runs against an embedded system started here (as `cardless demo` does when no system
answers), so the chain is still there for the audit afterwards. Minutes long: `make test-long`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cardless.cli.demo import run_demo
from cardless.cli.main import app
from cardless.cli.system import System
from tests.support.shop import gateway_settings

ORDERS = int(os.environ.get("CARDLESS_AUDIT_DEMO_ORDERS", "200"))


@pytest.fixture
def running(tmp_path: Path) -> Iterator[System]:
    system = System(gateway_settings(tmp_path))
    system.start()
    try:
        yield system
    finally:
        system.stop()


@pytest.mark.long
def test_the_audit_of_the_mixed_fault_demo_matches_its_totals(running: System) -> None:
    demo = run_demo(running.gateway_url, orders=ORDERS, faults="mixed", timeout=600).totals()
    assert demo["open"] == 0 and demo["balance_mismatch_wei"] == 0, demo
    assert running.node is not None
    result = CliRunner().invoke(
        app, ["audit", "--rpc", running.node.url, "--escrow", running.deployment.escrow, "--json"]
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.exit_code == 0, report["violations"][:10]
    assert report["violations"] == [] and report["unverified"] == []
    assert report["orders"] == ORDERS == demo["orders"]
    for key in ("settled", "refunded", "reclaimed", "open"):
        assert report[key] == demo[key], key
    assert report["surplus"] == {}
