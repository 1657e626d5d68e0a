"""Chain events -> ledger: ``OrderPaid`` opens an order's fulfilment, ``OrderSettled``,
``OrderRefunded`` and ``OrderReclaimed`` close it; ``Withdrawn`` for a merchant is a payout (recorded
with its ``payout.sent`` webhook event, in the same transaction).

:func:`apply_event` is the watcher's handler; it runs inside the watcher's transaction for the block
range, so an event and the cursor move commit together. The chain is the truth: a closing event is
recorded whatever the ledger thought, and it clears any work lease (nothing is left to do).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from web3 import Web3

from cardless import protocol
from cardless.ledger.logcontext import order_scope
from cardless.ledger.models import Order, OrderState
from cardless.ledger.outbox import Payout, record_event
from cardless.ledger.store import order_from_row
from cardless.ledger.transitions import transition

__all__ = ["BlockTime", "apply_event"]

log = logging.getLogger(__name__)
S = OrderState

BlockTime = Callable[[int], int]
"""Block number -> its timestamp (unix seconds); only ``OrderPaid`` asks for it."""

_CLOSING = {"OrderSettled": S.SETTLED, "OrderRefunded": S.REFUNDED, "OrderReclaimed": S.RECLAIMED}


def apply_event(
    session: Session, name: str, args: dict[str, Any], meta: dict[str, Any], *, block_time: BlockTime
) -> None:
    """Apply one escrow event to the order it names (see the module docstring)."""
    order_id = Web3.to_hex(args["orderId"]) if "orderId" in args else None
    with order_scope(order_id):
        _apply(session, name, args, meta, block_time)


def _apply(
    session: Session, name: str, args: dict[str, Any], meta: dict[str, Any], block_time: BlockTime
) -> None:
    if name == "Withdrawn":
        _on_withdrawn(session, args, meta, block_time)
        return
    if "orderId" not in args:
        return
    order_id = Web3.to_hex(args["orderId"])
    row = session.get(Order, order_id)
    if name == "OrderPaid":
        _on_paid(session, row, order_id, args, meta, block_time)
        return
    if row is None:
        log.warning("%s for unknown order %s (tx %s)", name, order_id, meta["tx_hash"])
        return
    closing = _CLOSING.get(name)
    if closing is None or row.state == closing.value:
        return
    if row.state in (S.QUOTED.value, S.EXPIRED.value):
        # The chain closed an order whose payment was never applied here (e.g. its OrderPaid did not
        # match the quote on record and the buyer reclaimed it). The chain is the truth: record the
        # payment first, so the closing move is a legal one and the watcher never stalls on it.
        transition(session, row, S.PAID, f"paid on chain (closed by {name} before the payment was applied)")
    fields: dict[str, Any] = {"lease_owner": None, "lease_until": None}
    if closing is S.SETTLED:
        fields["settle_tx"] = meta["tx_hash"]
    elif closing is S.REFUNDED:
        fields["refund_tx"] = meta["tx_hash"]
    transition(session, row, closing, f"{name} in block {meta['block_number']}", detail=meta, **fields)


def _on_paid(
    session: Session,
    row: Order | None,
    order_id: str,
    args: dict[str, Any],
    meta: dict[str, Any],
    block_time: BlockTime,
) -> None:
    if row is None:
        log.error(
            "OrderPaid for an order this gateway has no record of: %s (tx %s)", order_id, meta["tx_hash"]
        )
        return  # the buyer can reclaim after the deadline; an operator is alerted by the log
    if row.state not in (S.QUOTED.value, S.EXPIRED.value):
        return  # already applied (re-scan after a crash)
    paid = protocol.Order.from_event(args)
    quoted = order_from_row(row)
    # Equal orders have equal digests (a digest is a function of the fields): only unequal ones are hashed,
    # so the check is the digest's, as before, without four keccaks per payment.
    if paid != quoted and paid.digest != quoted.digest:
        log.error("OrderPaid %s does not match the quote on record", order_id)
        return
    transition(
        session,
        row,
        S.PAID,
        f"OrderPaid in block {meta['block_number']}",
        detail=meta,
        paid_tx=meta["tx_hash"],
        paid_block=meta["block_number"],
        paid_at=datetime.fromtimestamp(block_time(meta["block_number"]), UTC),
    )


def _on_withdrawn(
    session: Session, args: dict[str, Any], meta: dict[str, Any], block_time: BlockTime
) -> None:
    """A merchant's balance paid out (by the sweep or by anyone calling the permissionless ``withdraw``).
    Withdrawals of accounts that are not merchants here (a buyer's deferred refund) are not payouts."""
    account = Web3.to_checksum_address(args["account"])
    if session.scalar(select(Order.id).where(Order.merchant == account).limit(1)) is None:
        return
    existing = session.scalar(
        select(Payout).where(Payout.tx_hash == meta["tx_hash"], Payout.log_index == meta["log_index"])
    )
    if existing is not None:  # the same log again after a reorg put it in another block
        existing.block_number = meta["block_number"]
        return
    payout = Payout(
        merchant=account,
        token=Web3.to_checksum_address(args["token"]),
        to_address=Web3.to_checksum_address(args["to"]),
        amount=int(args["amount"]),
        tx_hash=meta["tx_hash"],
        log_index=meta["log_index"],
        block_number=meta["block_number"],
        block_time=block_time(meta["block_number"]),
    )
    session.add(payout)
    record_event(
        session,
        merchant=account,
        type="payout.sent",
        data={
            "payout": {
                "merchant": payout.merchant,
                "token": payout.token,
                "to": payout.to_address,
                "amount": str(payout.amount),
                "tx_hash": payout.tx_hash,
                "block_number": payout.block_number,
                "block_time": payout.block_time,
            }
        },
    )
