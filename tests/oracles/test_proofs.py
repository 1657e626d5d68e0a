"""Proofs and batches: ``fulfilledAt`` never claims the future, batches hold at most ``max_batch``
orders, and an order fulfilled after its deadline (which would revert the whole batch) is left out."""

from __future__ import annotations

import pytest
from eth_account import Account
from sqlalchemy.orm import Session, sessionmaker

from cardless import protocol
from cardless.ledger import OrderState
from cardless.protocol import EscrowDomain, Fulfilment
from oracles.proofs import Proofs, assemble_batches, fulfilment_of, proof_fulfilled_at
from tests.oracles._ledger import T0, add_order, get

S = OrderState
KEY = Account.from_key("0x" + "42" * 32)
DOMAIN = EscrowDomain(chain_id=31337, verifying_contract="0x" + "11" * 20)


def test_fulfilled_at_is_capped_at_chain_time() -> None:
    assert proof_fulfilled_at(T0 - 5, T0) == T0 - 5
    assert proof_fulfilled_at(T0 + 90, T0) == T0  # the provider's clock runs ahead of the chain's


def test_a_signed_proof_is_capped_at_chain_time_and_recovers_to_the_proof_key(
    ledger: sessionmaker[Session],
) -> None:
    ahead = add_order(ledger, state=S.SUCCEEDED, fulfilled_at=T0 + 90)
    behind = add_order(ledger, state=S.SUCCEEDED, fulfilled_at=T0 - 5)
    assert Proofs(ledger, KEY, DOMAIN).sign_fulfilments(chain_now=T0) == 2
    assert get(ledger, ahead).fulfilled_at == T0
    assert get(ledger, behind).fulfilled_at == T0 - 5
    row = get(ledger, ahead)
    assert row.state == S.PROOF_PENDING.value and row.proof_signature
    message = protocol.fulfilment_typed_data(DOMAIN, fulfilment_of(row))
    assert protocol.recover_signer(message, bytes.fromhex(row.proof_signature[2:])) == KEY.address


def test_refunds_are_authorised_with_their_reason(ledger: sessionmaker[Session]) -> None:
    order_id = add_order(ledger, state=S.FAILED_FINAL)
    assert Proofs(ledger, KEY, DOMAIN).sign_refunds() == 1
    row = get(ledger, order_id)
    assert row.state == S.REFUND_PENDING.value and row.refund_signature
    message = protocol.refund_typed_data(DOMAIN, bytes.fromhex(order_id[2:]), row.refund_reason or 0)
    assert protocol.recover_signer(message, bytes.fromhex(row.refund_signature[2:])) == KEY.address


def test_batches_hold_at_most_max_batch_in_order(ledger: sessionmaker[Session]) -> None:
    rows = [get(ledger, add_order(ledger, state=S.PROOF_PENDING)) for _ in range(7)]
    batches = assemble_batches(rows, max_batch=3)
    assert [len(b.rows) for b in batches] == [3, 3, 1]
    assert [i for b in batches for i in b.order_ids] == [r.id for r in rows]
    assert assemble_batches([], max_batch=3) == []
    with pytest.raises(ValueError, match="max_batch"):
        assemble_batches(rows, max_batch=0)


def test_orders_fulfilled_past_their_deadline_are_left_out(ledger: sessionmaker[Session]) -> None:
    on_time = get(ledger, add_order(ledger, state=S.PROOF_PENDING, deadline=T0, fulfilled_at=T0))
    late = get(ledger, add_order(ledger, state=S.PROOF_PENDING, deadline=T0, fulfilled_at=T0 + 1))
    also_on_time = get(ledger, add_order(ledger, state=S.PROOF_PENDING, fulfilled_at=T0 - 1))
    batches = assemble_batches([on_time, late, also_on_time], max_batch=2)
    assert [b.order_ids for b in batches] == [[on_time.id, also_on_time.id]]


def test_one_batch_signature_covers_every_fulfilment(ledger: sessionmaker[Session]) -> None:
    rows = [get(ledger, add_order(ledger, state=S.PROOF_PENDING)) for _ in range(3)]
    (batch,) = assemble_batches(rows, max_batch=5)
    signature = Proofs(ledger, KEY, DOMAIN).batch_signature(batch)
    message = protocol.batch_typed_data(DOMAIN, [fulfilment_of(r) for r in rows])
    assert protocol.recover_signer(message, signature) == KEY.address
    assert isinstance(fulfilment_of(rows[0]), Fulfilment)
