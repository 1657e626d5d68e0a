"""Settlement: post signed proofs (``settle`` / ``settleBatch``) and refund authorisations (``refund``)
through the transaction manager, and sweep merchants' escrow balances to them.

An order whose proof can never settle (the top-up completed after its deadline, or the chain's clock
passed ``fulfilmentDeadline + SETTLEMENT_GRACE``) is moved to ``failed_final`` (reason
``NOT_SETTLEABLE``) and refunded instead of being put in a batch. A batch the escrow would revert is
split in halves and each half retried, down to single orders, so one bad order delays no other (the
escrow itself skips entries it cannot settle, with ``SettlementSkipped``).

Posting an order's transaction is claimed with a work lease (``cardless.ledger.store.claim``) committed
before anything is sent, and the transaction manager's outbox is checked *after* the claim: a worker
that claims an order another worker has just posted for sees that transaction and sends nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta

from eth_abi import decode
from eth_account.messages import SignableMessage
from eth_utils import to_bytes
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.contract import Contract

from cardless import protocol
from cardless.ledger.models import Order, OrderState, utcnow
from cardless.ledger.store import candidates, claim_many, order_from_row, release
from cardless.ledger.transitions import transition
from cardless.protocol import SETTLEMENT_GRACE, ContractRevert, RefundReason
from oracles.cosigner_wire import CoSignerRefusedError
from oracles.proofs import Batch, CoSigner, Proofs, assemble_batches, fulfilment_of
from oracles.rawabi import RawCall, RawFunction, call_batch, encode_call, selector
from oracles.txmanager import TxManager

__all__ = ["CoSigningError", "MerchantSweep", "Settlement", "settleable"]

log = logging.getLogger(__name__)
S = OrderState
# Posting is synchronous (estimate, sign, broadcast: ~0.1 s a transaction), so one call claims only what
# it sends well within its lease; the rest waits for the next tick, unclaimed, for any worker.
_BATCHES_PER_POST = 4
_REFUNDS_PER_POST = 20
_ORDER_STATUS = selector("orderStatus(bytes32)")
_ORACLE_THRESHOLD = selector("oracleThreshold()")


class CoSigningError(RuntimeError):
    """Fewer oracle signatures than the escrow's threshold could be collected. ``refused``: the order ids a
    co-signer checked and refused (``CoSignerRefusedError``), which the batch can be sent without."""

    def __init__(self, message: str, refused: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.refused = refused


class Settlement:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        escrow: Contract,
        tx: TxManager,
        proofs: Proofs,
        *,
        owner: str,
        lease_ttl: timedelta,
        max_batch: int,
    ) -> None:
        self.sessions = sessions
        self.escrow = escrow
        self.tx = tx
        self.proofs = proofs
        self.owner = owner
        self.lease_ttl = lease_ttl
        self.max_batch = max_batch
        self._functions: dict[str, RawFunction] = {}

    def post(self, chain_now: int | None = None) -> int:
        """Stage: send a transaction for every signed proof and refund not already on its way; returns
        how many transactions were sent (plus how many unsettleable proofs were turned into refunds).
        Claims at most what one call posts well within the lease. ``chain_now`` (the latest block's
        time) lets it recognise proofs whose settlement window has closed."""
        proofs, refunds = self._claim(exclude=self.tx.pending_order_ids())
        if not proofs and not refunds:
            return 0
        claimed = [r.id for r in proofs + refunds]
        try:
            # Again after the claim: another worker may have posted these between our look and our claim.
            pending = self.tx.pending_order_ids()
            proofs = [r for r in proofs if r.id not in pending]
            refunds = [r for r in refunds if r.id not in pending]
            unsettleable = [r for r in proofs if not settleable(r, chain_now)]
            sent = self._refund_instead(unsettleable)
            proofs = [r for r in proofs if settleable(r, chain_now)]
            for batch in assemble_batches(proofs, self.max_batch):
                sent += self._settle(batch)
            for row in refunds:
                sent += self._refund(row)
            return sent
        finally:
            with self.sessions.begin() as session:
                release(session, claimed, self.owner)

    def _claim(self, exclude: set[str]) -> tuple[list[Order], list[Order]]:
        now = utcnow()
        proofs: list[Order] = []
        refunds: list[Order] = []
        with self.sessions.begin() as session:
            for row in candidates(session, [S.PROOF_PENDING, S.REFUND_PENDING], now=now):
                state = OrderState(row.state)
                wanted = proofs if state is S.PROOF_PENDING else refunds
                limit = self.max_batch * _BATCHES_PER_POST if state is S.PROOF_PENDING else _REFUNDS_PER_POST
                if row.id in exclude or len(wanted) >= limit:
                    continue
                wanted.append(row)
            # one UPDATE per state for all the rows chosen, each only if still in the state it was read in
            taken = claim_many(
                session,
                [r.id for r in proofs],
                self.owner,
                states=[S.PROOF_PENDING],
                ttl=self.lease_ttl,
                now=now,
            ) | claim_many(
                session,
                [r.id for r in refunds],
                self.owner,
                states=[S.REFUND_PENDING],
                ttl=self.lease_ttl,
                now=now,
            )
        return [r for r in proofs if r.id in taken], [r for r in refunds if r.id in taken]

    def _fn(self, name: str) -> RawFunction:
        """The escrow's function ``name``, encoded with ``eth_abi`` (looked up once)."""
        found = self._functions.get(name)
        if found is None:
            found = self._functions[name] = RawFunction.of(self.escrow.abi, name)
        return found

    def _refund_instead(self, rows: Sequence[Order]) -> int:
        """Move proofs that can never settle to ``failed_final``; the refund stage signs and posts them."""
        if not rows:
            return 0
        with self.sessions.begin() as session:
            for claimed in rows:
                row = session.get(Order, claimed.id)
                if row is None or row.state != S.PROOF_PENDING.value:
                    continue
                log.warning(
                    "order %s cannot be settled (fulfilled at %s, deadline %s, window closes %s): refunding",
                    row.id,
                    row.fulfilled_at,
                    row.fulfilment_deadline,
                    row.fulfilment_deadline + SETTLEMENT_GRACE,
                )
                transition(
                    session,
                    row,
                    S.FAILED_FINAL,
                    "proof cannot settle: completed after the deadline or the settlement window closed",
                    refund_reason=int(RefundReason.NOT_SETTLEABLE),
                )
        return len(rows)

    def _settle(self, batch: Batch) -> int:
        # Orders already closed on chain (e.g. the watcher has not caught up) are not sent again; the
        # escrow's signature threshold is read in the same batch of calls (one round trip, not two).
        rows, threshold = self._paid_on_chain_and_threshold(batch.rows)
        if not rows:
            return 0
        return self._send_settlement(rows, threshold)

    def _send_settlement(self, rows: Sequence[Order], threshold: int | None = None) -> int:
        """Send one settle/settleBatch for ``rows``; if it would revert, split it in halves and retry each,
        so whatever makes it revert holds up only the order that causes it. ``threshold``: the escrow's
        ``oracleThreshold`` read with the rows' status (None: read it here, as the halves do)."""
        batch = Batch(tuple(rows))
        orders = [order_from_row(r) for r in rows]
        fulfilments = [fulfilment_of(r) for r in rows]
        if len(rows) == 1:
            message = protocol.fulfilment_typed_data(self.proofs.domain, fulfilments[0])
            own = self._signed_by_authorised(rows[0].id, "proof_signature", message)
        else:
            own = (self.proofs.proof_key.address, self.proofs.batch_signature(batch))
        try:
            signers, signatures = self._with_cosigners(
                own, lambda c: c.sign_fulfilments(fulfilments), threshold
            )
        except CoSigningError as exc:
            rest = [r for r in rows if r.id not in exc.refused]
            if exc.refused and 0 < len(rest) < len(rows):
                # a co-signer refused some orders: the others must not wait for them (one bad order delays
                # no other); the refused ones stay for the next tick or the refund path
                log.warning(
                    "co-signers refused %s: settling the other %d without them",
                    sorted(exc.refused),
                    len(rest),
                )
                return self._send_settlement(rest)
            log.warning("settlement of %s waits for co-signatures: %s", batch.order_ids, exc)
            return 0
        if len(rows) == 1:
            data = self._fn("settle").encode(
                orders[0].as_ref_tuple(), fulfilments[0].as_tuple(), signers, signatures
            )
            purpose = "settle"
        else:
            data = self._fn("settleBatch").encode(
                [o.as_ref_tuple() for o in orders], [f.as_tuple() for f in fulfilments], signers, signatures
            )
            purpose = "settle_batch"
        call = RawCall(self.escrow.address, data)
        try:
            record = self.tx.send(purpose, batch.order_ids, call)
        except ContractRevert as exc:
            if len(rows) == 1:
                log.error("settle of %s would revert: %s", rows[0].id, exc)
                return 0
            half = len(rows) // 2
            log.warning("%s of %d orders would revert (%s): retrying in halves", purpose, len(rows), exc)
            return self._send_settlement(rows[:half]) + self._send_settlement(rows[half:])
        log.info("%s %s for %d orders", purpose, record.tx_hash, len(rows))
        return 1

    def _refund(self, row: Order) -> int:
        if not self._on_chain_paid(row):
            return 0
        reason = int(row.refund_reason or RefundReason.PROVIDER_REJECTED)
        message = protocol.refund_typed_data(self.proofs.domain, protocol.order_id_from_hex(row.id), reason)
        own = self._signed_by_authorised(row.id, "refund_signature", message)
        order_id = protocol.order_id_from_hex(row.id)
        try:
            signers, signatures = self._with_cosigners(own, lambda c: c.sign_refund(order_id, reason))
        except CoSigningError as exc:
            log.warning("refund of %s waits for co-signatures: %s", row.id, exc)
            return 0
        call = RawCall(
            self.escrow.address,
            self._fn("refund").encode(order_from_row(row).as_tuple(), reason, signers, signatures),
        )
        try:
            self.tx.send("refund", [row.id], call)
        except ContractRevert as exc:
            log.error("refund of %s would revert: %s", row.id, exc)
            return 0
        return 1

    def _with_cosigners(
        self,
        own: tuple[str, bytes],
        ask: Callable[[CoSigner], tuple[str, bytes]],
        threshold: int | None = None,
    ) -> tuple[list[str], list[bytes]]:
        """``own`` signature plus, while the escrow's ``oracleThreshold`` asks for more, signatures from the
        co-signers (other proof keys in other processes), each checked to be authorised and distinct; the
        signers come out ascending, as the escrow requires. Raises CoSigningError when too few answer: the
        order stays claimable for the next tick."""
        if threshold is None:
            (result,) = call_batch(self.escrow.w3, self.escrow.address, [_ORACLE_THRESHOLD])
            threshold = int(decode(["uint8"], result)[0])
        collected = {own[0]: own[1]}
        refused: set[str] = set()
        for cosigner in self.proofs.cosigners:
            if len(collected) >= threshold:
                break
            try:
                signer, signature = ask(cosigner)
            except Exception as exc:  # a co-signer down or refusing must not stop the others
                log.warning("co-signer %s did not sign: %s", cosigner, exc)
                if isinstance(exc, CoSignerRefusedError):
                    refused.update(r.order_id for r in exc.refusals)
                continue
            signer = Web3.to_checksum_address(signer)
            if signer in collected or not self.escrow.functions.isOracleSigner(signer).call():
                log.warning(
                    "co-signer %s answered for %s, which is not another authorised signer", cosigner, signer
                )
                continue
            collected[signer] = signature
        if len(collected) < threshold:
            raise CoSigningError(f"{len(collected)} of {threshold} oracle signatures", frozenset(refused))
        ordered = sorted(collected, key=lambda a: int(a, 16))
        return ordered, [collected[a] for a in ordered]

    def _signed_by_authorised(
        self, order_id: str, column: str, message: SignableMessage
    ) -> tuple[str, bytes]:
        """The stored signature of ``order_id`` (``column``) with the address that made it, recovered from
        the signature itself, while the escrow still authorises that signer; otherwise (the key was rotated
        out) the message re-signed with the current proof key, which replaces the stored signature. Posting
        the stored signature under the current key's address would revert after every rotation."""
        with self.sessions() as session:
            row = session.get(Order, order_id)
            stored = getattr(row, column, None) if row is not None else None
        if stored:
            signature = to_bytes(hexstr=stored)
            try:
                signer: str | None = protocol.recover_signer(message, signature)
            except Exception:  # a malformed stored signature: re-sign below
                signer = None
            if signer is not None and self.escrow.functions.isOracleSigner(signer).call():
                return signer, signature
        key = self.proofs.proof_key
        signature = protocol.sign(key.key, message)
        log.info(
            "re-signing %s of %s with %s: its signer is no longer authorised", column, order_id, key.address
        )
        with self.sessions.begin() as session:
            row = session.get(Order, order_id)
            if row is not None:
                setattr(row, column, Web3.to_hex(signature))
        return key.address, signature

    def _paid_on_chain_and_threshold(self, rows: Sequence[Order]) -> tuple[list[Order], int | None]:
        """``_paid_on_chain`` of ``rows`` and the escrow's ``oracleThreshold``, in one batch of calls."""
        if not rows:
            return [], None
        results = call_batch(self.escrow.w3, self.escrow.address, [*_status_calls(rows), _ORACLE_THRESHOLD])
        threshold = int(decode(["uint8"], results[-1])[0])
        return self._still_paid(rows, results[:-1]), threshold

    @staticmethod
    def _still_paid(rows: Sequence[Order], results: Sequence[bytes]) -> list[Order]:
        return [
            row
            for row, result in zip(rows, results, strict=True)
            if protocol.OrderStatus(decode(["uint8"], result)[0]) is protocol.OrderStatus.PAID
        ]

    def _paid_on_chain(self, rows: Sequence[Order]) -> list[Order]:
        """The rows still ``Paid`` on chain, read in one raw JSON-RPC batch of ``orderStatus`` calls (one
        ``eth_call`` round trip per order was a fifth of the oracle's time at saturation, and web3's
        contract calls another tenth: docs/benchmarks.md)."""
        if not rows:
            return []
        return self._still_paid(rows, call_batch(self.escrow.w3, self.escrow.address, _status_calls(rows)))

    def _on_chain_paid(self, row: Order) -> bool:
        return bool(self._paid_on_chain([row]))


