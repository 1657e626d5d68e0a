"""`GET /v1/audit/receipts` against the session's embedded system (dev chain, oracle, simulator, the
gateway on a socket), fed to `cardless audit --receipts` exactly as an auditor would: the export of
settled orders gives no violation, a tampered receipt or account is flagged with its rule. Also who may
export what: the operator all, a merchant key with `audit:read` its own orders only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cardless.cli.main import app
from cardless.cli.system import System
from tests.support.shop import Shop, assert_problem, dev_wallet

pytestmark = pytest.mark.slow  # two orders through the whole system, then an audit of its chain

PAIMON, CHICKEN = "paimon-shop", "chicken-dinner"
runner = CliRunner()


@pytest.fixture(scope="module")
def settled(shop: Shop) -> dict[str, str]:
    """Two settled orders, one per merchant: order id -> merchant id."""
    orders: dict[str, str] = {}
    for wallet, sku, merchant in (
        (dev_wallet(10), "genshin-60", PAIMON),
        (dev_wallet(9), "pubg-60uc", CHICKEN),
    ):
        quote = shop.quote(wallet, sku=sku, token="tUSDC", account="81234567").json()
        shop.pay(wallet, quote)
        orders[quote["order_id"]] = merchant
    for order_id in orders:
        shop.wait_for(order_id, "settled")
    return orders


def _export(client: httpx.Client, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    """Every page, following `next`."""
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"from": cursor} if cursor else {})}
        response = client.get("/v1/audit/receipts", params=query, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        page = response.json()
        assert set(page) == {"receipts", "next"}
        entries += page["receipts"]
        cursor = page["next"]
        if cursor is None:
            return entries
        assert cursor == page["receipts"][-1]["order_id"]


def _audit(system: System, receipts: Path) -> tuple[int, dict[str, Any]]:
    assert system.node is not None and system.deployment is not None
    result = runner.invoke(
        app,
        [
            "audit",
            "--rpc",
            system.node.url,
            "--escrow",
            system.deployment.escrow,
            "--receipts",
            str(receipts),
            "--json",
        ],
    )
    assert result.stdout.strip(), result.output
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


def _merchant_key(shop: Shop, merchant: str, *scopes: str) -> dict[str, str]:
    response = shop.api.post(
        f"/v1/merchants/{merchant}/keys",
        json={"name": "auditor", "scopes": list(scopes)},
        headers={**shop.operator_headers, "Idempotency-Key": f"audit-key-{merchant}-{'-'.join(scopes)}"},
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['key']}"}


def test_the_operator_export_audits_clean_and_a_tampered_receipt_or_account_is_flagged(
    shop: Shop, system: System, settled: dict[str, str], tmp_path: Path
) -> None:
    entries = _export(shop.api, shop.operator_headers, limit=1)  # one per page: the cursor is exercised
    ids = [e["order_id"] for e in entries]
    assert len(ids) == len(set(ids)) and set(settled) <= set(ids)
    mine = {e["order_id"]: e for e in entries if e["order_id"] in settled}
    for oid, entry in mine.items():
        assert entry["receipt"]["order_id"] == oid
        assert entry["account"] == "81234567" and len(entry["account_salt"]) == 66

    good = tmp_path / "receipts.json"
    good.write_text(json.dumps({"receipts": entries, "next": None}))
    code, report = _audit(system, good)
    assert code == 0, report["violations"]
    assert report["violations"] == [] and report["receipts_checked"] == len(entries) <= report["settled"]

    first, second = list(settled)
    tampered = [
        {**e, "receipt": {**e["receipt"], "credited": e["receipt"]["credited"] * 100}}
        if e["order_id"] == first
        else {**e, "account": "99999999"}
        if e["order_id"] == second
        else e
        for e in entries
    ]
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps({"receipts": tampered, "next": None}))
    code, report = _audit(system, bad)
    assert code == 1
    assert sorted((v["rule"], v["order_id"]) for v in report["violations"]) == sorted(
        [("receipt.hash-mismatch", first), ("receipt.account-commitment", second)]
    )


def test_a_merchant_exports_only_its_own_orders_with_the_audit_scope(
    shop: Shop, settled: dict[str, str]
) -> None:
    paimon_order = next(oid for oid, m in settled.items() if m == PAIMON)
    chicken_order = next(oid for oid, m in settled.items() if m == CHICKEN)
    headers = _merchant_key(shop, PAIMON, "audit:read")
    entries = _export(shop.api, headers, limit=100)
    ids = {e["order_id"] for e in entries}
    assert paimon_order in ids and chicken_order not in ids
    for oid in ids:
        row = shop.row(oid)
        assert row is not None and row.merchant == "0xE57bFE9F44b819898F47BF37E5AF72a0783e1141"

    # accounts=false: receipts only, no personal data
    plain = _export(shop.api, headers, accounts="false")
    assert plain and all(set(e) == {"order_id", "receipt"} for e in plain)
    # another merchant's order as a cursor reads like an unknown one
    assert_problem(
        shop.api.get("/v1/audit/receipts", params={"from": chicken_order}, headers=headers), 422, "query.from"
    )
    assert_problem(
        shop.api.get("/v1/audit/receipts", params={"from": "yesterday"}, headers=headers), 422, "query.from"
    )
    # a time cursor: nothing settled in the future
    future = shop.api.get("/v1/audit/receipts", params={"from": "2999-01-01T00:00:00Z"}, headers=headers)
    assert future.json() == {"receipts": [], "next": None}

    assert_problem(
        shop.api.get("/v1/audit/receipts", headers=_merchant_key(shop, PAIMON, "orders:read")), 403
    )
    assert_problem(shop.api.get("/v1/audit/receipts"), 401)
