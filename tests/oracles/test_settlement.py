"""Posting settlements against a real DevNode (over HTTP JSON-RPC) and a migrated SQLite ledger: one
order that can no longer settle never holds up the others, and is refunded instead of being retried
for ever; a batch the escrow would revert is split and retried.

The orders are paid on chain by a dev account and written to the ledger in ``proof_pending`` with
their signed proofs, as the oracle would have left them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from cardless import protocol
from cardless.devchain.deploy import deploy_dev_system
from cardless.ledger import Order as OrderRow
from cardless.ledger import OrderState
from cardless.protocol import ContractRevert, EscrowDomain, Fulfilment, Order, OrderStatus, RefundReason
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import Deployment
from cardless.protocol.reverts import RevertDecoder
from oracles.proofs import Proofs
from oracles.settlement import Settlement
from oracles.txmanager import TxManager
from tests.support.node import rolled_back
from tests.support.orders import order_row

pytestmark = pytest.mark.slow  # pays ~50 orders on a node over HTTP: a few seconds

S = OrderState
QUOTE_KEY = Account.from_key(keccak(b"settlement-test-quote"))
ORACLE_KEY = Account.from_key(keccak(b"settlement-test-oracle"))
GAS_KEY = Account.from_key(keccak(b"settlement-test-gas"))
ESCROW_ABI = load_artifact("CardlessEscrow").abi
TOKEN_ABI = load_artifact("test-helpers/MockERC20").abi


@pytest.fixture(scope="module")
def system(w3: Web3) -> Deployment:
    deployment = deploy_dev_system(w3, quote_signer=QUOTE_KEY.address, oracle_signer=ORACLE_KEY.address)
    tx = w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": GAS_KEY.address, "value": 10**19})
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    return deployment


@pytest.fixture(autouse=True)
def _rolled_back(w3: Web3, system: Deployment) -> Iterator[None]:
    with rolled_back(w3):
        yield


@pytest.fixture
def escrow(w3: Web3, system: Deployment) -> Contract:
    return w3.eth.contract(address=system.escrow, abi=ESCROW_ABI)


@pytest.fixture
def domain(w3: Web3, system: Deployment) -> EscrowDomain:
    return EscrowDomain(w3.eth.chain_id, system.escrow)


def _now(w3: Web3) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])


def _pay(w3: Web3, escrow: Contract, domain: EscrowDomain, system: Deployment, count: int) -> list[Order]:
    buyer, merchant = w3.eth.accounts[2], w3.eth.accounts[5]
    usdc = w3.eth.contract(address=system.token("tUSDC").address, abi=TOKEN_ABI)
    usdc.functions.approve(escrow.address, 2**256 - 1).transact({"from": buyer})
    now = _now(w3)
    orders = []
    for _ in range(count):
        order = Order(
            order_id=os.urandom(32),
            buyer=buyer,
            merchant=merchant,
            token=usdc.address,
            amount=1_000_000,
            fee_bps=250,
            quote_expiry=now + 600,
            fulfilment_deadline=now + 3_600,
            sku_hash=keccak(b"sku:genshin-60"),
            account_commitment=os.urandom(32),
        )
        quote = protocol.sign(QUOTE_KEY.key, protocol.quote_typed_data(domain, order))
        # gas given: estimating it would execute each payment several more times
        escrow.functions.pay(order.as_tuple(), QUOTE_KEY.address, quote).transact(
            {"from": buyer, "gas": 300_000}
        )
        orders.append(order)
    return orders


def _ledger_rows(
    sessions: sessionmaker[Session], domain: EscrowDomain, orders: list[Order], fulfilled_at: dict[bytes, int]
) -> list[str]:
    """The orders in ``proof_pending``, each with its signed single proof, as the proof stage leaves them."""
    ids = []
    with sessions.begin() as session:
        for order in orders:
            fulfilment = Fulfilment(
                order.order_id, keccak(b"receipt:" + order.order_id), fulfilled_at[order.order_id]
            )
            signature = protocol.sign(ORACLE_KEY.key, protocol.fulfilment_typed_data(domain, fulfilment))
            row = order_row(
                state=S.PROOF_PENDING,
                id="0x" + order.order_id.hex(),
                chain_id=domain.chain_id,
                escrow=domain.verifying_contract,
                buyer=order.buyer,
                merchant=order.merchant,
                token=order.token,
                amount=order.amount,
                fee_bps=order.fee_bps,
                quote_expiry=order.quote_expiry,
                fulfilment_deadline=order.fulfilment_deadline,
                sku_hash="0x" + order.sku_hash.hex(),
                account_commitment="0x" + order.account_commitment.hex(),
                receipt_hash="0x" + fulfilment.receipt_hash.hex(),
                fulfilled_at=fulfilment.fulfilled_at,
                proof_signature="0x" + signature.hex(),
            )
            session.add(row)
            ids.append(row.id)
    return ids


def _settlement(
    w3: Web3, escrow: Contract, domain: EscrowDomain, ledger: sessionmaker[Session], tx: TxManager
) -> Settlement:
    return Settlement(
        ledger,
        escrow,
        tx,
        Proofs(ledger, ORACLE_KEY, domain),
        owner="worker-a",
        lease_ttl=timedelta(seconds=30),
        max_batch=50,
    )


def _state(ledger: sessionmaker[Session], order_id: str) -> tuple[str, int | None]:
    with ledger() as session:
        row = session.get(OrderRow, order_id)
        assert row is not None
        return row.state, row.refund_reason


def test_one_late_order_in_a_batch_of_50_does_not_hold_up_the_other_49(
    w3: Web3, escrow: Contract, domain: EscrowDomain, system: Deployment, ledger: sessionmaker[Session]
) -> None:
    """The late order (its provider completed after the deadline: the escrow will never accept its proof)
    is refunded; the other 49 settle in the same call, in one settleBatch. v1's worker left the late
    order in ``proof_pending`` for ever, and v1's escrow reverted any batch that carried it."""
    orders = _pay(w3, escrow, domain, system, 50)
    late = orders[17]
    now = _now(w3)
    fulfilled = {o.order_id: now for o in orders} | {late.order_id: late.fulfilment_deadline + 1}
    ids = _ledger_rows(ledger, domain, orders, fulfilled)
    tx = TxManager(w3, ledger, GAS_KEY, RevertDecoder([ESCROW_ABI, TOKEN_ABI]))
    settlement = _settlement(w3, escrow, domain, ledger, tx)

    assert settlement.post(_now(w3)) == 2  # one settleBatch sent, one order turned into a refund
    confirmed = tx.confirm()

    assert [(c.purpose, len(c.order_ids)) for c in confirmed] == [("settle_batch", 49)]
    statuses = [escrow.functions.orderStatus(o.order_id).call() for o in orders]
    assert statuses.count(OrderStatus.SETTLED) == 49 and statuses[17] == OrderStatus.PAID
    assert _state(ledger, ids[17]) == (S.FAILED_FINAL.value, int(RefundReason.NOT_SETTLEABLE))

    # The next tick's stages refund it on chain.
    assert settlement.proofs.sign_refunds() == 1
    assert settlement.post(_now(w3)) == 1
    tx.confirm()
    assert escrow.functions.orderStatus(late.order_id).call() == OrderStatus.REFUNDED


