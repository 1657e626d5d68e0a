"""Misbehaving tokens and receivers through every token path (the test-helpers folder, Solady style).

NoReturnToken (USDT-style, no bool), FeeOnTransferToken (burns 1%), ReentrantToken (calls back into the
escrow on every transfer), BlacklistToken (USDC-style) and RevertingReceiver (a contract refusing ETH).
Each token is deployed per test and allow-listed first.
"""

from __future__ import annotations

from typing import Any

import pytest
from web3.contract import Contract

from cardless.protocol import NATIVE_TOKEN, Order, OrderStatus
from tests.contracts.harness import EscrowEnv


def _token(env: EscrowEnv, name: str) -> Contract:
    token = env.deploy_helper(name)
    env.allow_token(token)
    return token


def _fund(env: EscrowEnv, token: Contract, order: Order) -> None:
    """Mint and approve through the token's own ABI (NoReturnToken.approve returns nothing)."""
    env.send(token.functions.mint(order.buyer, order.amount), env.owner)
    env.send(token.functions.approve(env.escrow.address, order.amount), order.buyer)


def _paid(env: EscrowEnv, token: Contract, **kwargs: Any) -> Order:
    order = env.make_order(token=token, **kwargs)
    _fund(env, token, order)
    env.pay(order, fund=False)
    return order


# ------------------------------------------------------------------ no return value (USDT-style)


def test_no_return_token_pay_settle_withdraw(env: EscrowEnv) -> None:
    token = _token(env, "NoReturnToken")
    order = _paid(env, token, amount=20_000_000, fee_bps=250)
    assert env.token_balance(token.address, env.escrow.address) == 20_000_000
    assert env.token_balance(token.address, order.buyer) == 0

    env.settle(order)
    env.withdraw(order.merchant, token.address)
    env.withdraw_fees(token.address)

    assert env.token_balance(token.address, order.merchant) == 19_499_999  # a payout keeps 1 unit
    assert env.token_balance(token.address, env.fee_recipient) == 499_999
    assert env.token_balance(token.address, env.escrow.address) == 2


def test_no_return_token_refund_and_reclaim(env: EscrowEnv) -> None:
    token = _token(env, "NoReturnToken")
    refunded = _paid(env, token, amount=3_000_000)
    reclaimed = _paid(
        env, token, amount=4_000_000, buyer=env.buyers[1].address, quote_ttl=60, deadline_ttl=120
    )

    refund_receipt = env.refund(refunded)
    env.chain.warp(env.reclaim_opens(reclaimed))
    reclaim_receipt = env.reclaim(reclaimed)

    # A transfer that returns nothing counts as success: the buyers are paid, nothing is deferred.
    assert env.events(refund_receipt, "RefundDeferred") == env.events(reclaim_receipt, "RefundDeferred") == []
    assert env.token_balance(token.address, refunded.buyer) == 3_000_000
    assert env.token_balance(token.address, reclaimed.buyer) == 4_000_000
    assert env.token_balance(token.address, env.escrow.address) == 0


def test_permit_payment_with_token_lacking_permit_uses_allowance(env: EscrowEnv) -> None:
    token = _token(env, "NoReturnToken")
    order = env.make_order(token=token)
    _fund(env, token, order)
    deadline = env.chain.now() + 600

    env.pay_with_permit(order, (27, b"\x01" * 32, b"\x01" * 32), deadline)  # the permit call fails, caught

    assert env.status(order) == OrderStatus.PAID
    assert env.token_balance(token.address, env.escrow.address) == order.amount


# ------------------------------------------------------------------ fee on transfer


