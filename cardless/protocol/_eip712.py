"""The Cardless wire protocol: orders, quotes, fulfilment proofs and refunds as EIP-712 typed data.

This module is the only place that knows how these values are encoded. The gateway signs quotes with
it, the oracle signs proofs and refunds with it, and auditors recover signers with it; the Solidity
contract (``contracts/src/CardlessEscrow.sol``) implements the same encoding, and
``tests/oracles/test_protocol.py`` checks both agree byte for byte.

Typed data (domain ``CardlessEscrow`` version ``2``, bound to chain id and escrow address)::

    Order(bytes32 orderId,address buyer,address merchant,address token,uint256 amount,uint16 feeBps,
          uint48 quoteExpiry,uint48 fulfilmentDeadline,bytes32 skuHash,bytes32 accountCommitment)
    Fulfilment(bytes32 orderId,bytes32 receiptHash,uint48 fulfilledAt)
    FulfilmentBatch(Fulfilment[] fulfilments)
    Refund(bytes32 orderId,uint16 reasonCode)

See docs/protocol.md for the format and how to verify it without Cardless code.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any, Final, NewType

import coincurve
import rfc8785
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_hash.auto import keccak as keccak_256
from eth_typing import ChecksumAddress, HexAddress, HexStr
from eth_utils import keccak, to_checksum_address

from cardless.protocol._exceptions import ProtocolError

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "EIP712_DOMAIN_FIELDS",
    "MAX_AMOUNT",
    "MAX_BPS",
    "NATIVE_TOKEN",
    "SETTLEMENT_GRACE",
    "ChainId",
    "EscrowDomain",
    "Fulfilment",
    "Hash32",
    "Order",
    "OrderId",
    "OrderStatus",
    "RefundReason",
    "Wei",
    "account_commitment",
    "batch_digest",
    "batch_typed_data",
    "bytes32_from_hex",
    "domain_separator",
    "fulfilment_digest",
    "fulfilment_typed_data",
    "hash32_from_hex",
    "order_id_from_hex",
    "order_struct_hash",
    "permit_typed_data",
    "quote_digest",
    "quote_typed_data",
    "quote_types",
    "receipt_hash",
    "recover_signer",
    "refund_digest",
    "refund_typed_data",
    "sign",
    "sign_digest",
]

Wei = NewType("Wei", int)
"""An amount in a token's base units (wei for ETH)."""
ChainId = NewType("ChainId", int)
OrderId = NewType("OrderId", bytes)
"""An order id: 32 bytes, chosen by the gateway, the escrow's key for the order."""
Hash32 = NewType("Hash32", bytes)
"""A 32-byte hash (receipt hash, SKU hash, account commitment, digest)."""

DOMAIN_NAME: Final = "CardlessEscrow"
DOMAIN_VERSION: Final = "2"
MAX_BPS: Final = 10_000
MAX_AMOUNT: Final = (2**256 - 1) // MAX_BPS
"""``CardlessEscrow.MAX_AMOUNT``: larger orders are refused so fee arithmetic cannot overflow."""
NATIVE_TOKEN: Final[ChecksumAddress] = to_checksum_address("0x" + "00" * 20)
SETTLEMENT_GRACE: Final = 6 * 3_600
"""``CardlessEscrow.SETTLEMENT_GRACE``: proofs of a top-up made by ``fulfilmentDeadline`` are accepted until
``fulfilmentDeadline + SETTLEMENT_GRACE``; ``reclaim`` opens only after that (docs/protocol.md)."""

_UINT16_MAX: Final = 2**16 - 1
_UINT48_MAX: Final = 2**48 - 1
_UINT256_MAX: Final = 2**256 - 1

