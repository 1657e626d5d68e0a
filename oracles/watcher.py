"""Chain watcher: applies escrow events to the database, exactly once each.

- ``eth_getLogs`` over block ranges up to the confirmed head: ``head - confirmations``, and never past
  the ``safe``/``finalized`` block when the chain profile names that tag (``finality``); a range the
  node refuses as too large (hosted nodes cap blocks or results) is halved until it is accepted;
- a persisted cursor (block number *and* hash); if the block at the cursor no longer has that hash,
  a reorg happened: the cursor rolls back to the newest block whose hash still matches (checked
  against the logs already applied) and the range is scanned again. A cursor above the node's head
  is a reorg only if an applied block the node does have changed; otherwise the node is behind (a
  lagging node behind a load balancer) and the watcher waits rather than re-applying logs;
- a range is used only if its last block has the same hash before and after ``eth_getLogs``, so logs
  of a branch that was reorged away during the call never get a cursor hash of the new branch;
- de-duplication by (tx hash, log index), so a re-scan or a crash between applying and advancing the
  cursor applies nothing twice. A range's logs and the cursor move commit in one transaction;
- a roll-back that drops logs already applied (a reorg deeper than the confirmation depth) is undone
  or marked for an operator by :mod:`oracles.reorgs`, in the roll-back's transaction, and alarmed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from eth_typing import ABIEvent
from eth_utils import event_abi_to_log_topic
from hexbytes import HexBytes
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import BlockNotFound, Web3RPCError

from cardless.ledger.models import ChainCursor, Order, SeenLog
from oracles.failpoints import failpoint
from oracles.rawabi import EventDecoder, get_logs, quantity, rpc_batch
from oracles.reorgs import undo_dropped_logs

__all__ = ["EventHandler", "Watcher"]

log = logging.getLogger(__name__)

EventHandler = Callable[[Session, str, dict[str, Any], dict[str, Any]], None]
"""Called as handler(session, event_name, args, log_meta) inside the range's transaction."""


