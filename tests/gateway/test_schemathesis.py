"""Schemathesis against the running gateway's own OpenAPI document: every check, a fixed seed, 300
generated cases per operation in the fuzzing phase, plus the coverage, examples and stateful phases
(the stateful phase follows the `createQuote` -> `getOrder` link). No 5xx, no status code, header or
content type the document does not declare, no body that violates its schema.

It drives the Schemathesis CLI (the tool people run against an API) at the embedded system of the
test session over real HTTP, and reads its NDJSON report to count cases per operation and phase.
It takes a minute or two, so it runs in `make test-long` (and CI), not in `make test`.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cardless.cli.system import System

pytestmark = [pytest.mark.long, pytest.mark.integration]

SEED = 42
CASES_PER_OPERATION = 300

# What the run may not pass: a schema-valid quote can still be refused by the domain (an unknown SKU
# is 404; the provider refusing the account, or the zero address as buyer, is 422; 503 when no
# provider can take it); the account check (checkAccount) answers the same. The callback needs the
# provider's signature, so only its own value of `provider` reaches past the 404. A schema-valid
# sign-in message is rarely an EIP-4361 one (422) and never one signed for this gateway (401); the
# merchants' sign-in also answers 403 (a signed message by no merchant's settlement address).
# Schemathesis reuses Idempotency-Key values ("0") with other bodies, which is the client error 409
# says.
CONFIG = f"""
seed = {SEED}
workers = 1
[generation]
max-examples = {CASES_PER_OPERATION}
mode = "all"
[[operations]]
include-operation-id = "createQuote"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "409", "422", "429", "503"]
[[operations]]
include-operation-id = "checkAccount"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "409", "422", "429", "503"]
[[operations]]
include-operation-id = "createSiweSession"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "409", "422", "429"]
[[operations]]
include-operation-id = "createMerchantSession"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "409", "422", "429"]
[[operations]]
include-operation-id = "receiveProviderCallback"
parameters = {{ "provider" = "simulator" }}
"""


def test_the_openapi_document_holds_for_every_generated_request(system: System, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    reports = tmp_path / "reports"
    schemathesis = Path(sys.executable).with_name("schemathesis")
    run = subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(config),
            "run",
            f"{system.gateway_url}/openapi.json",
            "--checks",
            "all",
            "--no-color",
            "--report",
            "ndjson",
            "--report-dir",
            str(reports),
        ],
        capture_output=True,
        text=True,
        # A hang guard, not a speed check: 520-540 s on an idle CI machine, past 900 s when the machine
        # is shared (the cases grow with the operations the document has).
        timeout=1800,
        check=False,
    )
    summary = run.stdout[run.stdout.find("SUMMARY") :] if "SUMMARY" in run.stdout else run.stdout[-4000:]
    assert run.returncode == 0, f"schemathesis failed ({run.returncode}):\n{run.stdout[-8000:]}{run.stderr}"

    cases: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    statuses: set[str] = set()
    (report,) = reports.glob("*.ndjson")
    for line in report.read_text().splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if finished is None:
            continue
        statuses.add(finished["status"])
        recorder = finished["recorder"]
        cases[recorder["label"]][finished["phase"]] += len(recorder.get("cases", ()))
    print("\n" + summary)
    print(f"{'operation':45} " + " ".join(f"{p:>9}" for p in ("examples", "coverage", "fuzzing", "stateful")))
    for label, phases in sorted(cases.items()):
        counts = " ".join(f"{phases[p]:>9}" for p in ("examples", "coverage", "fuzzing", "stateful"))
        print(f"{label:45} {counts}")

    assert statuses <= {"success", "skip"}, statuses
    routes = {"POST /v1/quotes", "GET /v1/orders/{order_id}", "GET /v1/catalogue", "GET /v1/health"}
    assert routes <= set(cases), set(cases)
    assert cases["Stateful tests"]["stateful"] > 0
    # Every operation that takes input gets the full budget of fuzzed cases; one without parameters
    # or body has only a handful of distinct requests (Schemathesis stops when they are exhausted).
    for label in ("POST /v1/quotes", "GET /v1/orders/{order_id}", "POST /v1/providers/{provider}/callback"):
        assert cases[label]["fuzzing"] >= CASES_PER_OPERATION, (label, cases[label])
