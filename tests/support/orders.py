"""Order rows for the tests that work on the ledger directly (no chain, no gateway).

``order_row(**overrides)`` builds a complete, valid ``cardless.ledger.Order`` with a fresh random id and
placeholder values for everything a test does not name; ``add_order`` also stages it in a session.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy.orm import Session

from cardless.ledger import Order, OrderState

__all__ = ["add_order", "new_order_id", "order_row"]


def new_order_id() -> str:
    return "0x" + os.urandom(32).hex()


def order_row(*, state: OrderState = OrderState.QUOTED, **overrides: Any) -> Order:
    """A ledger order row in ``state``; any column can be overridden by name."""
    values: dict[str, Any] = {
        "id": new_order_id(),
        "state": state.value,
        "chain_id": 31337,
        "escrow": "0x" + "11" * 20,
        "sku": "genshin-60",
        "providers": ["sim"],
        "buyer": "0x" + "22" * 20,
        "merchant": "0x" + "33" * 20,
        "token": "0x" + "00" * 20,
        "amount": 10**15,
        "fee_bps": 250,
        "quote_expiry": 1_000,
        "fulfilment_deadline": 5_000,
        "sku_hash": "0x" + "44" * 32,
        "account_commitment": "0x" + "55" * 32,
        "account_ciphertext": b"\x00" * 16,
        "quote_signer": "0x" + "77" * 20,
        "quote_signature": "0x" + "88" * 65,
    }
    values.update(overrides)
    return Order(**values)


def add_order(session: Session, *, state: OrderState = OrderState.QUOTED, **overrides: Any) -> Order:
    """``order_row`` added to ``session`` and flushed (the caller commits)."""
    order = order_row(state=state, **overrides)
    session.add(order)
    session.flush()
    return order