class Watcher:
    def __init__(
        self,
        w3: Web3,
        escrow: Contract,
        sessions: sessionmaker[Session],
        handler: EventHandler,
        *,
        start_block: int,
        confirmations: int = 0,
        max_range: int = 2_000,
        finality: str = "latest",
        cursor_name: str = "escrow",
        prefetch: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        """``prefetch`` sees each range's logs before they are applied (the worker reads their blocks'
        times in one JSON-RPC batch there)."""
        self.prefetch = prefetch
        self.w3 = w3
        self.escrow = escrow
        self.sessions = sessions
        self.handler = handler
        self.start_block = start_block
        self.confirmations = confirmations
        self.max_range = max_range
        self.finality = finality
        self.cursor_name = cursor_name
        events = [cast(ABIEvent, item) for item in escrow.abi if item.get("type") == "event"]
        self._decoder = EventDecoder(escrow.abi)
        self._events = {
            HexBytes(event_abi_to_log_topic(item)): getattr(escrow.events, item["name"])() for item in events
        }

    def poll(self) -> int:
        """Process everything that is final enough; returns the number of logs applied."""
        applied = 0
        cursor = self._cursor()
        # The head and the cursor block's hash in one raw batch (two round trips before).
        safe, current, latest = self._head_and_hash(cursor[0] if cursor is not None else None)
        if cursor is not None and current != cursor[1]:
            if not self._roll_back(cursor, cursor_block_exists=current is not None):
                return 0
            cursor = self._cursor()
        next_block = (cursor[0] + 1) if cursor else self.start_block
        span = self.max_range
        while next_block <= safe:
            to_block = min(safe, next_block + span - 1)
            # A range ending at the head block read above has its end hash from that read (also before
            # ``eth_getLogs``): one round trip less per busy poll; the hash after the logs is read as ever.
            known_end = latest[1] if latest is not None and latest[0] == to_block else None
            try:
                count = self._apply_range(next_block, to_block, end_hash=known_end)
            except Web3RPCError as exc:
                if span == 1 or not _range_refused(exc):
                    raise
                span = max(1, span // 2)
                log.warning(
                    "the node refused eth_getLogs over %d blocks (%s); trying %d",
                    to_block - next_block + 1,
                    exc,
                    span,
                )
                continue
            if count is None:  # the chain moved under the range: the next poll checks the cursor again
                break
            applied += count
            next_block = to_block + 1
        return applied

    def confirmed_head(self) -> int:
        """The newest block the watcher may apply: ``confirmations`` below the head, and not past the
        ``finality`` tag's block when there is one (a node without the tag: the depth alone, logged)."""
        return self._head_and_hash(None)[0]

    def _head_and_hash(self, number: int | None) -> tuple[int, str | None, tuple[int, str] | None]:
        """``confirmed_head()``, ``_hash_at(number)`` when ``number`` is given, and the head block's
        (number, hash) when the confirmed head is the head itself (no depth, no finality tag), read in one
        batch: at depth 0 the head is read as the latest block, whose hash is the end hash of a range that
        ends there."""
        at_head = self.confirmations == 0 and self.finality == "latest"
        reads: list[tuple[str, list[Any]]] = [
            ("eth_getBlockByNumber", ["latest", False]) if at_head else ("eth_blockNumber", [])
        ]
        if number is not None:
            reads.append(("eth_getBlockByNumber", [hex(number), False]))
        answers = rpc_batch(self.w3, reads)
        latest: tuple[int, str] | None = None
        if at_head:
            block = answers[0]
            if not isinstance(block, dict):
                raise Web3RPCError(f"eth_getBlockByNumber latest answered {block!r}: not a block")
            head = quantity(block.get("number"), "eth_getBlockByNumber number")
            latest_hash = _block_hash(block)
            latest = (head, latest_hash) if latest_hash is not None else None
        else:
            head = quantity(answers[0], "eth_blockNumber")
        block_hash = _block_hash(answers[1]) if number is not None else None
        confirmed = head - self.confirmations
        if self.finality != "latest":
            try:
                tagged = int(self.w3.eth.get_block(self.finality)["number"])  # type: ignore[arg-type]
            except (BlockNotFound, Web3RPCError, ValueError) as exc:
                log.warning(
                    "the node does not answer the %r block (%s); using the depth alone", self.finality, exc
                )
            else:
                confirmed = min(confirmed, tagged)
        return confirmed, block_hash, latest

    def cursor(self) -> tuple[int, str] | None:
        """The last block applied (number, hash); None before the first range."""
        return self._cursor()

    def _cursor(self) -> tuple[int, str] | None:
        with self.sessions() as session:
            row = session.get(ChainCursor, self.cursor_name)
            return None if row is None else (row.block_number, row.block_hash)

    def _hash_at(self, number: int) -> str | None:
        """The hash of canonical block ``number``, or None if the node has no such block (yet). Raw
        JSON-RPC: read three times per poll, and web3's block formatters cost more than the round trip."""
        (block,) = rpc_batch(self.w3, [("eth_getBlockByNumber", [hex(number), False])])
        return _block_hash(block)

    def _roll_back(self, cursor: tuple[int, str], *, cursor_block_exists: bool) -> bool:
        """Move the cursor back to the newest applied log whose block is still canonical.

        Returns False, changing nothing, when the cursor's block is above the node's head and no
        applied block the node has changed: the node is behind, so there is nothing to undo (yet).
        """
        with self.sessions.begin() as session:
            if not self._cursor_at(session, cursor[0]):
                return True  # another worker moved the cursor meanwhile: the caller reads it again
            seen = session.execute(
                select(SeenLog.block_number, SeenLog.block_hash)
                .distinct()
                .where(SeenLog.block_number <= cursor[0])
                .order_by(SeenLog.block_number.desc())
            ).all()
            ancestor = self.start_block - 1
            forked = cursor_block_exists
            for number, block_hash in seen:
                current = self._hash_at(number)
                if current is None:  # above the node's head: neither proof of a fork nor of the branch
                    continue
                if current == block_hash:
                    ancestor = number
                    break
                forked = True
            if not forked:
                log.warning("cursor %d is above the node's head; waiting for the node to catch up", cursor[0])
                return False
            log.warning("reorg: cursor %d no longer canonical; rolling back to %d", cursor[0], ancestor)
            dropped = list(session.execute(select(SeenLog).where(SeenLog.block_number > ancestor)).scalars())
            # The cursor's block was ``confirmations`` deep when written: replacing it went deeper than that.
            undo_dropped_logs(
                session,
                dropped,
                cursor_name=self.cursor_name,
                old_cursor=cursor,
                ancestor=ancestor,
                confirmations=self.confirmations,
                canonical_hash=self._hash_at,
            )
            session.execute(delete(SeenLog).where(SeenLog.block_number > ancestor))
            row = session.get(ChainCursor, self.cursor_name)
            assert row is not None
            if ancestor < self.start_block:
                session.delete(row)
            else:
                row.block_number = ancestor
                row.block_hash = Web3.to_hex(self.w3.eth.get_block(ancestor)["hash"])
        return True

    def _cursor_at(self, session: Session, block: int) -> bool:
        """Lock the cursor for this transaction and check it still stands at ``block``.

        Several workers poll one database. On PostgreSQL the row lock makes them take turns at applying
        a range, and one whose range no longer starts at the cursor (another worker applied it meanwhile)
        applies nothing: the cursor never moves back and no log is handled twice. (The very first range,
        before a cursor row exists, is decided by the row's primary key: the slower worker's transaction
        fails and its next poll starts from the new cursor.) SQLite ignores the lock; its single writer
        and the (tx hash, log index) key keep it correct there."""
        row = session.get(ChainCursor, self.cursor_name, with_for_update=True, populate_existing=True)
        # held for the transaction (the identity map is weak): moving the cursor then reads no row again
        session.info["watcher_cursor"] = row
        return (row.block_number if row is not None else self.start_block - 1) == block

    def _apply_range(self, from_block: int, to_block: int, *, end_hash: str | None = None) -> int | None:
        """Apply the logs of ``from_block..to_block`` and move the cursor to ``to_block``, in one
        transaction. None (nothing applied) if the range's last block changed during ``eth_getLogs``.
        ``end_hash``: the hash of ``to_block`` as read before this call (else it is read here, before the
        logs); the hash read again after the logs must equal it."""
        if end_hash is None:
            end_hash = self._hash_at(to_block)
        # raw JSON-RPC, formatted as web3 would (web3's formatters cost more than the node's answer)
        logs = get_logs(self.w3, self.escrow.address, from_block, to_block)
        if end_hash is None or self._hash_at(to_block) != end_hash:
            log.warning(
                "blocks %d-%d changed while reading their logs; reading them again", from_block, to_block
            )
            return None
        logs = sorted(logs, key=lambda item: (item["blockNumber"], item["logIndex"]))
        if self.prefetch is not None and logs:
            self.prefetch([dict(entry) for entry in logs])
        applied = 0
        with self.sessions.begin() as session:
            if not self._cursor_at(session, from_block - 1):
                return None  # another worker applied this range meanwhile
            # One query each for the range's seen logs and orders, not one per log: the handler's
            # ``session.get`` of an order then finds it in the session (docs/benchmarks.md).
            seen = self._seen(session, logs)
            orders = self._load_orders(session, logs)  # held: the session's identity map is weak
            # The range's seen-log keys in one multi-row INSERT at the end, in this transaction (an ORM
            # object each cost a unit-of-work pass per log, a fifth of the watcher's time).
            marks: list[dict[str, Any]] = []
            for entry in logs:
                topic = HexBytes(entry["topics"][0]) if entry["topics"] else None
                event = self._events.get(topic) if topic is not None else None
                if event is None:
                    continue
                key = (Web3.to_hex(entry["transactionHash"]), int(entry["logIndex"]))
                if key in seen:
                    continue
                seen.add(key)
                raw = self._decoder.decode(entry)
                if raw is not None:
                    name, args = raw
                else:  # an event the raw decoder leaves to web3
                    decoded = event.process_log(entry)
                    name, args = decoded["event"], dict(decoded["args"])
                order_id = args.get("orderId")
                marks.append(
                    {
                        "tx_hash": key[0],
                        "log_index": key[1],
                        "block_number": int(entry["blockNumber"]),
                        "block_hash": Web3.to_hex(entry["blockHash"]),
                        "event": name,
                        "order_id": Web3.to_hex(order_id) if order_id is not None else "",
                    }
                )
                meta = {
                    "tx_hash": key[0],
                    "log_index": key[1],
                    "block_number": int(entry["blockNumber"]),
                    "block_hash": Web3.to_hex(entry["blockHash"]),
                }
                self.handler(session, name, args, meta)
                applied += 1
            del orders
            if marks:
                session.execute(insert(SeenLog), marks)
            failpoint("watcher.after_logs_before_commit")
            row = session.get(ChainCursor, self.cursor_name)
            if row is None:
                session.add(ChainCursor(name=self.cursor_name, block_number=to_block, block_hash=end_hash))
            else:
                row.block_number = to_block
                row.block_hash = end_hash
        return applied

    def _seen(self, session: Session, logs: list[Any]) -> set[tuple[str, int]]:
        """The (tx hash, log index) keys among ``logs`` already applied."""
        hashes = sorted({Web3.to_hex(entry["transactionHash"]) for entry in logs})
        seen: set[tuple[str, int]] = set()
        for start in range(0, len(hashes), _IN_CHUNK):
            chunk = hashes[start : start + _IN_CHUNK]
            rows = session.execute(
                select(SeenLog.tx_hash, SeenLog.log_index).where(SeenLog.tx_hash.in_(chunk))
            ).all()
            seen.update((tx_hash, int(index)) for tx_hash, index in rows)
        return seen

    def _load_orders(self, session: Session, logs: list[Any]) -> list[Order]:
        """Load the orders the range's logs name into the session (their first topic after the event's is
        the order id for every order event; other ids simply match nothing)."""
        ids = sorted({Web3.to_hex(entry["topics"][1]) for entry in logs if len(entry["topics"]) > 1})
        loaded: list[Order] = []
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            loaded.extend(session.execute(select(Order).where(Order.id.in_(chunk))).scalars())
        return loaded


def _block_hash(block: Any) -> str | None:
    """The hash of an ``eth_getBlockByNumber`` answer (lower case); None for no block."""
    if not block:
        return None
    return str(block["hash"]).lower()


_IN_CHUNK = 500
"""Values per ``IN (...)`` list (SQLite's default limit on bound parameters is far above it)."""

_RANGE_REFUSALS = (
    "block range",
    "range too large",
    "range is too large",
    "too many blocks",
    "query returned more than",
    "exceed maximum block range",
    "limit exceeded",
    "response size exceeded",
    "too many results",
)


def _range_refused(exc: Web3RPCError) -> bool:
    """Whether a node's eth_getLogs error says the range (or its result) was too large."""
    return any(text in str(exc).lower() for text in _RANGE_REFUSALS)
