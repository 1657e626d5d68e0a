"""`cardless report` and `cardless demo --synthetic`: terminal tables, JSON, and one self-contained HTML
file of charts (inline SVG: no script, nothing fetched)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cardless.cli.main import app
from cardless.cli.report import synthetic_demo


@pytest.mark.slow
def test_synthetic_demo_then_report(tmp_path: Path) -> None:
    # Small (the false-hold rate at full size is tests/risk/test_synthetic.py's): the wiring is the point.
    result = synthetic_demo(tmp_path / "demo", days=30, orders_per_day=20)
    risk = result["risk"]
    assert risk["bursts_fully_stopped"] == risk["bursts"] == 6 and risk["orders"] > 500
    assert result["peak"]["weekday"] in (0, 6) and 19 <= result["peak"]["hour"] < 22

    database = f"sqlite:///{tmp_path / 'demo' / 'synthetic.db'}"
    common = ["report", "--database", database, "--until", "2026-12-02T00:00:00+00:00", "--days", "30"]
    out = tmp_path / "out"
    run = CliRunner().invoke(app, [*common, "--json", "--out", str(out), "--tz-offset-minutes", "480"])
    assert run.exit_code == 0, run.output
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["heatmap"]["peak"] == result["peak"]
    assert figures["repeat"]["orders"] == risk["orders"]
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 4 and "<script" not in page
    assert re.findall(r"(?:src|href)=", page) == []  # nothing to fetch
    assert json.loads((out / "report.json").read_text())["refunds"] == figures["refunds"]

    tables = CliRunner().invoke(app, [*common, "--out", str(out)], terminal_width=200)
    assert tables.exit_code == 0, tables.output
    assert "Orders by weekday x hour" in tables.output and "Refund reasons" in tables.output