_ORDER_FIELDS: Final = [
    {"name": "orderId", "type": "bytes32"},
    {"name": "buyer", "type": "address"},
    {"name": "merchant", "type": "address"},
    {"name": "token", "type": "address"},
    {"name": "amount", "type": "uint256"},
    {"name": "feeBps", "type": "uint16"},
    {"name": "quoteExpiry", "type": "uint48"},
    {"name": "fulfilmentDeadline", "type": "uint48"},
    {"name": "skuHash", "type": "bytes32"},
    {"name": "accountCommitment", "type": "bytes32"},
]
_FULFILMENT_FIELDS: Final = [
    {"name": "orderId", "type": "bytes32"},
    {"name": "receiptHash", "type": "bytes32"},
    {"name": "fulfilledAt", "type": "uint48"},
]
_REFUND_FIELDS: Final = [
    {"name": "orderId", "type": "bytes32"},
    {"name": "reasonCode", "type": "uint16"},
]


class OrderStatus(IntEnum):
    """Mirror of ``ICardlessEscrow.OrderStatus``."""

    NONE = 0
    PAID = 1
    SETTLED = 2
    REFUNDED = 3
    RECLAIMED = 4


class RefundReason(IntEnum):
    """Reason codes the oracle puts in a refund authorisation (``uint16`` on chain)."""

    PROVIDER_REJECTED = 1
    INVALID_ACCOUNT = 2
    OUT_OF_STOCK = 3
    PROVIDER_UNAVAILABLE = 4
    DEADLINE_APPROACHING = 5
    RISK_REJECTED = 6
    OPERATOR = 7
    NOT_SETTLEABLE = 8
    """The top-up completed after the deadline, or its proof missed the settlement window."""


