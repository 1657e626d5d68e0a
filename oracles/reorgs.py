"""What the ledger does when a chain reorganisation takes away logs the watcher had already applied.

The watcher applies a log only once it is ``confirmations`` deep, so a reorganisation that drops an
applied log went deeper than the confirmation depth: the depth was wrong for this chain, or the chain
misbehaved. That is always an alarm (``cardless_chain_reorgs_total`` and an error in the log) and a
``chain_reorgs`` row with the evidence. Then, for each dropped log (:func:`undo_dropped_logs`, called
by the watcher inside its roll-back transaction):

================  ===========================================  =========================================
dropped event     order state                                  what happens
================  ===========================================  =========================================
``OrderPaid``     ``paid``, ``risk_checked`` (no provider       back to ``quoted``: nothing was topped up;
                  called yet)                                   if the payment is mined again, the
                                                                re-read applies it again
``OrderPaid``     any later state (a top-up may have            marked for an operator
                  happened, or the order is closed)             (``payment_reorged_out``), state kept
``OrderSettled``  ``settled``                                   our settlement transaction is re-sent
``OrderRefunded`` ``refunded``                                  (same signed bytes, so the same nonce and
                                                                hash) and the order marked
                                                                (``settlement_reorged_out`` /
                                                                ``refund_reorged_out``)
``OrderReclaimed``                                              marked (``reclaim_reorged_out``): the
                                                                buyer's transaction is not ours to re-send
================  ===========================================  =========================================

A mark is never cleared automatically: an operator reads ``review_detail`` (the dropped log, the block
hash it had and the one now canonical at that height, the depth, the confirmation depth, the order's
state) and decides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cardless.ledger.models import ChainReorg, ChainTx, ChainTxState, Order, OrderState, SeenLog, utcnow
from cardless.ledger.transitions import transition
from oracles import metrics

__all__ = ["CanonicalHash", "undo_dropped_logs"]

log = logging.getLogger(__name__)
S = OrderState

CanonicalHash = Callable[[int], "str | None"]
"""Block number -> the hash of the canonical block there now (None above the head)."""

_NOT_TOPPED_UP = (S.PAID.value, S.RISK_CHECKED.value)
_CLOSING_REASON = {
    "OrderSettled": "settlement_reorged_out",
    "OrderRefunded": "refund_reorged_out",
    "OrderReclaimed": "reclaim_reorged_out",
}


def undo_dropped_logs(
    session: Session,
    dropped: Sequence[SeenLog],
    *,
    cursor_name: str,
    old_cursor: tuple[int, str],
    ancestor: int,
    confirmations: int,
    canonical_hash: CanonicalHash,
) -> ChainReorg:
    """Record the reorg and undo or mark what ``dropped`` (applied logs no longer canonical) did."""
    depth = old_cursor[0] - ancestor
    detected = utcnow()
    evidence_base: dict[str, Any] = {
        "detected_at": detected.isoformat(),
        "old_cursor_block": old_cursor[0],
        "old_cursor_hash": old_cursor[1],
        "ancestor_block": ancestor,
        "depth": depth,
        "confirmations": confirmations,
    }
    logs: list[dict[str, Any]] = []
    touched: list[str] = []
    for seen in sorted(dropped, key=lambda s: (s.block_number, s.log_index)):
        entry = {
            "event": seen.event,
            "order_id": seen.order_id,
            "tx_hash": seen.tx_hash,
            "log_index": seen.log_index,
            "block_number": seen.block_number,
            "block_hash": seen.block_hash,
            "canonical_hash": canonical_hash(seen.block_number),
        }
        logs.append(entry)
        row = session.get(Order, seen.order_id) if seen.order_id else None
        if row is None:
            continue
        touched.append(row.id)
        evidence = {**evidence_base, "dropped_log": entry, "state": row.state}
        if seen.event == "OrderPaid":
            _payment_dropped(session, row, seen, evidence)
        elif seen.event in _CLOSING_REASON:
            _closing_dropped(session, row, seen, evidence)
    record = ChainReorg(
        cursor_name=cursor_name,
        detected_at=detected,
        old_block=old_cursor[0],
        old_hash=old_cursor[1],
        ancestor_block=ancestor,
        depth=depth,
        confirmations=confirmations,
        dropped_logs=logs,
        order_ids=list(dict.fromkeys(touched)),
    )
    session.add(record)
    metrics.REORGS.inc()
    metrics.REORG_DEPTH.set(depth)
    log.error(
        "ALARM: reorg deeper than the confirmation depth (%d): blocks after %d replaced (cursor was %d %s); "
        "%d applied logs dropped, orders %s",
        confirmations,
        ancestor,
        old_cursor[0],
        old_cursor[1],
        len(logs),
        ", ".join(record.order_ids) or "none",
    )
    return record


def _payment_dropped(session: Session, row: Order, seen: SeenLog, evidence: dict[str, Any]) -> None:
    if row.paid_tx not in (None, seen.tx_hash):
        return  # the ledger's payment is another transaction (not this log's): nothing to undo
    if row.state in _NOT_TOPPED_UP:
        transition(
            session,
            row,
            S.QUOTED,
            f"payment reorganised out of block {seen.block_number} before any provider was called",
            detail=evidence,
            paid_tx=None,
            paid_block=None,
            paid_at=None,
            lease_owner=None,
            lease_until=None,
        )
        log.warning(
            "order %s: payment %s reorganised out before its top-up; back to quoted", row.id, seen.tx_hash
        )
        return
    if row.state in (S.QUOTED.value, S.EXPIRED.value):
        return
    _mark(row, "payment_reorged_out", evidence)


def _closing_dropped(session: Session, row: Order, seen: SeenLog, evidence: dict[str, Any]) -> None:
    ours = session.execute(select(ChainTx).where(ChainTx.tx_hash == seen.tx_hash)).scalar_one_or_none()
    if ours is not None:
        if ours.state in (ChainTxState.CONFIRMED.value, ChainTxState.REVERTED.value):
            # Pending again for the transaction manager: no receipt, unknown to the node -> re-broadcast
            # (one reopening serves every order of a batch).
            ours.state = ChainTxState.SENT.value
            ours.sent_at = utcnow()
            ours.confirmed_block = None
            ours.error = f"reorganised out of block {seen.block_number}: re-sent"
        evidence = {**evidence, "resent_tx": ours.tx_hash}
    _mark(row, _CLOSING_REASON[seen.event], evidence)


def _mark(row: Order, reason: str, evidence: dict[str, Any]) -> None:
    """Mark ``row`` for an operator. The first mark keeps its reason (logs are undone in chain order, so
    a dropped payment comes before the settlement that followed it); later ones join its evidence."""
    if row.review_reason is not None:
        detail = dict(row.review_detail or {})
        detail["more"] = [*detail.get("more", []), {"reason": reason, **evidence}]
        row.review_detail = detail
    else:
        row.review_reason = reason
        row.review_detail = evidence
        row.review_at = utcnow()
    metrics.REORG_ORDERS.labels(reason).inc()
    log.error("ALARM: order %s marked for an operator: %s (state %s)", row.id, reason, row.state)