def test_an_order_past_its_settlement_window_is_refunded_not_posted(
    w3: Web3, escrow: Contract, domain: EscrowDomain, system: Deployment, ledger: sessionmaker[Session]
) -> None:
    (order,) = _pay(w3, escrow, domain, system, 1)
    (order_id,) = _ledger_rows(ledger, domain, [order], {order.order_id: _now(w3)})
    tx = TxManager(w3, ledger, GAS_KEY, RevertDecoder([ESCROW_ABI, TOKEN_ABI]))
    settlement = _settlement(w3, escrow, domain, ledger, tx)

    assert settlement.post(order.fulfilment_deadline + protocol.SETTLEMENT_GRACE + 1) == 1
    assert tx.pending() == []
    assert _state(ledger, order_id) == (S.FAILED_FINAL.value, int(RefundReason.NOT_SETTLEABLE))


class _RefusingNode(TxManager):
    """The real transaction manager, except that the node refuses any settlement carrying ``poison``
    together with other orders (a revert cause the escrow does not have today: the test is for the
    worker's splitting, whatever the cause)."""

    poison: str = ""

    def send(self, purpose: str, order_ids: Any, call: Any) -> Any:
        if self.poison in order_ids and len(order_ids) > 1:
            raise ContractRevert("Refused", (), b"")
        return super().send(purpose, order_ids, call)


def test_a_reverting_batch_is_split_and_retried(
    w3: Web3, escrow: Contract, domain: EscrowDomain, system: Deployment, ledger: sessionmaker[Session]
) -> None:
    orders = _pay(w3, escrow, domain, system, 8)
    ids = _ledger_rows(ledger, domain, orders, dict.fromkeys((o.order_id for o in orders), _now(w3)))
    tx = _RefusingNode(w3, ledger, GAS_KEY, RevertDecoder([ESCROW_ABI, TOKEN_ABI]))
    tx.poison = ids[5]
    settlement = _settlement(w3, escrow, domain, ledger, tx)

    # 8 -> [0-3] sent, [4-7] refused -> [4,5] refused -> [4] sent, [5] sent alone; [6,7] sent
    assert settlement.post(_now(w3)) == 4
    tx.confirm()

    assert [escrow.functions.orderStatus(o.order_id).call() for o in orders] == [OrderStatus.SETTLED] * 8


