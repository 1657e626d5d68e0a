"""The auditor stands on the protocol package alone: loading it (and the `cardless audit` wiring) pulls
in no ledger, gateway, oracle, adapter or dev chain, and pyproject.toml's import contract says so."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = (
    "cardless.ledger",
    "gateway",
    "oracles",
    "adapters",
    "cardless.devchain",
    "eth_tester",
    "sqlalchemy",
)


def test_importing_the_auditor_loads_no_ledger_gateway_oracle_or_dev_chain() -> None:
    probe = (
        "import sys, cardless.audit, cardless.cli.audit\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} or "
        f"any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r}))\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "", f"the auditor loaded {proc.stdout.strip()}"


def test_the_import_contract_forbids_the_operator_side() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (audit,) = [c for c in contracts if c.get("source_modules") == ["cardless.audit"]]
    assert audit["type"] == "forbidden"
    assert {"cardless.ledger", "gateway", "oracles", "adapters", "cardless.devchain"} <= set(
        audit["forbidden_modules"]
    )