def _bytes32(field: str, value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ProtocolError(field, f"must be 32 bytes, got {value!r}")
    return bytes(value)


def bytes32_from_hex(field: str, value: str | None) -> bytes:
    """``0x`` + 64 hex digits (as stored and served) to 32 bytes; a ProtocolError names ``field``."""
    if not isinstance(value, str) or len(value) != 66 or not value.startswith(("0x", "0X")):
        raise ProtocolError(field, f"must be 0x and 64 hex digits, got {value!r}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise ProtocolError(field, f"must be 0x and 64 hex digits, got {value!r}") from None


def order_id_from_hex(value: str | None) -> OrderId:
    """An order id as the ledger and the API write it (``0x`` + 64 hex digits)."""
    return OrderId(bytes32_from_hex("order_id", value))


def hash32_from_hex(field: str, value: str | None) -> Hash32:
    return Hash32(bytes32_from_hex(field, value))


_HEX_ADDRESS: Final = re.compile(r"(?:0[xX])?[0-9a-fA-F]{40}")


def checksum_address(value: str) -> ChecksumAddress | None:
    """``value`` (20 bytes of hex, ``0x`` optional, any case) in its EIP-55 form, or None when it is not
    one: ``eth_utils.to_checksum_address`` of what ``eth_utils.is_address`` accepts (a property test
    compares them; neither checks a mixed-case checksum), in one keccak instead of their validation
    layers, which were a tenth of a quote's CPU."""
    if not _HEX_ADDRESS.fullmatch(value):
        return None
    return _checksum(value[-40:].lower())


@functools.lru_cache(maxsize=4096)
def _checksum(lower: str) -> ChecksumAddress:
    """EIP-55 of 40 lower-case hex digits, kept for the last 4,096 addresses (keys of 40 characters only,
    whatever the caller was sent): the oracle rebuilds every order from its event and from its row,
    three addresses each, and merchants, tokens and returning buyers repeat; 29 -> 4 µs per order built."""
    digest = keccak_256(lower.encode()).hex()[:40]
    return ChecksumAddress(
        HexAddress(
            HexStr(
                "0x"
                + "".join(c.upper() if d in "89abcdef" else c for c, d in zip(lower, digest, strict=True))
            )
        )
    )


def _address(field: str, value: str) -> ChecksumAddress:
    checksummed = checksum_address(value) if isinstance(value, str) else None
    if checksummed is None:
        raise ProtocolError(field, f"must be a 20-byte hex address, got {value!r}")
    return checksummed


def _uint(field: str, value: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ProtocolError(field, f"must be an integer in [0, {maximum}], got {value!r}")
    return value


def _uint_word(value: int) -> bytes:
    """The ABI word of an unsigned integer already checked to fit its type."""
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    """The ABI word of a ``0x`` + 40 hex digits address already validated (left-padded to 32 bytes)."""
    return b"\x00" * 12 + bytes.fromhex(address[2:])


@dataclasses.dataclass(frozen=True, slots=True)
class EscrowDomain:
    """The EIP-712 domain: binds every signature to one chain and one escrow contract."""

    chain_id: int
    verifying_contract: str

    def __post_init__(self) -> None:
        _uint("chain_id", self.chain_id, _UINT256_MAX)
        object.__setattr__(
            self, "verifying_contract", _address("verifying_contract", self.verifying_contract)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Order:
    """One order exactly as quoted. Values are validated on construction; errors name the field."""

    order_id: bytes
    buyer: str
    merchant: str
    token: str
    amount: int
    fee_bps: int
    quote_expiry: int
    fulfilment_deadline: int
    sku_hash: bytes
    account_commitment: bytes

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "order_id", _bytes32("order_id", self.order_id))
        set_(self, "buyer", _address("buyer", self.buyer))
        set_(self, "merchant", _address("merchant", self.merchant))
        set_(self, "token", _address("token", self.token))
        _uint("amount", self.amount, MAX_AMOUNT)
        if self.amount == 0:
            raise ProtocolError("amount", "must be positive")
        _uint("fee_bps", self.fee_bps, MAX_BPS)
        _uint("quote_expiry", self.quote_expiry, _UINT48_MAX)
        _uint("fulfilment_deadline", self.fulfilment_deadline, _UINT48_MAX)
        if self.fulfilment_deadline <= self.quote_expiry:
            # pay() requires block.timestamp <= quoteExpiry < fulfilmentDeadline
            raise ProtocolError("fulfilment_deadline", "must be after quote_expiry")
        set_(self, "sku_hash", _bytes32("sku_hash", self.sku_hash))
        set_(self, "account_commitment", _bytes32("account_commitment", self.account_commitment))

    @property
    def is_native(self) -> bool:
        return self.token == NATIVE_TOKEN

    @property
    def fee(self) -> Wei:
        """Platform fee, rounded down exactly as the contract does."""
        return Wei(self.amount * self.fee_bps // MAX_BPS)

    @property
    def merchant_amount(self) -> Wei:
        return Wei(self.amount - self.fee)

    def as_tuple(self) -> tuple[Any, ...]:
        """The order as the contract's ``Order`` struct argument."""
        return (
            self.order_id,
            self.buyer,
            self.merchant,
            self.token,
            self.amount,
            self.fee_bps,
            self.quote_expiry,
            self.fulfilment_deadline,
            self.sku_hash,
            self.account_commitment,
        )

    @property
    def details_hash(self) -> bytes:
        """keccak256(abi.encode(buyer, quoteExpiry, skuHash, accountCommitment)).

        The part of the order that settlement omits.
        """
        return keccak(
            _address_word(self.buyer)
            + _uint_word(self.quote_expiry)
            + self.sku_hash
            + self.account_commitment
        )

    def as_ref_tuple(self) -> tuple[Any, ...]:
        """The order as the contract's ``OrderRef`` struct argument (what ``settle``/``settleBatch`` take)."""
        return (
            self.order_id,
            self.merchant,
            self.token,
            self.amount,
            self.fee_bps,
            self.fulfilment_deadline,
            self.details_hash,
        )

    @property
    def digest(self) -> bytes:
        """The 31 bytes the escrow stores for this order: keccak256(abi.encode(OrderRef))[:31], the ABI
        encoding written word by word (every field is static and validated on construction; the tests
        compare it with ``eth_abi`` and with the contract's ``orderDigest``)."""
        return keccak(
            self.order_id
            + _address_word(self.merchant)
            + _address_word(self.token)
            + _uint_word(self.amount)
            + _uint_word(self.fee_bps)
            + _uint_word(self.fulfilment_deadline)
            + self.details_hash
        )[:31]

    def as_message(self) -> dict[str, Any]:
        """The order as an EIP-712 message (camelCase field names)."""
        return dict(zip((f["name"] for f in _ORDER_FIELDS), self.as_tuple(), strict=True))

    @classmethod
    def from_event(cls, args: Mapping[str, Any]) -> Order:
        """Rebuild an order from decoded ``OrderPaid`` event arguments."""
        return cls(
            order_id=bytes(args["orderId"]),
            buyer=args["buyer"],
            merchant=args["merchant"],
            token=args["token"],
            amount=args["amount"],
            fee_bps=args["feeBps"],
            quote_expiry=args["quoteExpiry"],
            fulfilment_deadline=args["fulfilmentDeadline"],
            sku_hash=bytes(args["skuHash"]),
            account_commitment=bytes(args["accountCommitment"]),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Fulfilment:
    """The oracle's statement that an order's top-up happened."""

    order_id: bytes
    receipt_hash: bytes
    fulfilled_at: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "order_id", _bytes32("order_id", self.order_id))
        object.__setattr__(self, "receipt_hash", _bytes32("receipt_hash", self.receipt_hash))
        _uint("fulfilled_at", self.fulfilled_at, _UINT48_MAX)

    def as_tuple(self) -> tuple[bytes, int]:
        """The contract's ``Fulfilment`` calldata struct (the order id travels in the order)."""
        return (self.receipt_hash, self.fulfilled_at)

    def as_message(self) -> dict[str, Any]:
        return {"orderId": self.order_id, "receiptHash": self.receipt_hash, "fulfilledAt": self.fulfilled_at}


EIP712_DOMAIN_FIELDS: Final = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def quote_types() -> dict[str, list[dict[str, str]]]:
    """The EIP-712 ``types`` of a quote, as wallets take them (``eth_signTypedData_v4``, viem, ethers)."""
    return {
        "EIP712Domain": [dict(f) for f in EIP712_DOMAIN_FIELDS],
        "Order": [dict(f) for f in _ORDER_FIELDS],
    }


def permit_typed_data(
    *,
    token_name: str,
    token: str,
    chain_id: int,
    owner: str,
    spender: str,
    value: int,
    nonce: int,
    deadline: int,
) -> SignableMessage:
    """An EIP-2612 ``Permit`` for a token whose EIP-712 domain is (name, version "1", chainId, token), as
    OpenZeppelin's ERC20Permit has: what a buyer signs to pay with ``payWithPermit`` in one transaction."""
    return encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": EIP712_DOMAIN_FIELDS,
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ],
            },
            "primaryType": "Permit",
            "domain": {"name": token_name, "version": "1", "chainId": chain_id, "verifyingContract": token},
            "message": {
                "owner": owner,
                "spender": spender,
                "value": value,
                "nonce": nonce,
                "deadline": deadline,
            },
        }
    )


