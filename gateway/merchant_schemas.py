"""Wire models of the merchant side of the API (issue 9): merchants, API keys, the catalogue a merchant
edits, order lists, Sign-In with Ethereum. Same rules as :mod:`gateway.schemas`: ``*Create``/``*Update``
in, ``*Out`` out, money as decimal strings in base units, every input bounded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cardless.ledger.models import OrderState
from gateway.schemas import Address, BaseUnits, Bytes32, HexData

__all__ = [
    "SCOPES",
    "ApiKeyCreate",
    "ApiKeyCreatedOut",
    "ApiKeyOut",
    "ApiKeyRotate",
    "MerchantAccountOut",
    "MerchantCreate",
    "MerchantDisable",
    "MerchantSessionOut",
    "MerchantSignOutOut",
    "OrderListOut",
    "OrderSummaryOut",
    "PayoutAddressCreate",
    "PayoutTransactionOut",
    "Scope",
    "SiweLogin",
    "SiweNonceOut",
    "SiweSessionOut",
    "SkuAdminOut",
    "SkuCreate",
    "SkuPriceIn",
    "SkuUpdate",
]

Scope = Literal[
    "catalogue:write", "orders:read", "webhooks:write", "payouts:read", "risk:review", "audit:read"
]
SCOPES: tuple[str, ...] = get_args(Scope)

Slug = Annotated[
    str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$", description="Lower-case letters, digits and hyphens")
]
RateLimit = Annotated[
    str,
    Field(pattern=r"^[1-9][0-9]{0,8}/(second|minute|hour|day)$", description="`N/second|minute|hour|day`"),
]
ProviderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
TokenSymbol = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]
Title = Annotated[str, Field(min_length=1, max_length=200)]
DailyLimit = Annotated[int, Field(ge=1, le=1_000_000)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------ merchants


class MerchantCreate(_In):
    id: Slug
    name: Title
    address: Address = Field(description="The account the escrow credits on settlement")
    fee_bps: int = Field(ge=0, le=10_000, description="Platform fee; at most the escrow's fee cap")


class MerchantDisable(_In):
    reason: str = Field(min_length=1, max_length=500)


class MerchantAccountOut(_Out):
    id: str
    name: str
    address: Address
    fee_bps: int
    payout_address: Address | None = Field(description="The payout address last prepared through the API")
    status: Literal["active", "disabled"]
    disabled_reason: str | None
    created_at: datetime


class PayoutAddressCreate(_In):
    payout_address: Address


class PayoutTransactionOut(_Out):
    """``setPayoutAddress(payout)`` for the merchant's own wallet to sign and send; the gateway never
    sends it (only the merchant account itself can choose where its withdrawals go)."""

    chain_id: int
    from_: Address = Field(alias="from", description="The merchant account: the only sender that works")
    to: Address = Field(description="The escrow")
    value: BaseUnits
    data: HexData
    current_payout_address: Address = Field(description="On chain now (the account itself when unset)")

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)


# ------------------------------------------------------------------------------------------ API keys


class ApiKeyCreate(_In):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(min_length=1, max_length=6, json_schema_extra={"uniqueItems": True})
    expires_in_days: int | None = Field(default=None, ge=1, le=3_650, description="None: never expires")
    rate_limit: RateLimit | None = Field(default=None, description="None: the gateway's default quota")

    @field_validator("scopes")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("scopes must not repeat")
        return value


class ApiKeyRotate(_In):
    overlap_seconds: int = Field(
        default=86_400, ge=0, le=7 * 86_400, description="How long the old key keeps working"
    )


class ApiKeyOut(_Out):
    id: int
    merchant: str
    prefix: str = Field(description="`ck_live_<prefix>`: identifies the key; the secret is never shown again")
    name: str
    scopes: list[Scope]
    rate_limit: str | None
    status: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rotated_to: int | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The whole key. Shown once: only its hash is stored")


# ------------------------------------------------------------------------------------------ catalogue


class SkuPriceIn(_In):
    token: TokenSymbol
    amount: BaseUnits


class SkuCreate(_In):
    id: Slug
    title: Title
    face_value: int | None = Field(default=None, ge=1, le=10**15, description="Game units credited")
    providers: list[ProviderName] = Field(
        min_length=1, max_length=8, description="Failover order", json_schema_extra={"uniqueItems": True}
    )
    prices: list[SkuPriceIn] = Field(min_length=1, max_length=16)
    enabled: bool = True
    daily_limit: DailyLimit | None = Field(default=None, description="Orders per UTC day, all buyers")
    buyer_daily_limit: DailyLimit | None = Field(default=None, description="Orders per buyer per UTC day")


class SkuUpdate(_In):
    title: Title | None = None
    face_value: int | None = Field(default=None, ge=1, le=10**15)
    providers: list[ProviderName] | None = Field(
        default=None, min_length=1, max_length=8, json_schema_extra={"uniqueItems": True}
    )
    prices: list[SkuPriceIn] | None = Field(default=None, min_length=1, max_length=16)
    enabled: bool | None = None
    daily_limit: DailyLimit | None = None
    buyer_daily_limit: DailyLimit | None = None


class SkuPriceOut(_Out):
    token: str
    amount: BaseUnits


class SkuAdminOut(_Out):
    id: str
    merchant: str
    title: str
    face_value: int | None
    providers: list[str]
    prices: list[SkuPriceOut]
    enabled: bool
    daily_limit: int | None
    buyer_daily_limit: int | None
    created_at: datetime
    updated_at: datetime


# ------------------------------------------------------------------------------------------ orders


class OrderSummaryOut(_Out):
    order_id: Bytes32
    state: OrderState
    sku: str
    buyer: Address
    merchant: Address
    token: Address
    amount: BaseUnits
    fee_bps: int
    created_at: datetime
    paid_tx: Bytes32 | None
    settle_tx: Bytes32 | None
    refund_tx: Bytes32 | None
    receipt_hash: Bytes32 | None


class OrderListOut(_Out):
    """A page, newest first. Pass the last ``order_id`` as ``starting_after`` for the next one."""

    object: Literal["list"] = "list"
    data: list[OrderSummaryOut]
    has_more: bool


# ------------------------------------------------------------------------------------------ SIWE


class SiweNonceOut(_Out):
    nonce: str
    domain: str = Field(description="The domain the EIP-4361 message must name")
    chain_id: int
    issued_at: datetime
    expires_at: datetime = Field(description="Sign in before this; the nonce works once")


class SiweLogin(_In):
    message: str = Field(min_length=1, max_length=4_096, description="The EIP-4361 message, as signed")
    signature: HexData = Field(max_length=2 + 2 * 65, description="personal_sign (EIP-191) signature")


class SiweSessionOut(_Out):
    token: str = Field(description="Send as `Authorization: Bearer <token>`")
    address: Address
    expires_at: datetime


class MerchantSessionOut(_Out):
    token: str = Field(description="`cm_sess_...`: send as `Authorization: Bearer <token>`; shown once")
    merchant: str = Field(description="The merchant this session acts for")
    address: Address = Field(description="The merchant's settlement address, which signed in")
    scopes: list[Scope] = Field(description="What the session may do (the dashboard's scopes)")
    expires_at: datetime


class MerchantSignOutOut(_Out):
    merchant: str
    address: Address
    signed_out_at: datetime = Field(description="From now on the session's token is refused (401)")
