"""Merchants: created and disabled by the operator; the payout address set by the merchant's own wallet.

A merchant is the account the escrow credits (``address``) and a fee within the escrow's cap. The fee
cap is the escrow's (``feeCapBps``), read when the fee is set: a fee above it would make every order of
the merchant revert ``FeeAboveCap`` after the buyer had signed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from eth_utils import to_checksum_address
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from web3 import Web3

from cardless.ledger.models import Merchant, utcnow
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import Deployment
from gateway.merchant_schemas import (
    MerchantAccountOut,
    MerchantCreate,
    PayoutTransactionOut,
)
from gateway.services._exceptions import Conflict, InvalidField, NotFound, ServiceUnavailable

__all__ = [
    "create_merchant",
    "disable_merchant",
    "fee_cap",
    "get_merchant",
    "list_merchants",
    "merchant_out",
    "prepare_payout_address",
]

_ZERO = "0x" + "00" * 20


def fee_cap(w3: Web3, deployment: Deployment) -> int:
    """The escrow's fee cap in basis points, read from the chain."""
    escrow = w3.eth.contract(address=deployment.escrow, abi=load_artifact("CardlessEscrow").abi)
    try:
        return int(escrow.functions.feeCapBps().call())
    except Exception as exc:  # any transport or node error: the cap is unknown, so refuse for now
        raise ServiceUnavailable(f"cannot read the escrow's fee cap: {type(exc).__name__}") from exc


def merchant_out(row: Merchant) -> MerchantAccountOut:
    return MerchantAccountOut(
        id=row.id,
        name=row.name,
        address=row.address,
        fee_bps=row.fee_bps,
        payout_address=row.payout_address,
        status="disabled" if row.disabled_at is not None else "active",
        disabled_reason=row.disabled_reason,
        created_at=_utc(row.created_at),
    )


def create_merchant(session: Session, body: MerchantCreate, *, cap_bps: int) -> MerchantAccountOut:
    """Add a merchant. 409 when the id or the address is taken (two merchants on one account would share
    one balance on chain); 422 on ``fee_bps`` above the escrow's cap."""
    if body.fee_bps > cap_bps:
        raise InvalidField("fee_bps", f"{body.fee_bps} is above the escrow's fee cap of {cap_bps} bps")
    address = to_checksum_address(body.address)
    if address == to_checksum_address(_ZERO):
        raise InvalidField("address", "the zero address cannot receive settlements")
    if session.get(Merchant, body.id) is not None:
        raise Conflict(f"merchant {body.id!r} exists", field="id")
    if session.scalar(select(Merchant).where(Merchant.address == address)) is not None:
        raise Conflict("another merchant settles to this address", field="address")
    row = Merchant(id=body.id, name=body.name, address=address, fee_bps=body.fee_bps)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # a concurrent create of the same id or address
        session.rollback()
        raise Conflict(f"merchant {body.id!r} or its address exists", field="id") from None
    return merchant_out(row)


def list_merchants(session: Session) -> list[MerchantAccountOut]:
    return [merchant_out(m) for m in session.scalars(select(Merchant).order_by(Merchant.id))]


def _merchant(session: Session, merchant_id: str) -> Merchant:
    row = session.get(Merchant, merchant_id)
    if row is None:
        raise NotFound("merchant_id", f"merchant {merchant_id!r} not found")
    return row


def get_merchant(session: Session, merchant_id: str) -> MerchantAccountOut:
    return merchant_out(_merchant(session, merchant_id))


def disable_merchant(session: Session, merchant_id: str, reason: str) -> MerchantAccountOut:
    """Disable a merchant: its SKUs leave the catalogue and take no quote, its API keys stop working.
    Paid orders still settle (the escrow holds their terms). Disabling twice keeps the first time."""
    row = _merchant(session, merchant_id)
    if row.disabled_at is None:
        row.disabled_at = utcnow()
        row.disabled_reason = reason
        session.commit()
    return merchant_out(row)


def prepare_payout_address(
    session: Session, w3: Web3, deployment: Deployment, merchant_id: str, payout: str
) -> PayoutTransactionOut:
    """The ``setPayoutAddress`` transaction the merchant's wallet signs; recorded, never sent."""
    row = _merchant(session, merchant_id)
    payout = to_checksum_address(payout)
    if payout == deployment.escrow:
        raise InvalidField("payout_address", "the escrow cannot be a payout address")
    if payout == to_checksum_address(_ZERO):
        raise InvalidField("payout_address", "the zero address would reset payouts to the merchant account")
    escrow = w3.eth.contract(address=deployment.escrow, abi=load_artifact("CardlessEscrow").abi)
    try:
        current = escrow.functions.payoutAddressOf(row.address).call()
    except Exception as exc:
        raise ServiceUnavailable(f"cannot read the payout address on chain: {type(exc).__name__}") from exc
    data = escrow.encode_abi("setPayoutAddress", [payout])
    row.payout_address = payout
    session.commit()
    return PayoutTransactionOut.model_validate(
        {
            "chain_id": deployment.chain_id,
            "from": row.address,
            "to": deployment.escrow,
            "value": "0",
            "data": data,
            "current_payout_address": to_checksum_address(current),
        }
    )


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
