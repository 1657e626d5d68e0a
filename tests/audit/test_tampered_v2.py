"""Protocol v2 histories the real escrow refuses to make, each flagged with its rule: k-of-n settlements
below the threshold in force, a timelocked change that took effect without its announcement (or before
its delay passed, or after it was cancelled), and a skim that took what was owed. The honest history
(rotation through the timelock, threshold 2, a skim) is in tests/audit/conftest.py and audits clean."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi import decode as abi_decode

from cardless.audit import Auditor, ChainReader
from tests.audit.conftest import History
from tests.audit.tampering import TamperedReader, crafted_log, topic

pytestmark = pytest.mark.xdist_group("audit")

THRESHOLD_SET = topic("OracleThresholdSet(uint8)")
SCHEDULED = topic("AdminChangeScheduled(bytes32,uint8,bytes32,uint48)")
EXECUTED = topic("AdminChangeExecuted(bytes32)")
ORACLE_SIGNER_SET = topic("OracleSignerSet(address,bool)")
SKIMMED = topic("SurplusSkimmed(address,address,uint256)")
ORDER_SETTLED = topic("OrderSettled(bytes32,bytes32,uint48)")


def _run(history: History, reader: ChainReader) -> dict[str, Any]:
    return Auditor(reader, history.escrow).run(0, history.w3.eth.block_number).as_json()


def _rules(report: dict[str, Any], order: bytes | None = None) -> set[str]:
    oid = "0x" + order.hex() if order is not None else None
    return {v["rule"] for v in report["violations"] if oid is None or v["order_id"] == oid}


def _logs(history: History) -> list[dict[str, Any]]:
    return ChainReader(history.w3).get_logs(history.escrow, 0, history.w3.eth.block_number)


def _is_grant(log: dict[str, Any], signer: str) -> bool:
    return (
        log["topics"][0] == ORACLE_SIGNER_SET
        and log["topics"][1][-40:] == signer[2:].lower()
        and log["data"].endswith("1")
    )


def _executed_before(logs: list[dict[str, Any]], effect: dict[str, Any]) -> dict[str, Any]:
    """The AdminChangeExecuted log just before ``effect`` in its transaction."""
    same = [log for log in logs if log["transactionHash"] == effect["transactionHash"]]
    return next(log for log in reversed(same[: same.index(effect)]) if log["topics"][0] == EXECUTED)


def test_a_settlement_below_the_threshold_in_force(history: History) -> None:
    """The threshold's raise moved before the settlement by the new key alone: that single-signature
    settlement is below the threshold then, and the moved change took effect unannounced."""

    def raise_early(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raised = next(log for log in logs if log["topics"][0] == THRESHOLD_SET and log["data"].endswith("2"))
        logs = [log for log in logs if log is not raised]
        at = next(
            i
            for i, log in enumerate(logs)
            if log["topics"][0] == ORDER_SETTLED
            and log["topics"][1] == "0x" + history.settled_by_new_key.order_id.hex()
        )
        moved = {
            **raised,
            "blockNumber": logs[at]["blockNumber"],
            "transactionIndex": logs[at]["transactionIndex"],
            "transactionHash": "0x" + "77" * 32,
        }
        return [*logs[:at], moved, *logs[at:]]

    report = _run(history, TamperedReader(history.w3, edit=raise_early))
    assert _rules(report, history.settled_by_new_key.order_id) == {"settle.below-threshold"}
    (unannounced,) = [v for v in report["violations"] if v["order_id"] is None]
    assert unannounced["rule"] == "admin.unscheduled-change" and unannounced["tx"] == "0x" + "77" * 32
    # the two-signature settlements after it still meet the threshold of 2
    for order in (history.settled_by_two, *history.batch_by_two, history.refunded_by_two):
        assert _rules(report, order.order_id) == set()


def test_two_signatures_below_a_threshold_of_three_and_the_value_differs_from_the_announcement(
    history: History,
) -> None:
    def three(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {**log, "data": log["data"][:-1] + "3"}
            if log["topics"][0] == THRESHOLD_SET and log["data"].endswith("2")
            else log
            for log in logs
        ]

    report = _run(history, TamperedReader(history.w3, edit=three))
    for order in (history.settled_by_two, *history.batch_by_two):
        assert _rules(report, order.order_id) == {"settle.below-threshold"}
    assert _rules(report, history.refunded_by_two.order_id) == {"refund.below-threshold"}
    evidence = next(v["evidence"] for v in report["violations"] if v["rule"] == "settle.below-threshold")
    assert "2 distinct authorised signers, threshold 3" in evidence
    # the announced change was SetOracleThreshold 2, so a 3 took effect unannounced
    assert {v["rule"] for v in report["violations"] if v["order_id"] is None} == {"admin.unscheduled-change"}


def test_a_signer_added_without_an_announcement_or_before_its_delay(history: History) -> None:
    new = history.new_oracle.address

    def unannounced(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        grant = next(log for log in logs if _is_grant(log, new))
        executed = _executed_before(logs, grant)
        change_id = executed["topics"][1]
        return [
            log
            for log in logs
            if log is not executed and not (log["topics"][0] == SCHEDULED and log["topics"][1] == change_id)
        ]

    report = _run(history, TamperedReader(history.w3, edit=unannounced))
    ((rule, evidence),) = [(v["rule"], v["evidence"]) for v in report["violations"]]
    assert rule == "admin.unscheduled-change" and new[2:].lower() in evidence.lower()

    # executed one second before its eta: the node reports the execution's block earlier
    grant = next(log for log in _logs(history) if _is_grant(log, new))
    (scheduled,) = [
        log
        for log in _logs(history)
        if log["topics"][0] == SCHEDULED
        and log["topics"][1] == _executed_before(_logs(history), grant)["topics"][1]
    ]
    (_, eta) = abi_decode(["bytes32", "uint48"], bytes.fromhex(scheduled["data"][2:]))
    early_block = int(grant["blockNumber"], 16)

    class Early(TamperedReader):
        def block_timestamps(self, numbers: Any) -> dict[int, int]:
            real = super().block_timestamps(numbers)
            return {n: eta - 1 if n == early_block else t for n, t in real.items()}

    report = _run(history, Early(history.w3))
    assert [v["rule"] for v in report["violations"]] == ["admin.executed-early"]


def test_a_change_executed_after_it_was_cancelled(history: History) -> None:
    new = history.new_oracle.address

    def cancel_first(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        grant = next(log for log in logs if _is_grant(log, new))
        executed = _executed_before(logs, grant)
        cancel = crafted_log(
            history.escrow,
            executed,
            "AdminChangeCancelled(bytes32)",
            [bytes.fromhex(executed["topics"][1][2:])],
            [],
            [],
        )
        at = logs.index(executed)
        return [*logs[:at], cancel, *logs[at:]]

    report = _run(history, TamperedReader(history.w3, edit=cancel_first))
    assert [v["rule"] for v in report["violations"]] == ["admin.unscheduled-change"] * 2


def test_a_skim_that_took_what_was_owed(history: History) -> None:
    (skim,) = [log for log in _logs(history) if log["topics"][0] == SKIMMED]
    skim_block = int(skim["blockNumber"], 16)
    usdc = history.env.usdc.address.lower()

    class Short(TamperedReader):
        def call(self, to: str, data: bytes, block: int | str) -> bytes | None:
            answer = super().call(to, data, block)
            if to.lower() == usdc and block == skim_block and answer:
                return (int.from_bytes(answer, "big") - 1).to_bytes(32, "big")  # one base unit short
            return answer

    report = _run(history, Short(history.w3))
    ((rule, block),) = [(v["rule"], v["block"]) for v in report["violations"]]
    assert (rule, block) == ("skim.below-owed", skim_block)


def test_a_scan_that_starts_between_an_announcement_and_its_execution(history: History) -> None:
    """A daily audit from a later block: the threshold's announcement is before the scan, its
    execution inside it. The contract had the change pending at the block before (an archive read), so
    it is no violation, and the report says its delay was not checked."""
    raised = next(
        log for log in _logs(history) if log["topics"][0] == THRESHOLD_SET and log["data"].endswith("2")
    )
    start = int(raised["blockNumber"], 16)
    report = (
        Auditor(ChainReader(history.w3), history.escrow).run(start, history.w3.eth.block_number).as_json()
    )
    assert not any(v["rule"].startswith("admin.") for v in report["violations"]), report["violations"]
    assert any("announced before this scan began" in note for note in report["notes"])
    assert report["admin"]["threshold"] == 2


def test_one_signer_named_twice_does_not_make_two(history: History) -> None:
    """Threshold 2, met by naming one key twice with its signature twice: the escrow refuses it
    (SignersNotAscending); calldata and attestation edited to show what an escrow without the check
    would have accepted."""
    from eth_abi import encode as abi_encode

    from cardless.audit.abi import escrow_abi

    abi = escrow_abi()
    settled = next(
        log
        for log in _logs(history)
        if log["topics"][0] == ORDER_SETTLED
        and log["topics"][1] == "0x" + history.settled_by_two.order_id.hex()
    )
    target = settled["transactionHash"]
    signer = history.new_oracle.address

    def twice_in_calldata(tx: dict[str, Any]) -> dict[str, Any]:
        if tx["hash"] != target:
            return tx
        data = bytes.fromhex(tx["input"][2:])
        _, names, types = abi.functions[data[:4]]
        values = dict(zip(names, abi_decode(types, data[4:]), strict=True))
        position = [a.lower() for a in values["signers"]].index(signer.lower())
        values["signers"] = [signer, signer]
        values["signatures"] = [values["signatures"][position]] * 2
        return {**tx, "input": "0x" + (data[:4] + abi_encode(types, [values[n] for n in names])).hex()}

    def twice_in_attestation(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        attested = topic("FulfilmentsAttested(bytes32,address[],uint256)")
        return [
            {**log, "data": "0x" + abi_encode(["address[]", "uint256"], [[signer, signer], 1]).hex()}
            if log["transactionHash"] == target and log["topics"][0] == attested
            else log
            for log in logs
        ]

    report = _run(history, TamperedReader(history.w3, edit=twice_in_attestation, edit_tx=twice_in_calldata))
    assert _rules(report, history.settled_by_two.order_id) == {"settle.below-threshold"}
    assert "not strictly ascending" in next(v["evidence"] for v in report["violations"])
    assert _rules(report) == {"settle.below-threshold"}
