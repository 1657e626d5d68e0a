"""refund(): the oracle's signed Refund(orderId, reasonCode) returns a failed order's payment to its buyer."""

from __future__ import annotations

import dataclasses

import pytest

from cardless.protocol import (
    NATIVE_TOKEN,
    EscrowDomain,
    Order,
    OrderStatus,
    RefundReason,
    fulfilment_typed_data,
    refund_typed_data,
)
from tests.contracts.harness import EscrowEnv


def _digest(env: EscrowEnv, order: Order, reason: int) -> bytes:
    return bytes(env.escrow.functions.refundDigest(order.order_id, reason).call())


def test_refund_erc20_pays_buyer_exactly(env: EscrowEnv) -> None:
    order = env.make_order(amount=12_345_678)
    env.pay(order)
    assert env.token_balance(order.token, order.buyer) == 0

    receipt = env.refund(order, RefundReason.PROVIDER_REJECTED)

    assert env.status(order) == OrderStatus.REFUNDED
    assert env.token_balance(order.token, order.buyer) == 12_345_678
    assert env.token_balance(order.token, env.escrow.address) == 0
    assert env.escrow_balance(order.buyer, order.token) == 0
    assert env.fee_balance(order.token) == 0
    assert env.events(receipt, "RefundDeferred") == []


def test_refund_native_pays_buyer_exactly(env: EscrowEnv) -> None:
    order = env.make_order(token=None, amount=10**16 + 1)
    env.pay(order)
    buyer_before = env.token_balance(NATIVE_TOKEN, order.buyer)
    escrow_before = env.token_balance(NATIVE_TOKEN, env.escrow.address)

    env.refund(order)  # submitted by a bystander, so the buyer pays no gas

    assert env.token_balance(NATIVE_TOKEN, order.buyer) - buyer_before == order.amount
    assert escrow_before - env.token_balance(NATIVE_TOKEN, env.escrow.address) == order.amount
    assert env.status(order) == OrderStatus.REFUNDED


def test_buyer_may_submit_its_own_refund(env: EscrowEnv) -> None:
    order = env.make_order(token=None, amount=10**16)
    env.pay(order)
    buyer_before = env.token_balance(NATIVE_TOKEN, order.buyer)

    receipt = env.refund(order, sender=order.buyer)

    assert env.token_balance(NATIVE_TOKEN, order.buyer) == (
        buyer_before + order.amount - env.gas_price_cost(receipt)
    )


@pytest.mark.parametrize("reason", [RefundReason.OUT_OF_STOCK, RefundReason.OPERATOR, 0, 2**16 - 1])
def test_reason_code_and_signer_in_event(env: EscrowEnv, reason: int) -> None:
    order = env.make_order()
    env.pay(order)

    receipt = env.refund(order, reason)

    (event,) = env.events(receipt, "OrderRefunded")
    assert bytes(event.args.orderId) == order.order_id
    assert event.args.reasonCode == reason
    assert event.args.signers == [env.oracle_key.address]
    assert env.token_balance(order.token, order.buyer) == order.amount


