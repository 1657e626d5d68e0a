"""Proofs: turn a provider receipt into a signed fulfilment proof, authorise refunds, and assemble
settlement batches (docs/protocol.md).

- The proof's ``fulfilledAt`` is the provider's completion time capped at the chain's clock when the
  proof is signed: a provider clock running ahead must not make the proof claim the future.
- The escrow refuses ``fulfilledAt`` after the order's deadline (``FulfilledAfterDeadline``; a
  ``settleBatch`` skips the entry), so such an order is left out of every batch; the settlement stage
  refunds it (``oracles.settlement``). ``fulfilledAt`` is never moved back to the deadline: the proof
  would attest a time the receipt contradicts.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Protocol

from eth_account.messages import SignableMessage
from eth_account.signers.local import LocalAccount
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from cardless import protocol
from cardless.ledger.models import Order, OrderState, utcnow
from cardless.ledger.store import candidates, order_from_row
from cardless.ledger.transitions import transition
from cardless.protocol import EscrowDomain, Fulfilment, RefundReason
from oracles.failpoints import failpoint

__all__ = [
    "Batch",
    "CoSigner",
    "LocalCoSigner",
    "Proofs",
    "assemble_batches",
    "fulfilment_of",
    "proof_fulfilled_at",
]

log = logging.getLogger(__name__)
S = OrderState


def proof_fulfilled_at(completed_at: int, chain_now: int) -> int:
    """The ``fulfilledAt`` a proof signed at ``chain_now`` may claim."""
    return min(completed_at, chain_now)


def fulfilment_of(row: Order) -> Fulfilment:
    assert row.receipt_hash is not None and row.fulfilled_at is not None
    return Fulfilment(
        order_id=protocol.order_id_from_hex(row.id),
        receipt_hash=protocol.hash32_from_hex("receipt_hash", row.receipt_hash),
        fulfilled_at=row.fulfilled_at,
    )


@dataclasses.dataclass(frozen=True)
class Batch:
    """Orders settled by one transaction: ``settle`` for one, ``settleBatch`` for more."""

    rows: tuple[Order, ...]

    @property
    def order_ids(self) -> list[str]:
        return [r.id for r in self.rows]


def assemble_batches(rows: Sequence[Order], max_batch: int) -> list[Batch]:
    """Split signed proofs into batches of at most ``max_batch``, in the given order, leaving out every
    order whose ``fulfilledAt`` is past its deadline (the escrow would revert the batch for it)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, not {max_batch}")
    settleable: list[Order] = []
    for row in rows:
        if row.fulfilled_at is None or row.fulfilled_at > row.fulfilment_deadline:
            log.error(
                "order %s was fulfilled at %s, after its deadline %s: it cannot be settled",
                row.id,
                row.fulfilled_at,
                row.fulfilment_deadline,
            )
            continue
        settleable.append(row)
    return [Batch(tuple(settleable[i : i + max_batch])) for i in range(0, len(settleable), max_batch)]


class CoSigner(Protocol):
    """Another oracle proof key, held elsewhere (``oracles.cosigner``: a separate process), asked to sign what
    this oracle posts when the escrow's ``oracleThreshold`` is above 1 (k-of-n). It decides by itself
    whether to sign and may refuse (raise); it returns its address and a 65-byte signature."""

    def sign_fulfilments(self, fulfilments: Sequence[Fulfilment]) -> tuple[str, bytes]:
        """A ``Fulfilment`` proof for one, a ``FulfilmentBatch`` proof for more."""
        ...

    def sign_refund(self, order_id: bytes, reason_code: int) -> tuple[str, bytes]: ...


class LocalCoSigner:
    """A co-signer key in this process (tests, and single-host setups that still want two keys)."""

    def __init__(self, key: LocalAccount, domain: EscrowDomain) -> None:
        self.key, self.domain = key, domain

    def sign_fulfilments(self, fulfilments: Sequence[Fulfilment]) -> tuple[str, bytes]:
        return self.key.address, protocol.sign(self.key.key, fulfilments_message(self.domain, fulfilments))

    def sign_refund(self, order_id: bytes, reason_code: int) -> tuple[str, bytes]:
        message = protocol.refund_typed_data(self.domain, order_id, reason_code)
        return self.key.address, protocol.sign(self.key.key, message)


def fulfilments_message(domain: EscrowDomain, fulfilments: Sequence[Fulfilment]) -> SignableMessage:
    """The typed data ``settle`` (one fulfilment) or ``settleBatch`` (more) checks signatures over."""
    if len(fulfilments) == 1:
        return protocol.fulfilment_typed_data(domain, fulfilments[0])
    return protocol.batch_typed_data(domain, fulfilments)


class Proofs:
    """Signs with the proof key (never the gas key)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        proof_key: LocalAccount,
        domain: EscrowDomain,
        cosigners: Sequence[CoSigner] = (),
    ) -> None:
        self.sessions = sessions
        self.proof_key = proof_key
        self.domain = domain
        self.cosigners = list(cosigners)

    def sign_fulfilments(self, chain_now: int) -> int:
        """Stage: sign a fulfilment proof for every succeeded order (one transaction)."""
        changed = 0
        with self.sessions.begin() as session:
            for row in candidates(session, [S.SUCCEEDED], now=utcnow()):
                assert row.receipt_hash is not None and row.fulfilled_at is not None
                fulfilled_at = proof_fulfilled_at(row.fulfilled_at, chain_now)
                fulfilment = Fulfilment(
                    order_id=protocol.order_id_from_hex(row.id),
                    receipt_hash=protocol.hash32_from_hex("receipt_hash", row.receipt_hash),
                    fulfilled_at=fulfilled_at,
                )
                signature = protocol.sign(
                    self.proof_key.key, protocol.fulfilment_typed_data(self.domain, fulfilment)
                )
                transition(
                    session,
                    row,
                    S.PROOF_PENDING,
                    "fulfilment proof signed",
                    fulfilled_at=fulfilled_at,
                    proof_signature=Web3.to_hex(signature),
                )
                changed += 1
        if changed:
            failpoint("proof.after_sign_commit")
        return changed

    def sign_refunds(self) -> int:
        """Stage: sign a refund authorisation for every order that failed for good (one transaction)."""
        changed = 0
        with self.sessions.begin() as session:
            for row in candidates(session, [S.FAILED_FINAL], now=utcnow()):
                reason = row.refund_reason or int(RefundReason.PROVIDER_REJECTED)
                signature = protocol.sign(
                    self.proof_key.key,
                    protocol.refund_typed_data(self.domain, protocol.order_id_from_hex(row.id), reason),
                )
                transition(
                    session,
                    row,
                    S.REFUND_PENDING,
                    f"refund authorised (reason {RefundReason(reason).name})",
                    refund_reason=reason,
                    refund_signature=Web3.to_hex(signature),
                )
                changed += 1
        if changed:
            failpoint("refund.after_sign_commit")
        return changed

    def batch_signature(self, batch: Batch) -> bytes:
        """One signature over all of ``batch``'s fulfilments (``FulfilmentBatch``)."""
        fulfilments = [fulfilment_of(r) for r in batch.rows]
        return protocol.sign(self.proof_key.key, protocol.batch_typed_data(self.domain, fulfilments))

    @staticmethod
    def order_refs(batch: Batch) -> list[protocol.Order]:
        return [order_from_row(r) for r in batch.rows]
