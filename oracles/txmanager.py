"""Transaction manager: one gas-paying key, gapless nonces kept in the database, an outbox of signed
transactions, EIP-1559 fees with bumping of stuck transactions, and receipt confirmation.

Order of operations for every transaction (each step committed before the next):
1. reserve the nonce and store the signed raw transaction (``ChainTx`` state ``signed``);
2. broadcast it (``sent``); a crash in between re-broadcasts the *same bytes* on restart;
3. poll the receipt (``confirmed`` / ``reverted``). A replacement with higher fees reuses the nonce, so
   at most one of the versions can ever be mined; the others end ``reverted`` with ``replaced by``.

The nonce is taken by an atomic ``UPDATE ... RETURNING`` (SQLite has no ``SELECT ... FOR UPDATE``; the
update takes its write lock), so senders in other processes never get the same one. Within a process,
one lock per manager keeps reserve-and-broadcast in nonce order: a node that refuses a nonce gap
(eth-tester does) never sees nonce n+1 before n.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from hexbytes import HexBytes
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import TransactionNotFound
from web3.types import Nonce, Wei

from cardless.ledger.models import ChainTx, ChainTxOrder, ChainTxState, SignerNonce, utcnow
from cardless.protocol.reverts import RevertDecoder
from oracles._exceptions import OracleError
from oracles.failpoints import failpoint

__all__ = ["TxManager", "TxSendError"]

log = logging.getLogger(__name__)

_PENDING = (ChainTxState.SIGNED.value, ChainTxState.SENT.value)
_BUMP_NUMERATOR, _BUMP_DENOMINATOR = 1250, 1000  # +25%, above the 10% most nodes require for replacement


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
    ) -> None:
        self.w3 = w3
        self.sessions = sessions
        self.account = account
        self.decoder = decoder
        self.bump_after = bump_after
        self.gas_margin = gas_margin
        self._chain_id = w3.eth.chain_id
        self._lock = threading.RLock()  # reserve + broadcast in nonce order within this process

    # ------------------------------------------------------------------ sending

    def send(self, purpose: str, order_ids: Sequence[str], call: ContractFunction) -> ChainTx:
        """Sign, persist and broadcast ``call``.

        Raises ContractRevert if it would revert (estimated first, before a nonce is reserved)."""
        try:
            gas = call.estimate_gas({"from": self.account.address})
        except Exception as exc:
            decoded = self.decoder.from_exception(exc)
            if decoded is not None:
                raise decoded from exc
            raise TxSendError(f"{purpose}: gas estimation failed: {exc}") from exc
        max_fee, priority = self._fees()
        with self._lock:
            with self.sessions.begin() as session:
                nonce = self._reserve_nonce(session)
                tx = call.build_transaction(
                    {
                        "from": self.account.address,
                        "nonce": Nonce(nonce),
                        "chainId": self._chain_id,
                        "gas": int(gas * self.gas_margin),
                        "maxFeePerGas": Wei(max_fee),
                        "maxPriorityFeePerGas": Wei(priority),
                    }
                )
                record = self._sign_and_store(session, purpose, list(order_ids), dict(tx))
            self._broadcast(record)
        return record

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
            max_fee_per_gas=tx["maxFeePerGas"],
            priority_fee_per_gas=tx["maxPriorityFeePerGas"],
            orders=[ChainTxOrder(order_id=order_id) for order_id in dict.fromkeys(order_ids)],
        )
        session.add(record)
        session.flush()
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

    def _fees(self) -> tuple[int, int]:
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
        return {order_id for tx in self.pending() for order_id in tx.order_ids}

    def recover(self) -> None:
        """After a restart: broadcast again every transaction that was signed but maybe never sent."""
        with self._lock:
            for record in self.pending():
                if record.state == ChainTxState.SIGNED.value:
                    log.info("re-broadcasting %s (nonce %d) after restart", record.tx_hash, record.nonce)
                    self._broadcast(record)

    def confirm(self) -> list[ChainTx]:
        """Poll receipts of pending transactions; returns those that reached a final state.

        A nonce none of whose versions is mined is bumped once ``bump_after`` has passed since its
        newest version was sent; only that newest version is re-signed (from its own fees)."""
        done: list[ChainTx] = []
        replacements: list[ChainTx] = []
        pending = self.pending()
        receipts = {record.id: self._receipt(record.tx_hash) for record in pending}
        mined = {(r.sender, r.nonce) for r in pending if receipts[r.id] is not None}
        newest = {(r.sender, r.nonce): r.id for r in pending}  # pending() is ordered by id
        for record in pending:
            receipt = receipts[record.id]
            key = (record.sender, record.nonce)
            with self.sessions.begin() as session:
                row = session.get(ChainTx, record.id)
                assert row is not None
                if row.state not in _PENDING:  # resolved above as a sibling of the mined version
                    continue
                if receipt is None:
                    if (
                        key not in mined
                        and newest[key] == row.id
                        and row.state == ChainTxState.SENT.value
                        and row.sent_at
                        and utcnow() - _aware(row.sent_at) > self.bump_after
                    ):
                        replacements.append(self._bump(session, row))
                    continue
                row.state = (
                    ChainTxState.CONFIRMED if receipt["status"] == 1 else ChainTxState.REVERTED
                ).value
                row.confirmed_block = receipt["blockNumber"]
                row.gas_used = receipt["gasUsed"]
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
                self._broadcast(replacement)
        return done

    def _receipt(self, tx_hash: str) -> Any:
        try:
            return self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        except TransactionNotFound:
            return None

    def _bump(self, session: Session, row: ChainTx) -> ChainTx:
        """Re-sign the same nonce with fees 25% higher (or today's fees, if higher still). Both versions
        stay pending until one is mined."""
        fields = dict(TypedTransaction.from_bytes(HexBytes(row.raw_tx)).as_dict())
        for signature_part in ("v", "r", "s", "yParity"):
            fields.pop(signature_part, None)
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


def _aware(value: Any) -> Any:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)
