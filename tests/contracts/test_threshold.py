"""k-of-n oracle signatures (issue 8, step 6): with threshold k, settle, settleBatch and refund need k
distinct authorised signers, listed strictly ascending, each with a valid signature over the same digest.
In v1 one stolen oracle key could settle undelivered orders or refund delivered ones."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_utils import keccak

from cardless.protocol import OrderStatus, fulfilment_typed_data
from tests.contracts.harness import AdminAction, EscrowEnv

SECOND = Account.from_key(keccak(b"threshold-test-second-oracle"))
THIRD = Account.from_key(keccak(b"threshold-test-third-oracle"))


def _two_of_n(env: EscrowEnv, *extra: Account) -> list[Account]:
    for key in (SECOND, *extra):
        env.add_oracle_signer(key.address)
    receipt = env.set_oracle_threshold(2)
    (event,) = env.events(receipt, "OracleThresholdSet")
    assert event.args.threshold == 2
    assert env.escrow.functions.oracleThreshold().call() == 2
    return [env.oracle_key, SECOND, *extra]


def _ascending(*keys: Account) -> list[str]:
    return sorted((k.address for k in keys), key=lambda a: int(a, 16))


def test_two_signatures_settle_refund_and_batch(env: EscrowEnv) -> None:
    keys = _two_of_n(env)
    single, refunded, *batch = (env.make_order() for _ in range(5))
    for order in (single, refunded, *batch):
        env.pay(order)

    receipt = env.settle(single, keys=keys)
    (attested,) = env.events(receipt, "FulfilmentsAttested")
    assert attested.args.signers == _ascending(*keys)
    receipt = env.refund(refunded, 4, keys=keys)
    (event,) = env.events(receipt, "OrderRefunded")
    assert (event.args.reasonCode, event.args.signers) == (4, _ascending(*keys))
    receipt = env.settle_batch(batch, keys=keys)
    (attested,) = env.events(receipt, "FulfilmentsAttested")
    assert (attested.args.signers, attested.args.orders) == (_ascending(*keys), 3)

    assert [env.status(o) for o in (single, refunded, *batch)] == [
        OrderStatus.SETTLED,
        OrderStatus.REFUNDED,
        *[OrderStatus.SETTLED] * 3,
    ]


def test_one_stolen_key_alone_cannot_settle_or_refund(env: EscrowEnv) -> None:
    _two_of_n(env)
    order = env.make_order()
    env.pay(order)

    for key in (env.oracle_key, SECOND):
        with env.reverts("NotEnoughSignatures", 1, 1, 2):
            env.settle(order, key=key, signer=key.address)
        with env.reverts("NotEnoughSignatures", 1, 1, 2):
            env.refund(order, key=key, signer=key.address)
        with env.reverts("NotEnoughSignatures", 1, 1, 2):
            env.settle_batch([order], key=key, signer=key.address)
    assert env.status(order) == OrderStatus.PAID
    assert env.token_balance(order.token, order.buyer) == 0


def test_the_same_signer_twice_or_out_of_order_is_refused(env: EscrowEnv) -> None:
    keys = _two_of_n(env)
    order = env.make_order()
    env.pay(order)
    fulfilment = env.fulfilment(order)
    message = fulfilment_typed_data(env.domain, fulfilment)
    low, high = sorted(keys, key=lambda k: int(k.address, 16))
    sig = {k.address: env.oracle_sign(message, k) for k in keys}

    def post(signers: list[str], signatures: list[bytes]) -> None:
        call = env.escrow.functions.settle(order.as_ref_tuple(), fulfilment.as_tuple(), signers, signatures)
        env.send(call, env.bystander)

    with env.reverts("SignersNotAscending", low.address, low.address):
        post([low.address, low.address], [sig[low.address]] * 2)
    with env.reverts("SignersNotAscending", high.address, low.address):
        post([high.address, low.address], [sig[high.address], sig[low.address]])
    with env.reverts("NotEnoughSignatures", 2, 1, 2):
        post([low.address, high.address], [sig[low.address]])
    with env.reverts("InvalidSignature"):  # a valid signature under the wrong signer
        post([low.address, high.address], [sig[high.address], sig[low.address]])
    post([low.address, high.address], [sig[low.address], sig[high.address]])
    assert env.status(order) == OrderStatus.SETTLED


def test_an_unauthorised_second_signer_does_not_count(env: EscrowEnv) -> None:
    _two_of_n(env)
    order = env.make_order()
    env.pay(order)
    with env.reverts("UnauthorisedOracleSigner", THIRD.address):
        env.settle(order, keys=[env.oracle_key, THIRD])


def test_threshold_bounds_and_revocation_below_it(env: EscrowEnv) -> None:
    with env.reverts("InvalidThreshold", 2, 1):  # one signer: 2-of-1 would stop settlement
        env.set_oracle_threshold(2)
    with env.reverts("InvalidAdminValue"):
        env.send(
            env.escrow.functions.scheduleAdminChange(AdminAction.SET_ORACLE_THRESHOLD, bytes(32)), env.owner
        )
    keys = _two_of_n(env, THIRD)
    order, stranded = env.make_order(), env.make_order(quote_ttl=60, deadline_ttl=120)
    env.pay(order)
    env.pay(stranded)

    # revoking one of three keeps 2-of-2 working; a new signer gets the current threshold too
    env.send(env.escrow.functions.revokeOracleSigner(THIRD.address), env.owner)
    assert env.escrow.functions.oracleSignerCount().call() == 2
    env.settle(order, keys=keys[:2])
    # below the threshold nothing settles or refunds, and the buyer reclaims after the window
    env.send(env.escrow.functions.revokeOracleSigner(SECOND.address), env.owner)
    with env.reverts("NotEnoughSignatures", 1, 1, 2):
        env.refund(stranded)
    env.chain.warp(env.reclaim_opens(stranded))
    env.reclaim(stranded)
    assert env.token_balance(stranded.token, stranded.buyer) == stranded.amount

    env.add_oracle_signer(SECOND.address)
    env.set_oracle_threshold(1)  # rewrites every signer's copy
    late = env.make_order()
    env.pay(late)
    env.settle(late, key=SECOND, signer=SECOND.address)
    assert env.status(late) == OrderStatus.SETTLED


@pytest.mark.parametrize("k", [1, 2])
def test_initial_signers_and_threshold_come_from_the_constructor(env: EscrowEnv, k: int) -> None:
    from cardless.devchain.chain import deploy_escrow

    escrow, _ = deploy_escrow(
        env.w3,
        owner=env.owner,
        fee_recipient=env.fee_recipient,
        fee_cap_bps=100,
        quote_signers=[env.quote_key.address],
        oracle_signers=[env.oracle_key.address, SECOND.address],
        tokens=[],
        oracle_threshold=k,
    )
    assert escrow.functions.oracleThreshold().call() == k
    assert escrow.functions.oracleSignerCount().call() == 2
    assert escrow.functions.isOracleSigner(SECOND.address).call() is True
    assert escrow.functions.isQuoteSigner(env.quote_key.address).call() is True
