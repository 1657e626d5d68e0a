"""The receipts export on the wire: exactly the file ``cardless audit --receipts`` reads
(docs/audit.md "The receipts file")."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ReceiptEntry", "ReceiptsOut"]

_HEX32 = r"^0x[0-9a-f]{64}$"


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReceiptEntry(_Out):
    order_id: str = Field(pattern=_HEX32, description="The on-chain orderId, lower-case hex")
    receipt: dict[str, Any] = Field(
        description="The provider receipt exactly as the oracle hashed it (RFC 8785, keccak256): "
        "OrderSettled.receiptHash is the hash of this object"
    )
    # Absent, never null (exclude_if): the auditor reads a present `account` as one to check.
    account: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="The buyer's game account in plain text, as committed in OrderPaid.accountCommitment. "
        "Personal data: present only for the operator key and the merchant that owns the order, and "
        "only with accounts=true; absent (with account_salt) when it cannot be decrypted",
    )
    account_salt: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        pattern=_HEX32,
        description="The commitment's 32-byte salt: keccak256(utf8(account) || salt) == accountCommitment",
    )


class ReceiptsOut(_Out):
    receipts: list[ReceiptEntry]
    next: str | None = Field(
        description="Pass as `from` for the next page; null when this page reaches the newest settlement"
    )
