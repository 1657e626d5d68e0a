"""Schemathesis over the merchants' side of the OpenAPI document, with credentials: once as the
operator (the admin routes), once with a merchant API key holding every scope (the merchant routes).
tests/gateway/test_schemathesis.py runs every operation anonymously; these runs reach past the 401.

Every check, a fixed seed, the CLI over real HTTP at a gateway on the session system's chain with a
database of its own (tests/gateway/merchant_app.py), so the merchants and SKUs it makes stay there.
The schema-valid requests the domain may still refuse are listed per operation (a fee above the
escrow's cap, a token the escrow does not take, a cursor not in the caller's list: 422).
Minutes long: `make test-long` and CI.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cardless.cli.system import System
from tests.gateway.merchant_app import merchant_app

pytestmark = [pytest.mark.long, pytest.mark.integration]

SEED = 42
CASES_PER_OPERATION = 100
MERCHANT_OPERATIONS = (
    "createMerchant",
    "listMerchants",
    "getMerchant",
    "disableMerchant",
    "prepareMerchantPayoutAddress",
    "createApiKey",
    "listApiKeys",
    "rotateApiKey",
    "revokeApiKey",
    "getOwnMerchant",
    "prepareOwnPayoutAddress",
    "listOwnSkus",
    "getOwnSku",
    "createSku",
    "updateSku",
    "listOrderPage",
    "getOrder",
)
# Not rotateOwnApiKey: a rotation with overlap_seconds=0 would end the run's own key mid-run.
REFUSED_WHEN_VALID = {
    "createMerchant": ["422"],  # fee above the escrow's cap, the zero address
    "prepareMerchantPayoutAddress": ["422"],  # the escrow or the zero address as payout
    "prepareOwnPayoutAddress": ["422"],
    "createSku": ["422"],  # providers not configured, tokens not accepted
    "updateSku": ["422"],
    "listOrderPage": ["422"],  # starting_after not in the caller's list
}


def _config(path: Path) -> None:
    lines = [
        f"seed = {SEED}",
        "workers = 1",
        "[generation]",
        f"max-examples = {CASES_PER_OPERATION}",
        'mode = "all"',
    ]
    for operation, extra in REFUSED_WHEN_VALID.items():
        statuses = ", ".join(f'"{s}"' for s in ["2xx", "401", "403", "404", "409", "429", *extra])
        lines += [
            "[[operations]]",
            f'include-operation-id = "{operation}"',
            f"checks.positive_data_acceptance.expected-statuses = [{statuses}]",
        ]
    path.write_text("\n".join(lines) + "\n")


def _run(url: str, tmp: Path, name: str, authorization: str) -> dict[str, int]:
    config = tmp / f"{name}.toml"
    _config(config)
    reports = tmp / f"reports-{name}"
    schemathesis = Path(sys.executable).with_name("schemathesis")
    command = [
        str(schemathesis),
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--no-color",
        "-H",
        f"Authorization: {authorization}",
        "--report",
        "ndjson",
        "--report-dir",
        str(reports),
    ]
    for operation in MERCHANT_OPERATIONS:
        command += ["--include-operation-id", operation]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
    assert run.returncode == 0, f"schemathesis ({name}) failed:\n{run.stdout[-8000:]}{run.stderr[-2000:]}"
    cases: collections.Counter[str] = collections.Counter()
    (report,) = reports.glob("*.ndjson")
    for line in report.read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished")
        if finished is not None:
            assert finished["status"] in ("success", "skip"), finished["status"]
            cases[finished["recorder"]["label"]] += len(finished["recorder"].get("cases", ()))
    print(f"\n{name}: {sum(cases.values())} cases")
    for label, count in sorted(cases.items()):
        print(f"  {label:55} {count}")
    return dict(cases)


def test_the_merchant_routes_hold_to_the_document_with_credentials(system: System, tmp_path: Path) -> None:
    with merchant_app(system, tmp_path) as app:
        operator = app.operator["Authorization"]
        scopes = ["catalogue:write", "orders:read", "webhooks:write", "payouts:read"]
        created = httpx.post(
            f"{app.url}/v1/merchants/paimon-shop/keys",
            headers=app.operator,
            json={"name": "schemathesis", "scopes": scopes},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        merchant = f"Bearer {created.json()['key']}"

        as_operator = _run(app.url, tmp_path, "operator", operator)
        assert as_operator["POST /v1/merchants"] >= CASES_PER_OPERATION
        as_merchant = _run(app.url, tmp_path, "merchant", merchant)
        assert as_merchant["POST /v1/merchant/skus"] >= CASES_PER_OPERATION
