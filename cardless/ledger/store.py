"""The order store: the one place an order row and a protocol order are converted into each other.

The gateway writes a quoted order with :func:`new_order_row`; the oracle reads it back with
:func:`order_from_row` to pay, settle or refund it. Both directions live here so a field added to the
order is mapped once.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils import to_hex

from cardless import protocol
from cardless.ledger.models import Order, OrderEvent, OrderState

__all__ = ["new_order_row", "order_from_row"]


def order_from_row(row: Order) -> protocol.Order:
    """The order exactly as the quote signed it (and as ``OrderPaid`` carries it)."""
    return protocol.Order(
        order_id=protocol.order_id_from_hex(row.id),
        buyer=row.buyer,
        merchant=row.merchant,
        token=row.token,
        amount=row.amount,
        fee_bps=row.fee_bps,
        quote_expiry=row.quote_expiry,
        fulfilment_deadline=row.fulfilment_deadline,
        sku_hash=protocol.hash32_from_hex("sku_hash", row.sku_hash),
        account_commitment=protocol.hash32_from_hex("account_commitment", row.account_commitment),
    )


def new_order_row(
    order: protocol.Order,
    *,
    domain: protocol.EscrowDomain,
    sku: str,
    providers: Sequence[str],
    account_ciphertext: bytes,
    account_salt: bytes,
    quote_signer: str,
    quote_signature: bytes,
    reason: str,
) -> Order:
    """A freshly quoted order with the first entry of its timeline; the caller adds it to a session."""
    order_id = to_hex(order.order_id)
    row = Order(
        id=order_id,
        state=OrderState.QUOTED.value,
        chain_id=domain.chain_id,
        escrow=domain.verifying_contract,
        sku=sku,
        providers=list(providers),
        provider_index=0,
        buyer=order.buyer,
        merchant=order.merchant,
        token=order.token,
        amount=order.amount,
        fee_bps=order.fee_bps,
        quote_expiry=order.quote_expiry,
        fulfilment_deadline=order.fulfilment_deadline,
        sku_hash=to_hex(order.sku_hash),
        account_commitment=to_hex(order.account_commitment),
        account_ciphertext=account_ciphertext,
        account_salt=to_hex(account_salt),
        quote_signer=quote_signer,
        quote_signature=to_hex(quote_signature),
    )
    row.events.append(OrderEvent(from_state=None, to_state=OrderState.QUOTED.value, reason=reason))
    return row