def _typed(
    domain: EscrowDomain, primary: str, types: dict[str, list[dict[str, str]]], message: dict[str, Any]
) -> SignableMessage:
    return encode_typed_data(
        full_message={
            "types": {"EIP712Domain": EIP712_DOMAIN_FIELDS, **types},
            "primaryType": primary,
            "domain": domain.as_dict(),
            "message": message,
        }
    )


def quote_typed_data(domain: EscrowDomain, order: Order) -> SignableMessage:
    """What a quote signer signs: the whole order."""
    return _typed(domain, "Order", {"Order": _ORDER_FIELDS}, order.as_message())


def fulfilment_typed_data(domain: EscrowDomain, fulfilment: Fulfilment) -> SignableMessage:
    """What an oracle signer signs to settle one order."""
    return _typed(domain, "Fulfilment", {"Fulfilment": _FULFILMENT_FIELDS}, fulfilment.as_message())


def batch_typed_data(domain: EscrowDomain, fulfilments: Sequence[Fulfilment]) -> SignableMessage:
    """What an oracle signer signs to settle many orders at once (same order as the calldata arrays)."""
    if not fulfilments:
        raise ProtocolError("fulfilments", "a batch needs at least one fulfilment")
    return _typed(
        domain,
        "FulfilmentBatch",
        {
            "FulfilmentBatch": [{"name": "fulfilments", "type": "Fulfilment[]"}],
            "Fulfilment": _FULFILMENT_FIELDS,
        },
        {"fulfilments": [f.as_message() for f in fulfilments]},
    )


