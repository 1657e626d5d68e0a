"""A merchant's money on the wire: balances per token and the settlement report (the style of
:mod:`gateway.schemas`: amounts are base units as decimal strings)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BalanceOut", "BalancesOut", "PayoutOut", "SettlementLine", "SettlementReport", "TokenReport"]

_UNITS = "An integer in the token's base units, as a decimal string"


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BalanceOut(_Out):
    token: str
    symbol: str
    balance_on_chain: str = Field(
        description="Settled and not yet paid out: the escrow's balanceOf, read now. " + _UNITS
    )
    withdrawn: str = Field(description="Paid out to the merchant's payout address so far. " + _UNITS)
    in_escrow: str = Field(description="Paid by buyers, not yet settled, refunded or reclaimed. " + _UNITS)
    settled_net: str = Field(description="Every settled order's amount less its fee. " + _UNITS)
    reconciled: bool = Field(description="settled_net == balance_on_chain + withdrawn, to the wei")
    block: int = Field(description="The block balance_on_chain was read at")


class BalancesOut(_Out):
    merchant: str
    balances: list[BalanceOut]


class SettlementLine(_Out):
    order_id: str
    settled_at: datetime
    settle_tx: str | None
    gross: str
    fee: str
    net: str


class PayoutOut(_Out):
    tx_hash: str
    block_number: int
    block_time: int
    to: str
    amount: str


class TokenReport(_Out):
    token: str
    symbol: str
    opening_balance: str = Field(description="Net settled less paid out before the period. " + _UNITS)
    settled_count: int
    gross: str
    fees: str
    net: str
    withdrawn: str
    closing_balance: str = Field(description="opening_balance + net - withdrawn. " + _UNITS)
    balance_on_chain: str | None = Field(
        description="The escrow's balanceOf now, when the period runs to now: it must equal closing_balance"
    )
    reconciled: bool | None
    settlements: list[SettlementLine]
    payouts: list[PayoutOut]


class SettlementReport(_Out):
    merchant: str
    period_start: datetime
    period_end: datetime
    tokens: list[TokenReport]
