"""Tampered and odd histories, each flagged with the right rule (issue 10, "Must show").

The honest history is real (tests/audit/conftest.py); a tampered one is the same chain seen through a
:class:`~tests.audit.tampering.TamperedReader`, because the real escrow refuses to make it.
"""

from __future__ import annotations

from typing import Any

import pytest

from cardless.audit import Auditor, ChainReader
from tests.audit.conftest import History
from tests.audit.tampering import TamperedReader, crafted_log, topic

pytestmark = pytest.mark.xdist_group("audit")

ORACLE_SIGNER_SET = "OracleSignerSet(address,bool)"
ORDER_PAID = topic(
    "OrderPaid(bytes32,address,address,address,uint256,uint16,uint48,uint48,bytes32,bytes32,address)"
)
ORDER_SETTLED = topic("OrderSettled(bytes32,bytes32,uint48)")


def _run(history: History, reader: ChainReader) -> dict[str, Any]:
    return Auditor(reader, history.escrow).run(0, history.w3.eth.block_number).as_json()


def _rules(report: dict[str, Any], order: bytes | None = None) -> set[str]:
    oid = "0x" + order.hex() if order is not None else None
    return {v["rule"] for v in report["violations"] if oid is None or v["order_id"] == oid}


def _grant(log: dict[str, Any], signer: str, authorised: bool) -> bool:
    return (
        log["topics"][0] == topic(ORACLE_SIGNER_SET)
        and log["topics"][1][-40:] == signer[2:].lower()
        and log["data"].endswith("1" if authorised else "0")
    )


def _first(logs: list[dict[str, Any]], topic0: str, order: bytes) -> int:
    return next(
        i
        for i, log in enumerate(logs)
        if log["topics"][0] == topic0 and log["topics"][1] == "0x" + order.hex()
    )