def refund_typed_data(domain: EscrowDomain, order_id: bytes, reason_code: int) -> SignableMessage:
    """What an oracle signer signs to refund a failed order."""
    message = {
        "orderId": _bytes32("order_id", order_id),
        "reasonCode": _uint("reason_code", reason_code, _UINT16_MAX),
    }
    return _typed(domain, "Refund", {"Refund": _REFUND_FIELDS}, message)


def _digest(message: SignableMessage) -> bytes:
    return keccak(b"\x19" + message.version + message.header + message.body)


def quote_digest(domain: EscrowDomain, order: Order) -> bytes:
    """The EIP-712 digest of :func:`quote_typed_data`, computed directly: the domain separator once per
    domain, the struct hash as ``keccak(typeHash || abi.encode(fields))`` (every field is a static type,
    so EIP-712's encodeData is the ABI encoding). A quote is signed on every request; the generic
    typed-data encoder parsed the types and walked the message each time. The tests check both against
    the contract's ``quoteDigest``."""
    return keccak(b"\x19\x01" + domain_separator(domain) + order_struct_hash(order))


def _type_string(name: str, fields: Sequence[Mapping[str, str]]) -> str:
    return name + "(" + ",".join(f"{f['type']} {f['name']}" for f in fields) + ")"


_ORDER_TYPEHASH: Final = keccak(text=_type_string("Order", _ORDER_FIELDS))


@functools.lru_cache(maxsize=64)
def domain_separator(domain: EscrowDomain) -> bytes:
    """EIP-712 ``hashStruct(domain)``, the contract's ``_domainSeparatorV4()``."""
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                keccak(text=_type_string("EIP712Domain", EIP712_DOMAIN_FIELDS)),
                keccak(text=DOMAIN_NAME),
                keccak(text=DOMAIN_VERSION),
                domain.chain_id,
                domain.verifying_contract,
            ],
        )
    )


# The proofs' digests are computed as the quote's is (:func:`quote_digest`): type hashes once, each struct
# hash as keccak(typeHash || its fields' ABI words). eth_account's encoder parsed the types and walked the
# message on every call (0.12 ms per fulfilment, 1.2 ms per batch of 50). The ``*_typed_data`` functions
# stay: wallets, co-signers and recovery take the typed data, and the tests check every digest here
# against eth_account's of the same typed data and against the contract's.
_FULFILMENT_TYPE: Final = _type_string("Fulfilment", _FULFILMENT_FIELDS)
_FULFILMENT_TYPEHASH: Final = keccak(text=_FULFILMENT_TYPE)
_BATCH_TYPEHASH: Final = keccak(text="FulfilmentBatch(Fulfilment[] fulfilments)" + _FULFILMENT_TYPE)
_REFUND_TYPEHASH: Final = keccak(text=_type_string("Refund", _REFUND_FIELDS))


def _fulfilment_struct_hash(fulfilment: Fulfilment) -> bytes:
    return keccak(
        _FULFILMENT_TYPEHASH
        + fulfilment.order_id
        + fulfilment.receipt_hash
        + _uint_word(fulfilment.fulfilled_at)
    )


def fulfilment_digest(domain: EscrowDomain, fulfilment: Fulfilment) -> bytes:
    """The EIP-712 digest of :func:`fulfilment_typed_data`."""
    return keccak(b"\x19\x01" + domain_separator(domain) + _fulfilment_struct_hash(fulfilment))


