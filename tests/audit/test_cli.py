"""`cardless audit` and `cardless audit order` as a user runs them (Typer's runner, the real history)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cardless.audit import Auditor, ChainReader, RpcError
from cardless.cli.main import app
from tests.audit.conftest import History

pytestmark = pytest.mark.xdist_group("audit")

runner = CliRunner()


def _cli(history: History, *args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(
        app, ["audit", *args, "--rpc", history.node.url, "--escrow", history.escrow, "--json"]
    )
    assert result.stdout.strip(), result.output
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


def _receipts_file(history: History, path: Path, edit: dict[str, Any] | None = None) -> Path:
    entries = []
    for oid, receipt in history.receipts.items():
        account, salt = history.accounts[oid]
        entries.append(
            {"order_id": oid, "receipt": receipt, "account": account, "account_salt": "0x" + salt.hex()}
        )
    if edit:
        entries[0] = {**entries[0], **edit}
    path.write_text(json.dumps({"receipts": entries}))
    return path


def test_json_totals_and_exit_zero(history: History) -> None:
    code, report = _cli(history)
    assert code == 0, report["violations"]
    for key in ("orders", "settled", "refunded", "reclaimed", "open", "surplus", "violations"):
        assert key in report
    assert report["orders"] == 14


def test_receipts_recomputed_and_a_tampered_receipt_or_account_exits_one(
    history: History, tmp_path: Path
) -> None:
    code, report = _cli(history, "--receipts", str(_receipts_file(history, tmp_path / "good.json")))
    assert code == 0, report["violations"]

    first = next(iter(history.receipts))
    forged = {**history.receipts[first], "credited": 6000}
    code, report = _cli(
        history, "--receipts", str(_receipts_file(history, tmp_path / "r.json", {"receipt": forged}))
    )
    assert code == 1
    assert [(v["rule"], v["order_id"]) for v in report["violations"]] == [("receipt.hash-mismatch", first)]

    code, report = _cli(
        history,
        "--receipts",
        str(_receipts_file(history, tmp_path / "a.json", {"account": "999999999@os_asia"})),
    )
    assert code == 1
    assert [(v["rule"], v["order_id"]) for v in report["violations"]] == [
        ("receipt.account-commitment", first)
    ]


def test_state_file_resumes_and_reads_only_new_blocks(history: History, tmp_path: Path) -> None:
    state = tmp_path / "audit.json"
    code, first = _cli(history, "--state", str(state), "--to-block", str(history.rotation_block))
    assert code == 0
    assert first["orders"] == 6 and first["to_block"] == history.rotation_block
    code, second = _cli(history, "--state", str(state))
    latest = history.w3.eth.block_number
    assert code == 0
    assert second["blocks_read"] == latest - history.rotation_block
    _, full = _cli(history)
    for key in ("orders", "settled", "refunded", "reclaimed", "open", "surplus", "tokens"):
        assert second[key] == full[key], key


def test_audit_order_explains_each_step(history: History, tmp_path: Path) -> None:
    oid = "0x" + history.settled_batch[1].order_id.hex()
    receipts = _receipts_file(history, tmp_path / "r.json")
    result = runner.invoke(
        app,
        [
            "audit",
            "order",
            oid,
            "--rpc",
            history.node.url,
            "--escrow",
            history.escrow,
            "--receipts",
            str(receipts),
            "--json",
        ],
    )
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.exit_code == 0, doc
    assert doc["status"] == "settled" and doc["passed"] is True
    steps = [s["step"] for s in doc["steps"]]
    for step in (
        "paid",
        "quote signer authorised",
        "quote signature",
        "oracle signers authorised",
        "signature threshold",
        "proof digest",
        "proof signatures",
        "committed fields",
        "fulfilled by the deadline",
        "receipt hash",
        "account commitment",
    ):
        assert step in steps, steps

    missing = "0x" + "ab" * 32
    result = runner.invoke(
        app, ["audit", "order", missing, "--rpc", history.node.url, "--escrow", history.escrow]
    )
    assert result.exit_code == 1


def test_a_node_that_refuses_large_ranges_is_paged_smaller(history: History) -> None:
    served: list[int] = []

    class Capped(ChainReader):
        def get_logs(self, address: str, first: int, last: int, topics: list[Any] | None = None) -> list[Any]:
            if last - first + 1 > 4:
                self.stats.count("eth_getLogs")
                raise RpcError("eth_getLogs: query returned more than 10000 results")
            served.append(last - first + 1)
            return super().get_logs(address, first, last, topics)

    latest = history.w3.eth.block_number
    capped = Capped(history.w3, page_blocks=1_000)
    report = Auditor(capped, history.escrow).run(0, latest).as_json()
    assert capped.stats.log_range_splits >= 4  # (latest + 1) blocks halved until at most 4
    assert max(served) <= 4 and sum(served) == latest + 1  # every block read exactly once
    assert report["violations"] == [] and report["orders"] == 14


def test_an_address_that_is_not_an_escrow_exits_two(history: History) -> None:
    # the mock stablecoin has an EIP-712 domain too (permit), under another name
    result = runner.invoke(
        app, ["audit", "--rpc", history.node.url, "--escrow", history.env.usdc.address, "--json"]
    )
    assert result.exit_code == 2
    assert "not a Cardless escrow" in result.stderr