def test_a_settlement_by_a_key_that_was_never_an_oracle_signer(history: History) -> None:
    old = history.old_oracle.address

    def drop_grant(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [log for log in logs if not _grant(log, old, True)]

    report = _run(history, TamperedReader(history.w3, edit=drop_grant))
    assert "settle.signer-unauthorised" in _rules(report, history.settled_single.order_id)
    assert "refund.signer-unauthorised" in _rules(report, history.refunded.order_id)
    for order in history.settled_batch:
        assert "settle.signer-unauthorised" in _rules(report, order.order_id)
    # the new key was granted in its own event: its settlement stands
    assert _rules(report, history.settled_by_new_key.order_id) == set()


def test_a_settlement_by_a_key_no_longer_an_oracle_signer_after_a_rotation(history: History) -> None:
    old = history.old_oracle.address

    def revoke_early(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # the rotation's revocation moved to just before the first settlement
        revoke = next(log for log in logs if _grant(log, old, False))
        logs = [log for log in logs if log is not revoke]
        at = _first(logs, ORDER_SETTLED, history.settled_single.order_id)
        moved = {
            **revoke,
            "blockNumber": logs[at]["blockNumber"],
            "transactionIndex": logs[at]["transactionIndex"],
        }
        return [*logs[:at], moved, *logs[at:]]

    report = _run(history, TamperedReader(history.w3, edit=revoke_early))
    # its one signer no longer counts, so the threshold of 1 is not met either
    assert _rules(report, history.settled_single.order_id) == {
        "settle.signer-unauthorised",
        "settle.below-threshold",
    }
    assert _rules(report, history.settled_by_new_key.order_id) == set()
    (violation,) = [
        v
        for v in report["violations"]
        if v["order_id"] == "0x" + history.settled_single.order_id.hex()
        and v["rule"] == "settle.signer-unauthorised"
    ]
    assert violation["block"] == int(history.env.w3.eth.get_transaction(violation["tx"])["blockNumber"])
    assert history.old_oracle.address in violation["evidence"]


def test_a_fee_above_the_cap_in_force(history: History) -> None:
    def lower_cap(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        at = _first(logs, ORDER_PAID, history.open_in_time.order_id)
        cap = crafted_log(history.escrow, logs[at], "FeeCapSet(uint16)", [], ["uint16"], [100])
        return [*logs[:at], cap, *logs[at:]]

    report = _run(history, TamperedReader(history.w3, edit=lower_cap))
    # orders paid before the cap fell are fine; the one paid after carries 250 bps > 100
    assert _rules(report) == {"pay.fee-above-cap"}
    (violation,) = report["violations"]
    assert violation["order_id"] == "0x" + history.open_in_time.order_id.hex()
    assert "feeBps 250, fee cap in force 100" in violation["evidence"]


def test_a_forged_proof_signature(history: History) -> None:
    def flip_signature(tx: dict[str, Any]) -> dict[str, Any]:
        data = tx["input"]
        return {**tx, "input": data[:-70] + ("00" if data[-70:-68] != "00" else "11") + data[-68:]}

    report = _run(history, TamperedReader(history.w3, edit_tx=flip_signature))
    rules = _rules(report, history.settled_single.order_id)
    assert "settle.signature" in rules
    assert "pay.quote-signature" in _rules(report, history.open_in_time.order_id)


def test_an_order_paid_twice_and_ended_twice(history: History) -> None:
    def duplicate(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        paid = _first(logs, ORDER_PAID, history.refunded.order_id)
        settled = _first(logs, ORDER_SETTLED, history.settled_single.order_id)
        out = list(logs)
        out.append(dict(logs[paid]))
        # an OrderSettled again for the already settled order, with its own attestation
        out.extend(dict(log) for log in logs[settled : settled + 2])
        return out

    report = _run(history, TamperedReader(history.w3, edit=duplicate))
    assert "pay.duplicate" in _rules(report, history.refunded.order_id)
    assert "end.twice" in _rules(report, history.settled_single.order_id)


def test_a_settlement_after_the_window_and_a_reclaim_before_the_deadline(history: History) -> None:
    """The block times are what the node says: a node that reports the settlement's block after the
    settlement window closed, and the reclaim's block before the deadline, shows what an escrow that
    skipped those checks would have done."""
    auditor_grace = Auditor(ChainReader(history.w3), history.escrow).grace
    settled, reclaimed = history.settled_single, history.reclaimed

    class Clock(TamperedReader):
        def block_timestamps(self, numbers: Any) -> dict[int, int]:
            real = super().block_timestamps(numbers)
            return {n: shifted.get(n, t) for n, t in real.items()}

    reader = Clock(history.w3)
    honest = Auditor(ChainReader(history.w3), history.escrow).run(0, history.w3.eth.block_number).state
    shifted = {
        honest.orders["0x" + reclaimed.order_id.hex()].ended_block: reclaimed.fulfilment_deadline - 1,  # type: ignore[dict-item]
    }
    if auditor_grace is not None:  # protocol v2: a settlement window
        shifted[honest.orders["0x" + settled.order_id.hex()].ended_block] = (  # type: ignore[index]
            settled.fulfilment_deadline + auditor_grace + 1
        )
    report = _run(history, reader)
    assert _rules(report, reclaimed.order_id) == {"reclaim.before-deadline"}
    if auditor_grace is not None:
        assert _rules(report, settled.order_id) == {"settle.window-closed"}
    assert _rules(report) <= {"reclaim.before-deadline", "settle.window-closed"}


WITHDRAWN = topic("Withdrawn(address,address,address,uint256)")
SWEEPER_SET = topic("SweeperSet(address,bool)")
PAYOUT_SET = topic("PayoutAddressSet(address,address)")


def _withdrawals(report: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((v["rule"], v["tx"]) for v in report["violations"] if v["rule"].startswith("withdraw."))


def test_withdrawals_by_the_sweeper_and_the_payout_address_stand(history: History) -> None:
    report = _run(history, ChainReader(history.w3))
    assert _withdrawals(report) == [] and report["unverified"] == []
    assert report["admin"]["payouts"] == {history.env.merchants[1].address: history.payout}


def test_a_withdrawal_by_a_caller_that_may_not_withdraw(history: History) -> None:
    """The escrow refuses such a call (UnauthorisedWithdrawal); a node that names another sender for
    the withdrawals shows what an escrow that skipped the check would have done."""
    stranger = "0x" + "5e" * 20
    withdrawals = {
        log["transactionHash"]
        for log in ChainReader(history.w3).get_logs(history.escrow, 0, history.w3.eth.block_number)
        if log["topics"][0] == WITHDRAWN
    }
    assert len(withdrawals) == 2

    def from_stranger(tx: dict[str, Any]) -> dict[str, Any]:
        return {**tx, "from": stranger} if tx["hash"] in withdrawals else tx

    report = _run(history, TamperedReader(history.w3, edit_tx=from_stranger))
    assert _withdrawals(report) == sorted(("withdraw.unauthorised-caller", tx) for tx in withdrawals)
    assert {v["rule"] for v in report["violations"]} == {"withdraw.unauthorised-caller"}


def test_a_sweeper_never_granted_and_a_payout_address_never_set(history: History) -> None:
    def drop(topic0: str) -> Any:
        return lambda logs: [log for log in logs if log["topics"][0] != topic0]

    no_sweeper = _run(history, TamperedReader(history.w3, edit=drop(SWEEPER_SET)))
    (sweep,) = _withdrawals(no_sweeper)
    assert sweep[0] == "withdraw.unauthorised-caller"
    assert history.env.merchants[0].address in next(
        v["evidence"] for v in no_sweeper["violations"] if v["tx"] == sweep[1]
    )

    # without its PayoutAddressSet, merchant 1's withdrawal went to a stranger, called by that stranger
    no_payout = _run(history, TamperedReader(history.w3, edit=drop(PAYOUT_SET)))
    rules = [rule for rule, _ in _withdrawals(no_payout)]
    assert rules == ["withdraw.unauthorised-caller", "withdraw.wrong-payout"]