def batch_digest(domain: EscrowDomain, fulfilments: Sequence[Fulfilment]) -> bytes:
    """The EIP-712 digest of :func:`batch_typed_data` (an array member is the keccak of its elements'
    struct hashes, concatenated)."""
    if not fulfilments:
        raise ProtocolError("fulfilments", "a batch needs at least one fulfilment")
    members = keccak(b"".join(_fulfilment_struct_hash(f) for f in fulfilments))
    return keccak(b"\x19\x01" + domain_separator(domain) + keccak(_BATCH_TYPEHASH + members))


def refund_digest(domain: EscrowDomain, order_id: bytes, reason_code: int) -> bytes:
    """The EIP-712 digest of :func:`refund_typed_data`."""
    order_id = _bytes32("order_id", order_id)
    _uint("reason_code", reason_code, _UINT16_MAX)
    return keccak(
        b"\x19\x01" + domain_separator(domain) + keccak(_REFUND_TYPEHASH + order_id + _uint_word(reason_code))
    )


def order_struct_hash(order: Order) -> bytes:
    """EIP-712 ``hashStruct(order)``; its first 31 bytes are what the escrow stores per order."""
    return keccak(
        _ORDER_TYPEHASH
        + order.order_id
        + _address_word(order.buyer)
        + _address_word(order.merchant)
        + _address_word(order.token)
        + _uint_word(order.amount)
        + _uint_word(order.fee_bps)
        + _uint_word(order.quote_expiry)
        + _uint_word(order.fulfilment_deadline)
        + order.sku_hash
        + order.account_commitment
    )


def sign(private_key: bytes | str, message: SignableMessage) -> bytes:
    """A 65-byte ``r || s || v`` signature, the layout the contract expects."""
    return bytes(Account.sign_message(message, private_key).signature)


def sign_digest(private_key: bytes | str, digest: bytes) -> bytes:
    """:func:`sign` of a digest already computed (:func:`quote_digest`): the same 65 bytes (RFC 6979
    nonces, low ``s``, ``v`` 27 or 28), straight from libsecp256k1 through coincurve, which is also the
    backend eth_keys signs with here; eth_account's wrapping cost more than the signature itself."""
    if len(digest) != 32:
        raise ProtocolError("digest", f"must be 32 bytes, got {len(digest)}")
    secret = bytes.fromhex(private_key.removeprefix("0x")) if isinstance(private_key, str) else private_key
    raw = coincurve.PrivateKey(bytes(secret)).sign_recoverable(digest, hasher=None)
    return raw[:64] + bytes([raw[64] + 27])


def recover_signer(message: SignableMessage, signature: bytes) -> ChecksumAddress:
    """The EOA that produced ``signature`` (contract signers must be checked with EIP-1271 instead)."""
    return to_checksum_address(Account.recover_message(message, signature=signature))


def receipt_hash(receipt: Mapping[str, Any]) -> bytes:
    """keccak256 of the RFC 8785 canonical JSON of a provider receipt.

    Floats are refused: amounts in a receipt are integers (or decimal strings) so that every verifier
    canonicalises them identically.
    """

    def check(value: Any, path: str) -> None:
        if isinstance(value, float):
            raise ProtocolError(path, "floats are not allowed in receipts; use integers or strings")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53 - 1:
            # RFC 8785 serialises numbers as IEEE doubles; larger integers must travel as strings.
            raise ProtocolError(path, "integers beyond 2**53 - 1 must be encoded as decimal strings")
        if isinstance(value, Mapping):
            for key, item in value.items():
                check(item, f"{path}.{key}")
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                check(item, f"{path}[{index}]")

    check(receipt, "receipt")
    return keccak(rfc8785.dumps(receipt))


def account_commitment(account: str, salt: bytes) -> bytes:
    """``keccak256(utf8(account) || salt)``: hides the game account on chain; the buyer gets the salt."""
    if not account:
        raise ProtocolError("account", "must not be empty")
    return keccak(account.encode("utf-8") + _bytes32("salt", salt))
