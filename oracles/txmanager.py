"""Transaction manager: one gas-paying key, gapless nonces kept in the database, an outbox of signed
transactions, EIP-1559 (or legacy) fees with bumping of stuck transactions, and receipt confirmation
at the chain's confirmation depth.

Order of operations for every transaction (each step committed before the next):
1. reserve the nonce and store the signed raw transaction (``ChainTx`` state ``signed``);
2. broadcast it (``sent``); a crash in between re-broadcasts the *same bytes* on restart;
3. poll the receipt (``confirmed`` / ``reverted``). A replacement with higher fees reuses the nonce, so
   at most one of the versions can ever be mined; the others end ``reverted`` with ``replaced by``.

The nonce is taken by an atomic ``UPDATE ... RETURNING`` (SQLite has no ``SELECT ... FOR UPDATE``; the
update takes its write lock), so senders in other processes never get the same one. Within a process,
one lock per manager keeps reserve-and-broadcast in nonce order: a node that refuses a nonce gap
(eth-tester does) never sees nonce n+1 before n.

On a real node (``confirm``, ``reconcile_nonces``, ``check_balance``):

- a transaction is final only when its receipt is ``confirmations`` deep; until then it stays pending
  (and is never bumped: it is mined). A receipt that disappears (a reorg) makes it pending again;
- a pending transaction the node no longer knows (dropped from its pool, or reorganised out) is
  broadcast again, same bytes, after ``resend_after``; one unmined for ``bump_after`` is replaced
  with fees 25 % higher (same nonce: only one version can ever be mined);
- nonces between the chain's count and the database's next nonce that no pending transaction holds
  are repaired: a transaction of ours that a reorg took away is re-sent (same bytes), any other gap
  (a nonce reserved by a process that died before storing its transaction) is filled with a zero-value
  transfer to ourselves, so the transactions queued behind it can be mined. A nonce the chain used
  for a transaction we do not know ends our versions of it as ``reverted`` (their orders are posted
  again); a chain count above the database's moves the database up;
- a transaction that reverted on chain only because its order was already settled (or refunded) by
  the time it was mined is *confirmed*: the effect it was sent for is on chain;
- the gas key's balance is a metric, with an alarm under ``low_balance_wei``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

import rlp  # type: ignore[import-untyped]
from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from hexbytes import HexBytes
from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import TransactionNotFound
from web3.types import Nonce, TxParams, Wei

from cardless.ledger.models import ChainTx, ChainTxOrder, ChainTxState, SignerNonce, utcnow
from cardless.protocol import ContractRevert, OrderStatus
from cardless.protocol.reverts import RevertDecoder
from oracles import metrics
from oracles._exceptions import OracleError
from oracles.failpoints import failpoint
from oracles.rawabi import RawCall, quantity, rpc_batch

__all__ = ["TxManager", "TxSendError"]

log = logging.getLogger(__name__)

_PENDING = (ChainTxState.SIGNED.value, ChainTxState.SENT.value)
_BUMP_NUMERATOR, _BUMP_DENOMINATOR = 1250, 1000  # +25%, above the 10% most nodes require for replacement
_FILL_GAS = 21_000
# A revert that only says the order is already closed the way this transaction would close it.
_ALREADY_DONE = {
    "settle": {OrderStatus.SETTLED},
    "settle_batch": {OrderStatus.SETTLED},
    "refund": {OrderStatus.REFUNDED, OrderStatus.RECLAIMED},
}
_LOW_BALANCE_REPEAT = 600.0  # seconds between repeated low-balance alarms
# Calls whose gas comes from the gas table (see ``TxManager._gas``): the escrow's per-order calls, whose
# cost depends on how many orders they carry and little else.
_TABLED = frozenset({"settle", "settle_batch", "refund"})
# Added per order to a tabled limit: a call may write storage slots the estimated one found already set
# (a merchant's or the fee recipient's first balance, a token's first use): two fresh slots an order,
# 22,100 gas each (20,000 to set, 2,100 cold). Unused gas is not charged.
_SLOT_HEADROOM = 44_200
# A reverted transaction that used at least this share of its limit ran out of gas.
_OUT_OF_GAS_SHARE = 0.98


class TxSendError(OracleError):
    pass


class TxManager:
    def __init__(
        self,
        w3: Web3,
        sessions: sessionmaker[Session],
        account: LocalAccount,
        decoder: RevertDecoder,
        *,
        bump_after: timedelta = timedelta(seconds=30),
        gas_margin: float = 1.25,
        confirmations: int = 0,
        fee_mode: Literal["eip1559", "legacy"] = "eip1559",
        resend_after: timedelta = timedelta(seconds=3),
        reconcile_every: timedelta = timedelta(seconds=5),
        low_balance_wei: int = 0,
        gas_table: bool = True,
        fee_ttl: timedelta = timedelta(seconds=1),
    ) -> None:
        self.w3 = w3
        self.sessions = sessions
        self.account = account
        self.decoder = decoder
        self.bump_after = bump_after
        self.gas_margin = gas_margin
        self.confirmations = confirmations
        self.fee_mode = fee_mode
        self.resend_after = resend_after
        self.reconcile_every = reconcile_every
        self.low_balance_wei = low_balance_wei
        self._chain_id = w3.eth.chain_id
        self._lock = threading.RLock()  # reserve + broadcast in nonce order within this process
        self._reconciled_at = 0.0
        self._resent_at: dict[int, float] = {}  # ChainTx id -> when this process last re-broadcast it
        self._low_alarm_at: float | None = None
        self.gas_table = gas_table
        self.fee_ttl = fee_ttl
        # (purpose, number of orders) -> gas limit, margin and headroom included
        self._gas_limits: dict[tuple[str, int], int] = {}
        self._fees_at: tuple[float, dict[str, Wei]] | None = None  # when read, and the fee fields

    # ------------------------------------------------------------------ sending

    def send(self, purpose: str, order_ids: Sequence[str], call: ContractFunction | RawCall) -> ChainTx:
        """Sign, persist and broadcast ``call`` (a web3 contract call, or one already encoded: the
        settlement hot path encodes with ``eth_abi``, ``oracles.rawabi``).

        Raises ContractRevert if it would revert (estimated first, before a nonce is reserved). The
        escrow's settlements and refunds take their gas from the gas table once their size has been
        estimated (``_gas``): a call that reverts on chain is estimated again before it is re-sent."""
        gas = self._gas(purpose, order_ids, call)
        fees = self._fee_fields()
        with self._lock:
            with self.sessions.begin() as session:
                nonce = self._reserve_nonce(session)
                params: TxParams = {
                    "from": self.account.address,
                    "nonce": Nonce(nonce),
                    "chainId": self._chain_id,
                    "gas": gas,
                }
                params.update(fees)  # type: ignore[typeddict-item]
                if isinstance(call, RawCall):
                    tx: dict[str, Any] = {**params, "to": call.to, "data": HexBytes(call.data), "value": 0}
                else:
                    tx = dict(call.build_transaction(params))
                record = self._sign_and_store(session, purpose, list(order_ids), tx)
            self._broadcast(record)
        return record

    def _gas(self, purpose: str, order_ids: Sequence[str], call: ContractFunction | RawCall) -> int:
        """The gas limit to send ``call`` with. The escrow's settlements and refunds use the gas table:
        the first call of each (purpose, number of orders) is estimated, and the estimate with the margin
        plus ``_SLOT_HEADROOM`` per order is the limit of every later one of that size, raised by any
        receipt that used more than it left (``_learn``). Every other call, and a call for orders a
        transaction already reverted for (the estimate then raises the revert, so the caller can split
        the batch), is estimated, as is every call with the table off."""
        orders = len(dict.fromkeys(order_ids))
        key = (purpose, orders)
        tabled = self.gas_table and isinstance(call, RawCall) and purpose in _TABLED
        known = self._table_limit(purpose, orders) if tabled else None
        if known is not None and not self._reverted_before(order_ids):
            return known
        try:
            if isinstance(call, RawCall):
                estimate = self.w3.eth.estimate_gas(
                    {"from": self.account.address, "to": call.to, "data": HexBytes(call.data)}
                )
            else:
                estimate = call.estimate_gas({"from": self.account.address})
        except Exception as exc:
            decoded = self.decoder.from_exception(exc)
            if decoded is not None:
                raise decoded from exc
            raise TxSendError(f"{purpose}: gas estimation failed: {exc}") from exc
        limit = int(estimate * self.gas_margin)
        if tabled:
            self._gas_limits[key] = max(self._gas_limits.get(key, 0), limit + _SLOT_HEADROOM * orders)
        return limit

    def _table_limit(self, purpose: str, orders: int) -> int | None:
        """The table's limit for a call of ``orders`` orders: its own size's, else the nearest larger size's
        up to twice as many orders (a call's gas grows with its orders, so a larger size's limit covers a
        smaller call; beyond twice it would hold far more of the key's balance than the call needs)."""
        for size in range(orders, 2 * orders + 1):
            found = self._gas_limits.get((purpose, size))
            if found is not None:
                return found
        return None

    def _reverted_before(self, order_ids: Sequence[str]) -> bool:
        """Whether a transaction for any of ``order_ids`` ended reverted (replaced versions aside)."""
        if not order_ids:
            return False
        with self.sessions() as session:
            found = session.execute(
                select(ChainTx.id)
                .join(ChainTxOrder, ChainTxOrder.chain_tx_id == ChainTx.id)
                .where(
                    ChainTxOrder.order_id.in_(list(dict.fromkeys(order_ids))),
                    ChainTx.state == ChainTxState.REVERTED.value,
                    or_(ChainTx.error.is_(None), ChainTx.error.not_like("replaced by %")),
                )
                .limit(1)
            ).first()
        return found is not None

    def _learn(self, row: ChainTx, receipt: Any) -> None:
        """Keep the gas table safe from what a mined transaction used: a tabled call that used more than
        its limit less the headroom raises its entry; one that ran out of gas drops it, so the next call
        of that size is estimated again."""
        if row.purpose not in _TABLED or receipt.get("gasUsed") is None:
            return
        orders = len(dict.fromkeys(row.order_ids))
        used = int(receipt["gasUsed"])
        if receipt["status"] != 1:
            sent_with = int(_unsigned_fields(row.raw_tx)["gas"])
            if used >= sent_with * _OUT_OF_GAS_SHARE:
                log.warning(
                    "%s %s ran out of gas (%d of %d): estimating its size again",
                    row.purpose,
                    row.tx_hash,
                    used,
                    sent_with,
                )
                for size in range(orders, 2 * orders + 1):  # whichever entry it was sent with
                    self._gas_limits.pop((row.purpose, size), None)
            return
        known = self._gas_limits.get((row.purpose, orders))
        wanted = int(used * self.gas_margin) + _SLOT_HEADROOM * orders
        if known is not None and wanted > known:
            self._gas_limits[(row.purpose, orders)] = wanted

    def _sign_and_store(
        self, session: Session, purpose: str, order_ids: list[str], tx: dict[str, Any]
    ) -> ChainTx:
        signed = self.account.sign_transaction(tx)
        record = ChainTx(
            sender=self.account.address,
            nonce=tx["nonce"],
            purpose=purpose,
            order_ids=order_ids,
            raw_tx=bytes(signed.raw_transaction),
            tx_hash=Web3.to_hex(signed.hash),
            state=ChainTxState.SIGNED.value,
            # legacy: the gas price in both (a legacy price is paid whole, like a max fee of it)
            max_fee_per_gas=tx.get("maxFeePerGas", tx.get("gasPrice")),
            priority_fee_per_gas=tx.get("maxPriorityFeePerGas", tx.get("gasPrice")),
        )
        session.add(record)
        session.flush()
        # The transaction's orders in one multi-row INSERT, in this transaction: as ORM children
        # (``ChainTx.orders``) each cost a unit-of-work pass, most of the time of storing a batch's
        # transaction (docs/benchmarks.md, round 6).
        keys = [{"chain_tx_id": record.id, "order_id": order_id} for order_id in dict.fromkeys(order_ids)]
        if keys:
            session.execute(insert(ChainTxOrder), keys)
        return record

    def _reserve_nonce(self, session: Session) -> int:
        """Take the next nonce in one statement, as the transaction's first (a read-then-write would let
        two senders read the same value: SQLite ignores ``FOR UPDATE``)."""
        address = self.account.address
        take = (
            update(SignerNonce)
            .where(SignerNonce.address == address)
            .values(next_nonce=SignerNonce.next_nonce + 1)
            .returning(SignerNonce.next_nonce)
            .execution_options(synchronize_session=False)
        )
        taken = session.execute(take).scalar_one_or_none()
        if taken is None:  # first transaction of this key: start from the chain
            chain_nonce = self.w3.eth.get_transaction_count(address, "pending")
            try:
                with session.begin_nested():
                    session.add(SignerNonce(address=address, next_nonce=chain_nonce + 1))
                return int(chain_nonce)
            except IntegrityError:  # another process created the row first (PostgreSQL; SQLite waits)
                taken = session.execute(take).scalar_one()
        return int(taken) - 1

    def _fee_fields(self) -> dict[str, Wei]:
        """The fee fields of a new transaction, read from the node at most once per ``fee_ttl`` (the
        transactions one stage posts go out within it, into the same block or the next; a max fee of twice
        the base fee covers six full blocks of base-fee rises, and a stuck one is bumped)."""
        now = time.monotonic()
        if self._fees_at is not None and now - self._fees_at[0] < self.fee_ttl.total_seconds():
            return dict(self._fees_at[1])
        fields: dict[str, Wei]
        if self.fee_mode == "legacy":
            fields = {"gasPrice": Wei(int(self.w3.eth.gas_price))}
        else:
            max_fee, priority = self._fees()
            fields = {"maxFeePerGas": Wei(max_fee), "maxPriorityFeePerGas": Wei(priority)}
        self._fees_at = (now, fields)
        return dict(fields)

    def _fees(self) -> tuple[int, int]:
        """(max fee, priority fee): twice the latest block's base fee plus the node's priority fee. Both
        read in one raw JSON-RPC batch (two web3 calls before, a round trip each); a node that refuses
        the batch, or ``eth_maxPriorityFeePerGas``, is read one by one as before."""
        try:
            block, tip = rpc_batch(
                self.w3, [("eth_getBlockByNumber", ["latest", False]), ("eth_maxPriorityFeePerGas", [])]
            )
            base_fee = block.get("baseFeePerGas")  # None (no block): AttributeError, read one by one
            base = 0 if base_fee is None else quantity(base_fee, "eth_getBlockByNumber baseFeePerGas")
            priority = quantity(tip, "eth_maxPriorityFeePerGas")
            return 2 * base + priority, priority
        except Exception:  # e.g. a node without eth_maxPriorityFeePerGas or without batches
            pass
        latest = self.w3.eth.get_block("latest")
        base = int(latest.get("baseFeePerGas", 0) or 0)
        try:
            priority = int(self.w3.eth.max_priority_fee)
        except Exception:  # nodes without eth_maxPriorityFeePerGas
            priority = 10**9
        return 2 * base + priority, priority

    def _broadcast(self, record: ChainTx) -> None:
        failpoint("tx.before_broadcast")
        try:
            self.w3.eth.send_raw_transaction(record.raw_tx)
        except Exception as exc:
            message = str(exc).lower()
            # Re-broadcast after a crash: the node already has (or mined) these exact bytes. Not every
            # node words it so (eth-tester: "Invalid transaction nonce"), so also ask for the hash.
            decoded = self.decoder.from_exception(exc)
            benign = decoded is None and (
                any(s in message for s in ("already known", "known transaction", "nonce too low"))
                or self._node_has(record.tx_hash)
            )
            if not benign:
                with self.sessions.begin() as session:
                    row = session.get(ChainTx, record.id)
                    assert row is not None
                    row.error = str(decoded or exc)[:2000]
                log.warning("broadcast of %s failed: %s", record.tx_hash, decoded or exc)
                # The node may still have mined it (eth-tester raises on a reverting raw tx but mines it):
                # the receipt decides in confirm().
        failpoint("tx.after_broadcast")
        with self.sessions.begin() as session:
            row = session.get(ChainTx, record.id)
            assert row is not None
            if row.state == ChainTxState.SIGNED.value:
                row.state = ChainTxState.SENT.value
                row.sent_at = utcnow()
        record.state = ChainTxState.SENT.value

    def _node_has(self, tx_hash: str) -> bool:
        try:
            self.w3.eth.get_transaction(HexBytes(tx_hash))
        except Exception:  # not found, or the node is unreachable: the receipt decides later
            return False
        return True

    # ------------------------------------------------------------------ confirming

    def pending(self) -> list[ChainTx]:
        with self.sessions() as session:
            return list(
                session.execute(
                    select(ChainTx).where(ChainTx.state.in_(_PENDING)).order_by(ChainTx.id)
                ).scalars()
            )

    def pending_order_ids(self) -> set[str]:
        """The orders of every pending transaction, read by key (``chain_tx_orders``) without loading the
        transactions: the settlement stage asks twice per post."""
        with self.sessions() as session:
            return set(
                session.execute(
                    select(ChainTxOrder.order_id)
                    .join(ChainTx, ChainTx.id == ChainTxOrder.chain_tx_id)
                    .where(ChainTx.state.in_(_PENDING))
                ).scalars()
            )

    def recover(self) -> None:
        """After a restart: broadcast again every transaction that was signed but maybe never sent, then
        repair the nonces a crash may have left unused."""
        with self._lock:
            for record in self.pending():
                if record.state == ChainTxState.SIGNED.value:
                    log.info("re-broadcasting %s (nonce %d) after restart", record.tx_hash, record.nonce)
                    self._broadcast(record)
        self.reconcile_nonces()

    def confirm(self) -> list[ChainTx]:
        """Poll receipts of pending transactions; returns those that reached a final state.

        A receipt counts once ``confirmations`` deep. A nonce none of whose versions is mined is bumped
        once ``bump_after`` has passed since its newest version was sent (only that newest version is
        re-signed, from its own fees); before that, a newest version the node does not know is broadcast
        again after ``resend_after``. Every ``reconcile_every`` the nonces are reconciled with the chain."""
        if time.monotonic() - self._reconciled_at >= self.reconcile_every.total_seconds():
            self.reconcile_nonces()
        done: list[ChainTx] = []
        replacements: list[ChainTx] = []
        resend: list[ChainTx] = []
        now = time.monotonic()
        pending = self.pending()
        if not pending:
            return done
        # Counted before the receipts are read: a transaction mined in between has its receipt found,
        # so a used nonce without any receipt of ours really is someone else's transaction. The head (at
        # a confirmation depth) comes in the same raw batch: one round trip, no web3 formatters.
        reads = [self._nonce_request("latest")] + ([("eth_blockNumber", [])] if self.confirmations else [])
        answers = rpc_batch(self.w3, reads)
        used = quantity(answers[0], "eth_getTransactionCount")
        head = quantity(answers[1], "eth_blockNumber") if self.confirmations else 0
        receipts = dict(
            zip([r.id for r in pending], self._receipts([r.tx_hash for r in pending]), strict=True)
        )
        mined = {(r.sender, r.nonce) for r in pending if receipts[r.id] is not None}
        newest = {(r.sender, r.nonce): r.id for r in pending}  # pending() is ordered by id
        # One transaction for every pending transaction's verdict (one each before); what it decides
        # to broadcast is sent after it commits, as before.
        with self.sessions.begin() as session:
            held = {  # loaded together; held here, since the session's identity map is weak
                row.id: row
                for row in session.execute(
                    select(ChainTx).where(ChainTx.id.in_([r.id for r in pending]))
                ).scalars()
            }
            for record in pending:
                receipt = receipts[record.id]
                key = (record.sender, record.nonce)
                row = held.get(record.id)
                if row is None:  # gone meanwhile (not expected: transactions are never deleted)
                    continue
                if row.state not in _PENDING:  # resolved above as a sibling of the mined version
                    continue
                if receipt is None:
                    if key in mined or newest[key] != row.id or row.state != ChainTxState.SENT.value:
                        continue
                    if row.nonce < used and not self._node_has(row.tx_hash):
                        # The nonce is used, by none of our versions (a node that knows this one by hash
                        # is only slow to give its receipt: it is left alone).
                        self._superseded(session, row)
                        continue
                    age = utcnow() - _aware(row.sent_at) if row.sent_at else timedelta(0)
                    if age > self.bump_after:
                        replacements.append(self._bump(session, row))
                    elif (
                        age >= self.resend_after
                        and now - self._resent_at.get(row.id, 0.0) >= self.resend_after.total_seconds()
                        and not self._node_has(row.tx_hash)
                    ):
                        self._resent_at[row.id] = now
                        resend.append(row)
                    continue
                if self.confirmations and int(receipt["blockNumber"]) + self.confirmations > head:
                    continue  # mined, not final yet: a reorg may still take it away
                ok = receipt["status"] == 1 or self._already_done(row)
                row.state = (ChainTxState.CONFIRMED if ok else ChainTxState.REVERTED).value
                if receipt["status"] != 1 and ok:
                    row.error = "reverted on chain, but its orders were already closed that way: success"
                    metrics.TX_ALREADY_DONE.inc()
                row.confirmed_block = receipt["blockNumber"]
                row.gas_used = receipt["gasUsed"]
                self._learn(row, receipt)
                # Any other version of this nonce can never be mined now.
                for sibling in session.execute(
                    select(ChainTx).where(
                        ChainTx.sender == row.sender, ChainTx.nonce == row.nonce, ChainTx.id != row.id
                    )
                ).scalars():
                    if sibling.state in _PENDING:
                        sibling.state = ChainTxState.REVERTED.value
                        sibling.error = f"replaced by {row.tx_hash}"
                done.append(row)
        with self._lock:
            for replacement in replacements:
                metrics.TX_REPLACED.inc()
                self._broadcast(replacement)
            for record in resend:
                log.warning(
                    "the node no longer knows %s (nonce %d): sending it again", record.tx_hash, record.nonce
                )
                metrics.TX_RESENT.inc()
                self._broadcast(record)
        return done

    def _receipts(self, tx_hashes: list[str]) -> list[Any]:
        """The receipts of ``tx_hashes`` (None: not mined), in one raw JSON-RPC batch; the fields this
        manager reads (``status``, ``blockNumber``, ``gasUsed``) as ints. A node that refuses the batch is
        asked one by one."""
        try:
            raw = rpc_batch(self.w3, [("eth_getTransactionReceipt", [h]) for h in tx_hashes])
        except Exception:  # e.g. a node without batches: the per-transaction path
            return [self._receipt(h) for h in tx_hashes]
        return [
            None
            if r is None
            else {
                **r,
                **{
                    k: quantity(r[k], f"eth_getTransactionReceipt {k}")
                    for k in ("status", "blockNumber", "gasUsed")
                    if r.get(k) is not None
                },
            }
            for r in raw
        ]

    def _receipt(self, tx_hash: str) -> Any:
        try:
            return self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        except TransactionNotFound:
            return None

    def _chain_nonce(self, block: Literal["latest", "pending"]) -> int:
        """The key's transaction count at ``block``, as a raw JSON-RPC read (web3's formatters cost more
        than the round trip; read on every ``confirm``)."""
        (answer,) = rpc_batch(self.w3, [self._nonce_request(block)])
        return quantity(answer, "eth_getTransactionCount")

    def _nonce_request(self, block: Literal["latest", "pending"]) -> tuple[str, list[Any]]:
        return ("eth_getTransactionCount", [self.account.address, block])

    def _superseded(self, session: Session, row: ChainTx) -> None:
        """The chain used this nonce for a transaction that is none of our versions: ours can never be
        mined, so every version ends and its orders are posted again."""
        for version in session.execute(
            select(ChainTx).where(ChainTx.sender == row.sender, ChainTx.nonce == row.nonce)
        ).scalars():
            if version.state in _PENDING:
                version.state = ChainTxState.REVERTED.value
                version.error = "nonce used by a transaction this database does not know"
        log.error("nonce %d of %s was used by a transaction we did not send", row.nonce, row.sender)

    def _already_done(self, row: ChainTx) -> bool:
        """Whether a transaction that reverted on chain only failed because its effect was already there:
        the same call, simulated now, reverts ``OrderNotPaid`` with the status it was sent to reach."""
        wanted = _ALREADY_DONE.get(row.purpose)
        if not wanted:
            return False
        fields = _unsigned_fields(row.raw_tx)
        call = {"from": row.sender, "to": fields["to"], "data": fields["data"], "value": fields["value"]}
        try:
            self.w3.eth.call(call)  # type: ignore[arg-type]
        except Exception as exc:
            decoded = self.decoder.from_exception(exc)
        else:
            return False  # it would succeed now: it failed for some other reason then
        if not isinstance(decoded, ContractRevert) or decoded.name != "OrderNotPaid":
            return False
        try:
            return OrderStatus(int(decoded.args_[1])) in wanted
        except (IndexError, ValueError, TypeError):
            return False

    # ------------------------------------------------------------------ nonces

    def reconcile_nonces(self) -> int:
        """Repair the nonces between the chain's count and the database's next nonce; returns how many
        transactions were sent for it (see the module docstring)."""
        self._reconciled_at = time.monotonic()
        address = self.account.address
        chain_next = self._chain_nonce("latest")
        head = int(self.w3.eth.block_number)
        send: list[ChainTx] = []
        with self._lock, self.sessions.begin() as session:
            # A no-op update first: it takes the write lock (SQLite) or the row lock (PostgreSQL), so two
            # workers never repair the same nonce; read before the rows, so rows reserved later are out
            # of range.
            session.execute(
                update(SignerNonce)
                .where(SignerNonce.address == address)
                .values(next_nonce=SignerNonce.next_nonce)
                .execution_options(synchronize_session=False)
            )
            counter = session.get(SignerNonce, address, populate_existing=True)
            if counter is None:
                return 0
            if chain_next > counter.next_nonce:
                log.warning(
                    "the chain has used nonces of %s up to %d, the database only to %d: moving up",
                    address,
                    chain_next - 1,
                    counter.next_nonce - 1,
                )
                counter.next_nonce = chain_next
                return 0
            rows = session.execute(
                select(ChainTx)
                .where(
                    ChainTx.sender == address, ChainTx.nonce >= chain_next, ChainTx.nonce < counter.next_nonce
                )
                .order_by(ChainTx.id)
            ).scalars()
            by_nonce: dict[int, list[ChainTx]] = {}
            for row in rows:
                by_nonce.setdefault(row.nonce, []).append(row)
            for nonce in range(chain_next, counter.next_nonce):
                versions = by_nonce.get(nonce, [])
                if any(v.state in _PENDING for v in versions):
                    continue
                final = [v for v in versions if v.state == ChainTxState.CONFIRMED.value or v.gas_used]
                if final:
                    row = final[-1]
                    if row.confirmed_block is not None and row.confirmed_block > head:
                        continue  # the node is behind the block we saw it in: nothing is lost
                    row.state = ChainTxState.SENT.value
                    row.sent_at = utcnow()
                    row.confirmed_block = None
                    row.error = "no longer on chain (reorganised out): re-sent"
                    log.error(
                        "ALARM: %s (nonce %d) is no longer on chain: sending it again", row.tx_hash, nonce
                    )
                    metrics.TX_RESENT.inc()
                    send.append(row)
                    continue
                filler = self._sign_and_store(
                    session,
                    "nonce_fill",
                    [],
                    {
                        "from": address,
                        "to": address,
                        "value": 0,
                        "data": b"",
                        "nonce": nonce,
                        "chainId": self._chain_id,
                        "gas": _FILL_GAS,
                        **self._fee_fields(),
                    },
                )
                log.warning(
                    "nonce %d of %s was never used (a crash?): filling it with a no-op", nonce, address
                )
                metrics.TX_NONCE_GAPS.inc()
                send.append(filler)
        for record in send:
            self._broadcast(record)
        return len(send)

    # ------------------------------------------------------------------ balance

    def check_balance(self) -> int:
        """Publish the gas key's balance; alarm (log + ``cardless_gas_balance_low``) under the threshold,
        again every ten minutes while it stays low. Returns the balance in wei."""
        address = self.account.address
        balance = int(self.w3.eth.get_balance(address))
        metrics.GAS_BALANCE.labels(address).set(balance)
        low = balance < self.low_balance_wei
        metrics.GAS_BALANCE_LOW.labels(address).set(1 if low else 0)
        now = time.monotonic()
        if not low:
            if self._low_alarm_at is not None:
                log.info("gas key %s balance back to %d wei", address, balance)
            self._low_alarm_at = None
        elif self._low_alarm_at is None or now - self._low_alarm_at >= _LOW_BALANCE_REPEAT:
            self._low_alarm_at = now
            log.error(
                "ALARM: gas key %s holds %d wei, under the %d wei threshold: fund it before settlements stop",
                address,
                balance,
                self.low_balance_wei,
            )
        return balance

    # ------------------------------------------------------------------ bumping

    def _bump(self, session: Session, row: ChainTx) -> ChainTx:
        """Re-sign the same nonce with fees 25% higher (or today's fees, if higher still). Both versions
        stay pending until one is mined."""
        fields = _unsigned_fields(row.raw_tx)
        if "gasPrice" in fields:
            fields["gasPrice"] = max(
                int(self.w3.eth.gas_price), row.max_fee_per_gas * _BUMP_NUMERATOR // _BUMP_DENOMINATOR
            )
        else:
            max_fee, priority = self._fees()
            fields["maxPriorityFeePerGas"] = max(
                priority, row.priority_fee_per_gas * _BUMP_NUMERATOR // _BUMP_DENOMINATOR
            )
            fields["maxFeePerGas"] = max(
                max_fee,
                row.max_fee_per_gas * _BUMP_NUMERATOR // _BUMP_DENOMINATOR,
                fields["maxPriorityFeePerGas"],
            )
        replacement = self._sign_and_store(session, row.purpose, list(row.order_ids), fields)
        log.info("bumping %s -> %s (nonce %d)", row.tx_hash, replacement.tx_hash, row.nonce)
        return replacement


def _unsigned_fields(raw: bytes) -> dict[str, Any]:
    """The fields of a signed transaction without its signature: typed (EIP-2718) or legacy."""
    raw = bytes(raw)
    if raw and raw[0] >= 0xC0:  # an RLP list: a legacy transaction (EIP-155 chain id in v)
        nonce, gas_price, gas, to, value, data, v, _r, _s = rlp.decode(raw)
        chain_id = (int.from_bytes(v, "big") - 35) // 2
        return {
            "nonce": int.from_bytes(nonce, "big"),
            "gasPrice": int.from_bytes(gas_price, "big"),
            "gas": int.from_bytes(gas, "big"),
            "to": Web3.to_checksum_address(to) if to else None,
            "value": int.from_bytes(value, "big"),
            "data": Web3.to_hex(data),
            "chainId": chain_id,
        }
    fields = dict(TypedTransaction.from_bytes(HexBytes(raw)).as_dict())
    for signature_part in ("v", "r", "s", "yParity"):
        fields.pop(signature_part, None)
    if isinstance(fields.get("data"), bytes | HexBytes):
        fields["data"] = Web3.to_hex(fields["data"])
    return fields


def _aware(value: Any) -> Any:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)