# ---------------------------------------------------------------------- key rotation

NEW_ORACLE_KEY = Account.from_key(keccak(b"settlement-test-oracle-rotated"))


def _rotated(w3: Web3, escrow: Contract, *, revoke_old: bool) -> None:
    owner = w3.eth.accounts[0]
    _add_oracle_signer(w3, escrow, NEW_ORACLE_KEY.address)
    if revoke_old:
        escrow.functions.revokeOracleSigner(ORACLE_KEY.address).transact({"from": owner})


def _add_oracle_signer(w3: Web3, escrow: Contract, signer: str) -> None:
    """Announce and execute AddOracleSigner (the dev chain's admin delay is 0)."""
    owner = w3.eth.accounts[0]
    value = bytes(12) + bytes.fromhex(signer[2:])
    receipt = w3.eth.wait_for_transaction_receipt(
        escrow.functions.scheduleAdminChange(0, value).transact({"from": owner})
    )
    (scheduled,) = escrow.events.AdminChangeScheduled().process_receipt(receipt, errors=DISCARD)
    escrow.functions.executeAdminChange(0, value, scheduled.args.eta).transact({"from": owner})


def _after_rotation(
    w3: Web3, escrow: Contract, domain: EscrowDomain, ledger: sessionmaker[Session], tx: TxManager
) -> Settlement:
    """The oracle restarted with the new proof key."""
    settlement = _settlement(w3, escrow, domain, ledger, tx)
    settlement.proofs = Proofs(ledger, NEW_ORACLE_KEY, domain)
    return settlement


@pytest.mark.parametrize("revoke_old", [False, True])
def test_a_stored_proof_posts_after_rotation(
    w3: Web3,
    escrow: Contract,
    domain: EscrowDomain,
    system: Deployment,
    ledger: sessionmaker[Session],
    revoke_old: bool,
) -> None:
    """v1 posted the stored signature under the *current* key's address: after a rotation every stored
    proof reverted InvalidSignature every tick. Now it posts under the address that signed it while that
    signer is authorised, and is re-signed with the current key once it is not."""
    (order,) = _pay(w3, escrow, domain, system, 1)
    (order_id,) = _ledger_rows(ledger, domain, [order], {order.order_id: _now(w3)})  # signed by the old key
    _rotated(w3, escrow, revoke_old=revoke_old)
    tx = TxManager(w3, ledger, GAS_KEY, RevertDecoder([ESCROW_ABI, TOKEN_ABI]))

    assert _after_rotation(w3, escrow, domain, ledger, tx).post(_now(w3)) == 1
    (record,) = tx.confirm()

    assert escrow.functions.orderStatus(order.order_id).call() == OrderStatus.SETTLED
    receipt = w3.eth.get_transaction_receipt(record.tx_hash)
    (attested,) = escrow.events.FulfilmentsAttested().process_receipt(receipt, errors=DISCARD)
    assert attested.args.signers == [NEW_ORACLE_KEY.address if revoke_old else ORACLE_KEY.address]
    with ledger() as session:
        row = session.get(OrderRow, order_id)
        assert row is not None and row.proof_signature is not None
        message = protocol.fulfilment_typed_data(
            domain,
            Fulfilment(
                order.order_id,
                receipt_hash=keccak(b"receipt:" + order.order_id),
                fulfilled_at=row.fulfilled_at or 0,
            ),
        )
        assert (
            protocol.recover_signer(message, bytes.fromhex(row.proof_signature[2:]))
            == attested.args.signers[0]
        )


def test_a_stored_refund_is_re_signed_when_its_signer_was_revoked(
    w3: Web3, escrow: Contract, domain: EscrowDomain, system: Deployment, ledger: sessionmaker[Session]
) -> None:
    (order,) = _pay(w3, escrow, domain, system, 1)
    (order_id,) = _ledger_rows(ledger, domain, [order], {order.order_id: _now(w3)})
    with ledger.begin() as session:  # the oracle authorised a refund with the old key
        row = session.get(OrderRow, order_id)
        assert row is not None
        row.state = S.REFUND_PENDING.value
        row.refund_reason = int(RefundReason.PROVIDER_REJECTED)
        message = protocol.refund_typed_data(domain, order.order_id, row.refund_reason)
        row.refund_signature = "0x" + protocol.sign(ORACLE_KEY.key, message).hex()
    _rotated(w3, escrow, revoke_old=True)
    tx = TxManager(w3, ledger, GAS_KEY, RevertDecoder([ESCROW_ABI, TOKEN_ABI]))

    assert _after_rotation(w3, escrow, domain, ledger, tx).post(_now(w3)) == 1
    tx.confirm()

    assert escrow.functions.orderStatus(order.order_id).call() == OrderStatus.REFUNDED