@pytest.mark.parametrize("amount", [10_000_000, 199])
def test_fee_on_transfer_token_rejected_and_nothing_recorded(env: EscrowEnv, amount: int) -> None:
    token = _token(env, "FeeOnTransferToken")
    order = env.make_order(token=token, amount=amount)
    _fund(env, token, order)

    with env.reverts("TokenTransferShortfall", token.address, amount, amount - amount // 100):
        env.pay(order, fund=False)

    assert env.status(order) == OrderStatus.NONE
    assert env.token_balance(token.address, order.buyer) == amount
    assert env.token_balance(token.address, env.escrow.address) == 0


def test_fee_on_transfer_token_rejected_on_permit_path(env: EscrowEnv) -> None:
    token = _token(env, "FeeOnTransferToken")
    order = env.make_order(token=token, amount=10_000_000)
    _fund(env, token, order)

    with env.reverts("TokenTransferShortfall", token.address, 10_000_000, 9_900_000):
        env.pay_with_permit(order, (27, b"\x01" * 32, b"\x01" * 32), env.chain.now() + 600)

    assert env.status(order) == OrderStatus.NONE
    assert env.token_balance(token.address, order.buyer) == 10_000_000


def test_fee_on_transfer_token_below_one_percent_granularity_is_accepted(env: EscrowEnv) -> None:
    # 99 / 100 == 0 burned: the balance check is exact, not a heuristic, so a lossless transfer passes.
    token = _token(env, "FeeOnTransferToken")
    order = _paid(env, token, amount=99)

    assert env.status(order) == OrderStatus.PAID
    assert env.token_balance(token.address, env.escrow.address) == 99


# ------------------------------------------------------------------ re-entrancy


def _reentrant_setup(env: EscrowEnv) -> tuple[Contract, Order]:
    """A ReentrantToken with a settled order, so withdraw()/withdrawFees() would pay out if re-entered."""
    token = _token(env, "ReentrantToken")
    settled = _paid(env, token, amount=8_000_000, merchant=env.merchants[2].address)
    env.settle(settled)
    # The token calls withdraw() itself when re-entering: allowed to, so the guard is what stops it.
    env.send(env.escrow.functions.setSweeper(token.address, True), env.owner)
    return token, settled


def _withdraw_payload(env: EscrowEnv, settled: Order) -> str:
    return env.escrow.encode_abi("withdraw", [settled.merchant, settled.token])


def _assert_reentry_blocked(env: EscrowEnv, token: Contract) -> None:
    assert token.functions.reentered().call() is True
    assert token.functions.reentrySucceeded().call() is False
    error = env.decoder.decode(bytes(token.functions.reentryError().call()))
    assert (error.name, tuple(error.args_)) == ("ReentrancyGuardReentrantCall", ())


def test_reentry_payload_works_outside_the_escrow(env: EscrowEnv) -> None:
    # Control: the same payload succeeds when the token's hook fires outside an escrow call, so the
    # blocked re-entries below are stopped by the guard, not by a broken payload.
    token, settled = _reentrant_setup(env)
    env.send(token.functions.arm(env.escrow.address, _withdraw_payload(env, settled)), env.owner)
    env.send(token.functions.mint(env.bystander, 1), env.owner)

    env.send(token.functions.transfer(env.owner, 1), env.bystander)

    assert token.functions.reentrySucceeded().call() is True
    assert env.token_balance(token.address, settled.merchant) == settled.merchant_amount - 1  # 1 unit kept


def test_reentry_during_pay_blocked(env: EscrowEnv) -> None:
    token, settled = _reentrant_setup(env)
    order = env.make_order(token=token)
    _fund(env, token, order)
    env.send(token.functions.arm(env.escrow.address, _withdraw_payload(env, settled)), env.owner)

    env.pay(order, fund=False)

    _assert_reentry_blocked(env, token)
    assert env.status(order) == OrderStatus.PAID
    assert env.token_balance(token.address, env.escrow.address) == settled.amount + order.amount
    assert env.token_balance(token.address, settled.merchant) == 0
    assert env.escrow_balance(settled.merchant, token.address) == settled.merchant_amount


def test_reentry_during_withdraw_blocked(env: EscrowEnv) -> None:
    token, settled = _reentrant_setup(env)
    fees = env.escrow.encode_abi("withdrawFees", [token.address])
    env.send(token.functions.arm(env.escrow.address, fees), env.owner)

    env.withdraw(settled.merchant, token.address)

    _assert_reentry_blocked(env, token)
    assert env.token_balance(token.address, settled.merchant) == settled.merchant_amount - 1
    assert env.token_balance(token.address, env.fee_recipient) == 0
    assert env.fee_balance(token.address) == settled.fee
    assert env.token_balance(token.address, env.escrow.address) == settled.fee + 1  # and the merchant's dust


def test_reentry_during_refund_blocked(env: EscrowEnv) -> None:
    token, settled = _reentrant_setup(env)
    order = _paid(env, token, amount=1_000_000, buyer=env.buyers[1].address)
    env.send(token.functions.arm(env.escrow.address, _withdraw_payload(env, settled)), env.owner)

    receipt = env.refund(order)

    _assert_reentry_blocked(env, token)
    assert env.events(receipt, "RefundDeferred") == []
    assert env.token_balance(token.address, order.buyer) == order.amount
    assert env.token_balance(token.address, settled.merchant) == 0
    assert env.token_balance(token.address, env.escrow.address) == settled.amount


def test_reentry_during_reclaim_blocked(env: EscrowEnv) -> None:
    token, settled = _reentrant_setup(env)
    order = _paid(env, token, amount=1_000_000, buyer=env.buyers[1].address, quote_ttl=60, deadline_ttl=120)
    env.chain.warp(env.reclaim_opens(order))
    env.send(
        token.functions.arm(env.escrow.address, env.escrow.encode_abi("reclaim", [order.as_tuple()])),
        env.owner,
    )

    env.reclaim(order)

    _assert_reentry_blocked(env, token)
    assert env.status(order) == OrderStatus.RECLAIMED
    assert env.token_balance(token.address, order.buyer) == order.amount  # once
    assert env.token_balance(token.address, env.escrow.address) == settled.amount


# ------------------------------------------------------------------ blacklists (USDC-style)


def test_blacklisted_merchant_withdrawal_fails_then_redirects(env: EscrowEnv) -> None:
    token = _token(env, "BlacklistToken")
    order = _paid(env, token)
    env.settle(order)
    env.send(token.functions.setBlacklisted(order.merchant, True), env.owner)

    with env.reverts("Blacklisted", order.merchant):
        env.withdraw(order.merchant, token.address)
    assert env.escrow_balance(order.merchant, token.address) == order.merchant_amount

    treasury = env.chain.accounts[9].address
    env.set_payout(order.merchant, treasury)
    env.withdraw(order.merchant, token.address)

    assert env.token_balance(token.address, treasury) == order.merchant_amount - 1  # a payout keeps 1 unit
    assert env.escrow_balance(order.merchant, token.address) == 1


def test_blacklisted_buyer_reclaim_is_credited(env: EscrowEnv) -> None:
    token = _token(env, "BlacklistToken")
    order = _paid(env, token, quote_ttl=60, deadline_ttl=120)
    env.send(token.functions.setBlacklisted(order.buyer, True), env.owner)
    env.chain.warp(env.reclaim_opens(order))

    receipt = env.reclaim(order)

    (deferred,) = env.events(receipt, "RefundDeferred")
    assert deferred.args.amount == order.amount
    assert env.status(order) == OrderStatus.RECLAIMED
    assert env.escrow_balance(order.buyer, token.address) == order.amount
    assert env.token_balance(token.address, env.escrow.address) == order.amount


def test_blacklisted_escrow_still_settles_and_defers_refunds(env: EscrowEnv) -> None:
    token = _token(env, "BlacklistToken")
    settled = _paid(env, token)
    refunded = _paid(env, token, buyer=env.buyers[1].address)
    env.send(token.functions.setBlacklisted(env.escrow.address, True), env.owner)

    env.settle(settled)
    receipt = env.refund(refunded)

    assert env.escrow_balance(settled.merchant, token.address) == settled.merchant_amount
    assert len(env.events(receipt, "RefundDeferred")) == 1
    assert env.escrow_balance(refunded.buyer, token.address) == refunded.amount
    with env.reverts("Blacklisted", env.escrow.address):
        env.withdraw(settled.merchant, token.address)
    assert env.token_balance(token.address, env.escrow.address) == settled.amount + refunded.amount


def test_blacklisted_fee_recipient_is_replaced(env: EscrowEnv) -> None:
    token = _token(env, "BlacklistToken")
    order = _paid(env, token)
    env.settle(order)
    env.send(token.functions.setBlacklisted(env.fee_recipient, True), env.owner)

    with env.reverts("Blacklisted", env.fee_recipient):
        env.withdraw_fees(token.address)

    new_recipient = env.chain.accounts[9].address
    env.set_fee_recipient(new_recipient)
    env.withdraw_fees(token.address)
    assert env.token_balance(token.address, new_recipient) == order.fee - 1
    assert env.fee_balance(token.address) == 1


def test_blacklisted_buyer_cannot_pay(env: EscrowEnv) -> None:
    token = _token(env, "BlacklistToken")
    order = env.make_order(token=token)
    _fund(env, token, order)
    env.send(token.functions.setBlacklisted(order.buyer, True), env.owner)

    with env.reverts("Blacklisted", order.buyer):
        env.pay(order, fund=False)

    assert env.status(order) == OrderStatus.NONE
    assert env.token_balance(token.address, order.buyer) == order.amount


# ------------------------------------------------------------------ reverting ETH receivers


def test_reverting_fee_recipient_is_replaced(env: EscrowEnv) -> None:
    wallet = env.deploy_helper("RevertingReceiver")
    env.set_fee_recipient(wallet.address)
    order = env.make_order(token=None, amount=10**16)
    env.pay(order)
    env.settle(order)

    with env.reverts("Refused"):
        env.withdraw_fees(NATIVE_TOKEN)
    assert env.fee_balance(NATIVE_TOKEN) == order.fee

    new_recipient = env.chain.accounts[9].address
    before = env.token_balance(NATIVE_TOKEN, new_recipient)
    env.set_fee_recipient(new_recipient)
    env.withdraw_fees(NATIVE_TOKEN)
    assert env.token_balance(NATIVE_TOKEN, new_recipient) - before == order.fee - 1


def test_contract_buyer_erc20_refund_is_pushed(env: EscrowEnv) -> None:
    # ERC-20 transfers do not call the receiver, so a contract that refuses ETH still gets tokens back.
    wallet = env.deploy_helper("RevertingReceiver")
    order = env.make_order(buyer=wallet.address)
    env.pay_from_contract(wallet, order)

    receipt = env.refund(order)

    assert env.events(receipt, "RefundDeferred") == []
    assert env.token_balance(order.token, wallet.address) == order.amount
