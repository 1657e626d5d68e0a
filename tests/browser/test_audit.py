"""The auditor view in Chromium: load the JSON `cardless audit --json` printed, see the summary and a
violation, and verify one order step by step in the browser against the dev chain's JSON-RPC with the
bundled verifier/verify-order.mjs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import expect
from typer.testing import CliRunner

from cardless.cli.main import app
from tests.browser.conftest import Visit
from tests.support.shop import Shop, dev_wallet

# Chromium against the whole embedded system: `make test` runs it, `make test-fast` does not. One xdist
# group, meant to keep every browser test on one worker (one Chromium); pytest-xdist 3.8 here was seen
# spreading grouped tests over both workers anyway, which costs a second Chromium, not correctness.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("browser")]


def test_an_auditor_loads_an_audit_and_verifies_an_order_in_the_browser(
    visit: Callable[..., Visit], shop: Shop, tmp_path: Path
) -> None:
    buyer = dev_wallet(5)
    quote = shop.quote(buyer, sku="pubg-60uc").json()
    shop.pay(buyer, quote)
    shop.wait_for(quote["order_id"], "settled")
    node, deployment = shop.system.node, shop.system.deployment
    assert node is not None and deployment is not None
    result = CliRunner().invoke(app, ["audit", "--rpc", node.url, "--escrow", deployment.escrow, "--json"])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.exit_code == 0 and report["violations"] == [], report["violations"][:3]
    clean = tmp_path / "audit.json"
    clean.write_text(json.dumps(report))

    v = visit()
    page = v.open("/audit")
    page.get_by_label("Audit result (JSON from `cardless audit --json`)").set_input_files(str(clean))
    summary = page.get_by_test_id("audit-summary")
    expect(page.get_by_test_id("audit-verdict")).to_contain_text("No violations")
    expect(summary).to_contain_text(f"settled{report['settled']}")
    expect(summary).to_contain_text("tUSDC")

    page.get_by_test_id("verify-order-id").fill(quote["order_id"])
    page.get_by_role("button", name="Verify", exact=True).click()
    verdict = page.get_by_test_id("verify-result")
    expect(verdict).to_have_attribute("data-verified", "true", timeout=20_000)
    expect(verdict).to_contain_text("Verified from chain data: settled")
    assert page.get_by_test_id("verify-step").all_inner_texts()[0].startswith("quote")
    expect(verdict.get_by_test_id("verify-step").nth(1)).to_contain_text("proof")
    v.shot("audit-verified")
    assert v.axe() == []

    # A report with a violation shows it, with the order to open.
    report["violations"] = [
        {
            "order_id": quote["order_id"],
            "rule": "settle.signer_authorised",
            "evidence": "signer not authorised",
            "block": 7,
            "tx": None,
        }
    ]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(report))
    page.get_by_label("Audit result (JSON from `cardless audit --json`)").set_input_files(str(bad))
    expect(page.get_by_test_id("audit-verdict")).to_contain_text("1 violation(s)")
    expect(page.get_by_test_id("violation")).to_contain_text("settle.signer_authorised")
    v.shot("audit-violation")
    assert v.axe() == []
    assert v.errors == [], v.errors
