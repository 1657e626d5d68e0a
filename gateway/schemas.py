"""What goes over the wire: one pydantic model per use (full-stack-fastapi-template style).

Request bodies are ``*Create``, response bodies ``*Out``; :class:`Problem` is every error body. The
services build these from ORM rows and protocol values, so no ORM row ever reaches a client. Amounts
are integers in the token's base units written as decimal strings (a JavaScript client would round a
JSON number above 2**53); timestamps that are chain times stay integers (unix seconds).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from cardless.ledger.models import OrderState

__all__ = [
    "AccountCheck",
    "CallbackAck",
    "CatalogueOut",
    "ChainHealth",
    "ChainRefs",
    "ChainTxOut",
    "DatabaseHealth",
    "DeploymentOut",
    "Eip712Domain",
    "Eip712Field",
    "Eip712Payload",
    "FieldError",
    "HealthOut",
    "MerchantOut",
    "OrderMessage",
    "OrderOut",
    "OrderPublicOut",
    "PermitHint",
    "PriceOut",
    "Problem",
    "ProofOut",
    "PublicChainRefs",
    "QuoteCreate",
    "QuoteOut",
    "SkuOut",
    "TimelineEntry",
    "TokenOut",
    "TransactionStep",
]

BaseUnits = Annotated[
    str, Field(pattern=r"^[0-9]+$", description="An integer in the token's base units, as a decimal string")
]
Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="A 20-byte address (EIP-55)")]
Bytes32 = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$", description="32 bytes, 0x-prefixed hex")]
HexData = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]*$", description="Bytes, 0x-prefixed hex")]
UnixTime = Annotated[int, Field(ge=0, description="Unix seconds (chain time)")]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _CamelOut(_Out):
    """EIP-712 objects keep the camelCase names wallets expect (``orderId``, ``chainId``)."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True)


# ------------------------------------------------------------------------------------------ errors


class FieldError(_Out):
    field: str = Field(description="The input at fault: `sku`, `path.order_id`; `body` for the whole body")
    message: str


class Problem(_Out):
    """RFC 9457 problem details (``application/problem+json``). ``type`` is ``about:blank`` and
    ``title`` the HTTP status phrase: the status says what kind of problem it is, ``detail`` this
    occurrence, and ``errors`` (when an input is at fault) which one."""

    type: str = "about:blank"
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    errors: list[FieldError] | None = Field(
        default=None, description="Present when the problem is an input: one entry per field at fault"
    )


# ------------------------------------------------------------------------------------------ catalogue


class TokenOut(_Out):
    symbol: str
    address: Address = Field(description="The zero address for the chain's native coin")
    decimals: int


class MerchantOut(_Out):
    id: str
    name: str
    address: Address
    fee_bps: int = Field(ge=0, le=10_000)


class PriceOut(_Out):
    token: str = Field(description="Token symbol")
    address: Address
    decimals: int
    amount: BaseUnits


class SkuOut(_Out):
    id: str
    title: str
    merchant: str = Field(description="The merchant's id")
    prices: list[PriceOut]


class CatalogueOut(_Out):
    chain_id: int
    escrow: Address
    merchants: list[MerchantOut]
    skus: list[SkuOut]


# ------------------------------------------------------------------------------------------ quotes


class QuoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$", examples=["genshin-60"])
    account: str = Field(
        min_length=1, max_length=64, description="The game account to credit", examples=["12345678"]
    )
    token: str = Field(min_length=1, max_length=32, examples=["tUSDC", "ETH"])
    buyer: str = Field(
        pattern=r"^0x[0-9a-fA-F]{40}$",
        description="The wallet that will pay",
        examples=["0x70997970C51812dc3A010C7d01b50e0d17dc79C8"],
    )


class OrderMessage(_CamelOut):
    """The order as the EIP-712 ``Order`` message the quote signer signed (docs/protocol.md)."""

    order_id: Bytes32
    buyer: Address
    merchant: Address
    token: Address
    amount: BaseUnits
    fee_bps: int
    quote_expiry: UnixTime
    fulfilment_deadline: UnixTime
    sku_hash: Bytes32
    account_commitment: Bytes32


class Eip712Field(_Out):
    name: str
    type: str


class Eip712Domain(_CamelOut):
    name: str
    version: str
    chain_id: int
    verifying_contract: Address


class Eip712Payload(_CamelOut):
    """Complete typed data for ``eth_signTypedData_v4``: a wallet verifies the quote without our code."""

    types: dict[str, list[Eip712Field]]
    domain: Eip712Domain
    primary_type: Literal["Order"]
    message: OrderMessage


class TransactionStep(_Out):
    step: Literal["approve", "pay"]
    to: Address
    value: BaseUnits = Field(description="Wei to send with the transaction")
    data: HexData


class PermitHint(_Out):
    """How to pay in one transaction with an EIP-2612 permit instead of approve + pay."""

    function: str
    note: str
    spender: Address
    value: BaseUnits


