"""``--receipts FILE``: receipts and account openings checked against what the chain committed to.

The file is what the gateway exports (``GET /v1/audit/receipts``, docs/audit.md) or a provider hands
over: JSON, either ``{"receipts": [...]}``, a bare list, or one object per line (JSON Lines). Each entry::

    {"order_id": "0x…32 bytes",
     "receipt": {…the receipt object exactly as hashed…},       # optional
     "account": "812345678@os_asia", "account_salt": "0x…32 bytes"}   # optional, together

For each entry the audit recomputes ``receiptHash = keccak256(RFC 8785(receipt))`` and compares it with
``OrderSettled.receiptHash``, and ``keccak256(utf8(account) || salt)`` with ``OrderPaid.accountCommitment``.
A receipt that itself names an order id or an account commitment must name this order's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cardless import protocol
from cardless.audit._exceptions import ReceiptsFileError
from cardless.audit.model import AuditState, Step, Violation

__all__ = ["check_receipts", "load_receipts"]


def load_receipts(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReceiptsFileError(f"{path}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text)
        entries = doc["receipts"] if isinstance(doc, dict) else doc
    except json.JSONDecodeError:
        try:
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ReceiptsFileError(f"{path}: neither JSON nor JSON Lines ({exc})") from exc
    except KeyError:
        raise ReceiptsFileError(f"{path}: a JSON object must carry a 'receipts' list") from None
    if not isinstance(entries, list):
        raise ReceiptsFileError(f"{path}: 'receipts' must be a list")
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("order_id"), str):
            raise ReceiptsFileError(f"{path}: entry {number} has no order_id")
        if "receipt" in entry and not isinstance(entry["receipt"], dict):
            raise ReceiptsFileError(f"{path}: entry {number}: receipt must be an object")
        if ("account" in entry) != ("account_salt" in entry):
            raise ReceiptsFileError(f"{path}: entry {number}: account and account_salt go together")
    return entries


def _hex32(value: Any) -> bytes | None:
    try:
        raw = bytes.fromhex(str(value).removeprefix("0x"))
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def check_receipts(state: AuditState, entries: list[dict[str, Any]], focus: str | None = None) -> list[Step]:
    """Append a violation to ``state`` for every entry that does not match the chain; returns the steps
    of the ``focus`` order (``cardless audit order``)."""
    steps: list[Step] = []

    def check(passed: bool, rule: str, step: str, detail: str, oid: str) -> None:
        record = state.orders.get(oid)
        block = (
            record.ended_block if record and record.ended_block else (record.paid_block if record else None)
        )
        tx = record.ended_tx if record and record.ended_tx else (record.paid_tx if record else None)
        if oid == focus:
            steps.append(Step(step, passed, detail, block, tx, None if passed else rule))
        if not passed:
            state.violations.append(Violation(rule, detail, block, tx, oid))

    for entry in entries:
        oid = str(entry["order_id"]).lower()
        record = state.orders.get(oid)
        if record is None:
            check(False, "receipt.unknown-order", "receipt's order", "no OrderPaid for this order id", oid)
            continue
        receipt = entry.get("receipt")
        if receipt is not None:
            named = receipt.get("order_id", receipt.get("orderId"))
            if named is not None:
                check(
                    str(named).lower() == oid,
                    "receipt.hash-mismatch",
                    "receipt names the order",
                    f"the receipt names order {named}",
                    oid,
                )
            if record.status != "settled" or record.receipt_hash is None:
                check(
                    False,
                    "receipt.not-settled",
                    "receipt hash",
                    f"the order is {record.status}, not settled",
                    oid,
                )
            else:
                try:
                    computed = "0x" + protocol.receipt_hash(receipt).hex()
                except (protocol.ProtocolError, ValueError, TypeError) as exc:
                    computed = f"(not hashable: {exc})"
                check(
                    computed == record.receipt_hash,
                    "receipt.hash-mismatch",
                    "receipt hash",
                    f"keccak256(RFC 8785(receipt)) = {computed}, "
                    f"OrderSettled.receiptHash = {record.receipt_hash}",
                    oid,
                )
            named_commitment = receipt.get("account_commitment", receipt.get("accountCommitment"))
            if named_commitment is not None:
                check(
                    str(named_commitment).lower() == record.account_commitment,
                    "receipt.account-commitment",
                    "receipt's account commitment",
                    f"the receipt names {named_commitment}; the order has {record.account_commitment}",
                    oid,
                )
        if "account" in entry:
            salt = _hex32(entry["account_salt"])
            commitment: str | None = None
            if salt is not None and isinstance(entry["account"], str) and entry["account"]:
                commitment = "0x" + protocol.account_commitment(entry["account"], salt).hex()
            check(
                commitment == record.account_commitment,
                "receipt.account-commitment",
                "account commitment",
                f"keccak256(account || salt) = {commitment}, "
                f"OrderPaid.accountCommitment = {record.account_commitment}",
                oid,
            )
    return steps