def settleable(row: Order, chain_now: int | None) -> bool:
    """Whether ``row``'s signed proof can still settle: its ``fulfilledAt`` is not after the deadline and
    (when the chain's time is known) the settlement window has not closed."""
    if row.fulfilled_at is None or row.fulfilled_at > row.fulfilment_deadline:
        return False
    return chain_now is None or chain_now <= row.fulfilment_deadline + SETTLEMENT_GRACE


class MerchantSweep:
    """Pays merchants' escrow balances out to their payout addresses, so merchants are paid without
    acting. ``withdraw`` always pays the account's payout address, and only the account, that address or
    an authorised sweeper may call it: the deployment makes the oracle's gas key a sweeper
    (``setSweeper``). Call it on a schedule."""

    def __init__(
        self, escrow: Contract, tx: TxManager, merchants: Sequence[str], tokens: Sequence[str]
    ) -> None:
        self.escrow = escrow
        self.tx = tx
        self.merchants = list(merchants)
        self.tokens = list(tokens)

    def __call__(self) -> int:
        """Sends one ``withdraw`` per (merchant, token) with a balance; returns how many were sent."""
        sent = 0
        for merchant in self.merchants:
            for token in self.tokens:
                # a payout leaves one base unit so the slot never returns to zero (docs/gas.md)
                if self.escrow.functions.balanceOf(merchant, token).call() <= 1:
                    continue
                try:
                    self.tx.send("withdraw", [], self.escrow.functions.withdraw(merchant, token))
                    sent += 1
                except Exception as exc:  # one merchant's failing payout must not stop the others
                    log.warning("sweep of merchant %s token %s failed: %s", merchant, token, exc)
        return sent


def _status_calls(rows: Sequence[Order]) -> list[bytes]:
    """The escrow's ``orderStatus`` call data of each of ``rows``."""
    return [encode_call(_ORDER_STATUS, ("bytes32",), (protocol.order_id_from_hex(r.id),)) for r in rows]