class AccountCheck(_Out):
    """The provider that validated the game account and the nickname it knows it by, shown to the buyer
    before paying (a mistyped account of a valid shape passes validation)."""

    account: str = Field(
        description="The game account exactly as the order commits to it (trimmed, NFC) and as the "
        "provider will be asked to credit it; the account commitment is over this string"
    )
    provider: str
    nickname: str | None


class QuoteOut(_Out):
    order_id: Bytes32
    order: OrderMessage
    token: TokenOut
    quote_signer: Address
    quote_signature: HexData
    account_salt: Bytes32 = Field(
        description="The salt of order.accountCommitment = keccak256(utf8(account) || salt). Keep it: with "
        "the account it proves what was credited. The gateway does not store it (it derives it from its "
        "account key), so a copy of its database cannot be used to guess the account"
    )
    eip712: Eip712Payload
    transactions: list[TransactionStep] = Field(description="Send in order: approve (tokens only), then pay")
    permit: PermitHint | None = Field(description="None for the native coin")
    account_check: AccountCheck


# ------------------------------------------------------------------------------------------ orders


class ChainTxOut(_Out):
    purpose: str = Field(description="settle | settle_batch | refund | withdraw")
    tx_hash: Bytes32
    state: str
    nonce: int


class PublicChainRefs(_Out):
    paid_tx: Bytes32 | None
    paid_block: int | None
    settle_tx: Bytes32 | None
    refund_tx: Bytes32 | None


class ChainRefs(PublicChainRefs):
    transactions: list[ChainTxOut] = Field(
        description="The oracle's transactions for this order, oldest first"
    )


class ProofOut(_Out):
    """The oracle's EIP-712 fulfilment proof over (order id, receipt hash, fulfilled at)."""

    signature: HexData
    fulfilled_at: UnixTime
    receipt_hash: Bytes32 | None


class TimelineEntry(_Out):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    at: datetime = Field(description="UTC")
    from_: OrderState | None = Field(alias="from")
    to: OrderState
    reason: str


class OrderPublicOut(_Out):
    """What anyone may read of an order: no more than the chain already shows (its state, the
    transaction hashes, the proof and the receipt hash). Sent without credentials."""

    order_id: Bytes32
    state: OrderState
    chain: PublicChainRefs
    receipt_hash: Bytes32 | None
    proof: ProofOut | None
    refund_reason: int | None = Field(description="The on-chain RefundReason code, once refunding")


class OrderOut(_Out):
    """The whole order (buyer, provider reference, receipt, timeline, last error), for the operator."""

    order_id: Bytes32
    state: OrderState
    sku: str
    provider: str | None = Field(description="The provider the order is (or was last) with")
    buyer: Address
    merchant: Address
    token: Address
    amount: BaseUnits
    fee_bps: int
    quote_expiry: UnixTime
    fulfilment_deadline: UnixTime
    account_commitment: Bytes32
    chain: ChainRefs
    provider_ref: str | None
    receipt: dict[str, Any] | None = Field(
        description="The canonical receipt, exactly as hashed into receipt_hash (docs/protocol.md)"
    )
    receipt_hash: Bytes32 | None
    proof: ProofOut | None
    refund_reason: int | None = Field(description="The on-chain RefundReason code, once refunding")
    timeline: list[TimelineEntry]
    last_error: str | None


# ------------------------------------------------------------------------------------------ callbacks


class CallbackAck(_Out):
    accepted: Literal[True] = True


# ------------------------------------------------------------------------------------------ health


class ChainHealth(_Out):
    ok: bool
    block: int | None = None


class DatabaseHealth(_Out):
    ok: bool


class DeploymentOut(_Out):
    """The deployment file the gateway runs against (cardless.protocol.deployment)."""

    # The file's owner may add a field; the wire keeps this shape until the schema says otherwise.
    model_config = ConfigDict(extra="ignore")

    version: int
    chain_id: int
    rpc_url: str | None = Field(
        description="A JSON-RPC URL wallets may use (CARDLESS_PUBLIC_RPC_URL); the node the system itself "
        "uses is named only by a development system, since a provider's URL often carries an API key"
    )
    escrow: Address
    escrow_source_hash: str
    owner: Address
    fee_recipient: Address
    quote_signers: list[Address]
    oracle_signers: list[Address]
    tokens: list[TokenOut]
    deployed_block: int


class HealthOut(_Out):
    status: Literal["ok", "degraded"]
    chain: ChainHealth
    database: DatabaseHealth
    deployment: DeploymentOut
    simulator: str | None = Field(
        description="The simulated provider's URL: only from an embedded development system (cardless run)"
    )
    processes: dict[str, Literal["running", "restarting", "down"]] | None = Field(
        default=None,
        description="The child processes of an embedded development system (cardless run: dev_chain, "
        "simulator, oracle) and their states; null elsewhere. One not running makes the status degraded",
    )