def test_refund_replay_rejected(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    env.refund(order)

    with env.reverts("OrderNotPaid", order.order_id, OrderStatus.REFUNDED):
        env.refund(order)

    assert env.token_balance(order.token, order.buyer) == order.amount


def test_settled_order_cannot_be_refunded(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    env.settle(order)

    with env.reverts("OrderNotPaid", order.order_id, OrderStatus.SETTLED):
        env.refund(order)

    assert env.token_balance(order.token, order.buyer) == 0
    assert env.escrow_balance(order.merchant, order.token) == order.merchant_amount


def test_unknown_order_rejected(env: EscrowEnv) -> None:
    order = env.make_order()

    with env.reverts("OrderNotPaid", order.order_id, OrderStatus.NONE):
        env.refund(order)


def test_tampered_order_rejected(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    # Redirecting the refund to another wallet changes the order, so it no longer matches the stored digest.
    redirected = dataclasses.replace(order, buyer=env.bystander)

    with env.reverts("OrderMismatch", order.order_id):
        env.refund(redirected)

    assert env.token_balance(order.token, env.bystander) == 0
    assert env.token_balance(order.token, env.escrow.address) == order.amount


def test_unauthorised_signer_rejected(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    intruder = env.chain.accounts[9]

    with env.reverts("UnauthorisedOracleSigner", intruder.address):
        env.refund(order, key=intruder, signer=intruder.address)

    assert env.token_balance(order.token, order.buyer) == 0


def test_wrong_key_for_authorised_signer_rejected(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)

    with env.reverts("InvalidSignature", env.oracle_key.address, _digest(env, order, 1)):
        env.refund(order, 1, key=env.chain.accounts[9])

    assert env.status(order) == OrderStatus.PAID
    assert env.token_balance(order.token, order.buyer) == 0


@pytest.mark.parametrize("forged", ["other reason", "other chain", "fulfilment proof"])
def test_signature_over_another_message_rejected(env: EscrowEnv, forged: str) -> None:
    order = env.make_order()
    env.pay(order)
    if forged == "other reason":
        message = refund_typed_data(env.domain, order.order_id, 2)
    elif forged == "other chain":
        message = refund_typed_data(
            EscrowDomain(env.domain.chain_id + 1, env.escrow.address), order.order_id, 1
        )
    else:
        message = fulfilment_typed_data(env.domain, env.fulfilment(order))
    call = env.escrow.functions.refund(
        order.as_tuple(), 1, [env.oracle_key.address], [env.oracle_sign(message)]
    )

    with env.reverts("InvalidSignature", env.oracle_key.address, _digest(env, order, 1)):
        env.send(call, env.bystander)

    assert env.token_balance(order.token, order.buyer) == 0


def test_refund_works_while_paused(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    env.send(env.escrow.functions.pause(), env.owner)

    env.refund(order)

    assert env.token_balance(order.token, order.buyer) == order.amount
    assert env.token_balance(order.token, env.escrow.address) == 0


def test_contract_buyer_that_accepts_ether_is_paid_directly(env: EscrowEnv) -> None:
    wallet = env.deploy_helper("RevertingReceiver")
    env.send(wallet.functions.setRefusing(False), env.owner)
    order = env.make_order(buyer=wallet.address, token=None, amount=10**16)
    env.pay_from_contract(wallet, order)

    receipt = env.refund(order)

    assert env.events(receipt, "RefundDeferred") == []
    assert env.token_balance(NATIVE_TOKEN, wallet.address) == order.amount
    assert env.escrow_balance(wallet.address, NATIVE_TOKEN) == 0


def test_refund_to_reverting_buyer_is_credited_then_withdrawn(env: EscrowEnv) -> None:
    wallet = env.deploy_helper("RevertingReceiver")  # refuses ETH until told otherwise
    order = env.make_order(buyer=wallet.address, token=None, amount=10**16 + 7)
    env.pay_from_contract(wallet, order)
    escrow_before = env.token_balance(NATIVE_TOKEN, env.escrow.address)

    receipt = env.refund(order, RefundReason.INVALID_ACCOUNT)

    assert env.status(order) == OrderStatus.REFUNDED
    (deferred,) = env.events(receipt, "RefundDeferred")
    assert bytes(deferred.args.orderId) == order.order_id
    assert (deferred.args.buyer, deferred.args.token, deferred.args.amount) == (
        wallet.address,
        NATIVE_TOKEN,
        order.amount,
    )
    assert env.escrow_balance(wallet.address, NATIVE_TOKEN) == order.amount
    assert env.token_balance(NATIVE_TOKEN, wallet.address) == 0
    assert env.token_balance(NATIVE_TOKEN, env.escrow.address) == escrow_before

    with env.reverts("Refused"):  # still refusing: the withdrawal fails and the credit stays
        env.withdraw(wallet.address, NATIVE_TOKEN)
    assert env.escrow_balance(wallet.address, NATIVE_TOKEN) == order.amount

    env.send(wallet.functions.setRefusing(False), env.owner)
    env.withdraw(wallet.address, NATIVE_TOKEN)

    assert env.token_balance(NATIVE_TOKEN, wallet.address) == order.amount - 1  # a payout keeps 1 unit
    assert env.escrow_balance(wallet.address, NATIVE_TOKEN) == 1
    assert env.token_balance(NATIVE_TOKEN, env.escrow.address) == escrow_before - order.amount + 1


def test_refund_to_blacklisted_buyer_is_credited_then_withdrawn(env: EscrowEnv) -> None:
    token = env.deploy_helper("BlacklistToken")
    env.allow_token(token)
    order = env.make_order(token=token, amount=5_000_000)
    env.pay(order)
    env.send(token.functions.setBlacklisted(order.buyer, True), env.owner)

    receipt = env.refund(order)

    (deferred,) = env.events(receipt, "RefundDeferred")
    assert (deferred.args.buyer, deferred.args.token, deferred.args.amount) == (
        order.buyer,
        token.address,
        order.amount,
    )
    assert env.escrow_balance(order.buyer, token.address) == order.amount
    assert env.token_balance(token.address, env.escrow.address) == order.amount
    assert env.token_balance(token.address, order.buyer) == 0

    with env.reverts("Blacklisted", order.buyer):
        env.withdraw(order.buyer, token.address)

    env.send(token.functions.setBlacklisted(order.buyer, False), env.owner)
    env.withdraw(order.buyer, token.address)

    assert env.token_balance(token.address, order.buyer) == order.amount - 1  # a payout keeps 1 unit
    assert env.token_balance(token.address, env.escrow.address) == 1
    assert env.escrow_balance(order.buyer, token.address) == 1


def test_blacklisted_buyer_can_redirect_its_deferred_refund(env: EscrowEnv) -> None:
    token = env.deploy_helper("BlacklistToken")
    env.allow_token(token)
    order = env.make_order(token=token, amount=5_000_000)
    env.pay(order)
    env.send(token.functions.setBlacklisted(order.buyer, True), env.owner)
    env.refund(order)
    fresh_wallet = env.chain.accounts[9].address

    env.set_payout(order.buyer, fresh_wallet)
    env.withdraw(order.buyer, token.address)

    assert env.token_balance(token.address, fresh_wallet) == order.amount - 1
    assert env.escrow_balance(order.buyer, token.address) == 1
