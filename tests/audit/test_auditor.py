"""The audit of a real escrow history (tests/audit/conftest.py) read over HTTP JSON-RPC: everything that
happened is counted, proved and reconciled, and an honest history has no violation."""

from __future__ import annotations

import pytest

from cardless.audit import Auditor, ChainReader
from cardless.protocol import NATIVE_TOKEN
from tests.audit.conftest import History

pytestmark = pytest.mark.xdist_group("audit")


def _audit(history: History, **kwargs: object) -> tuple[Auditor, dict[str, object]]:
    reader = ChainReader(history.w3, page_blocks=int(kwargs.pop("page_blocks", 2_000)))  # type: ignore[call-overload]
    auditor = Auditor(reader, history.escrow, **kwargs)  # type: ignore[arg-type]
    report = auditor.run(0, history.w3.eth.block_number)
    return auditor, report.as_json()


def test_an_honest_history_has_no_violation_and_its_totals(history: History) -> None:
    _, report = _audit(history)
    assert report["violations"] == []
    assert report["unverified"] == []
    assert (report["orders"], report["settled"], report["refunded"], report["reclaimed"], report["open"]) == (
        10,
        6,
        1,
        1,
        2,
    )
    assert report["reclaimable_orders"] == ["0x" + history.open_past_deadline.order_id.hex()]
    usdc = history.env.usdc.address
    assert report["surplus"] == {usdc: str(history.surplus)}
    assert NATIVE_TOKEN not in report["surplus"]
    assert report["protocol_version"] == "1"
    assert report["rpc"]["calls"] > 0
