"""withdraw() and withdrawFees(): payouts of credited balances (one base unit kept); setPayoutAddress()."""

from __future__ import annotations

import pytest
from eth_utils import to_checksum_address

from cardless.protocol import NATIVE_TOKEN, Order
from tests.contracts.harness import EscrowEnv

ZERO = NATIVE_TOKEN  # address(0): also "reset the payout address"
DUST = 1  # base units a payout leaves in the balance (CardlessEscrow._DUST)
TREASURY = to_checksum_address("0x" + "7e" * 20)  # holds nothing, sends nothing, pays no gas


def _settled(env: EscrowEnv, **kwargs: object) -> Order:
    order = env.make_order(**kwargs)  # type: ignore[arg-type]
    env.pay(order)
    env.settle(order)
    return order


def test_withdraw_pays_merchant_exactly(env: EscrowEnv) -> None:
    order = _settled(env, amount=4_000_001, fee_bps=250)  # fee 100_000, merchant 3_900_001
    escrow_before = env.token_balance(order.token, env.escrow.address)

    receipt = env.withdraw(order.merchant, order.token)

    assert env.token_balance(order.token, order.merchant) == 3_900_000
    assert env.token_balance(order.token, env.escrow.address) == escrow_before - 3_900_000
    assert env.escrow_balance(order.merchant, order.token) == DUST  # the slot never returns to zero
    assert env.fee_balance(order.token) == 100_000  # fees are untouched
    (event,) = env.events(receipt, "Withdrawn")
    assert (event.args.account, event.args.token, event.args.to, event.args.amount) == (
        order.merchant,
        order.token,
        order.merchant,
        3_900_000,
    )


def test_a_stranger_may_not_trigger_a_withdrawal(env: EscrowEnv) -> None:
    order = _settled(env)

    with env.reverts("UnauthorisedWithdrawal", order.merchant, order.buyer):
        env.withdraw(order.merchant, order.token, sender=order.buyer)

    assert env.escrow_balance(order.merchant, order.token) == order.merchant_amount


@pytest.mark.parametrize("caller", ["account", "payout", "sweeper"])
def test_the_account_its_payout_address_or_a_sweeper_may_withdraw(env: EscrowEnv, caller: str) -> None:
    order = _settled(env)
    payout = env.buyers[2].address
    env.set_payout(order.merchant, payout)
    sender = {"account": order.merchant, "payout": payout, "sweeper": env.sweeper}[caller]

    env.withdraw(order.merchant, order.token, sender=sender)

    assert env.token_balance(order.token, payout) == order.merchant_amount - DUST
    assert env.token_balance(order.token, order.merchant) == 0


def test_a_leaked_payout_wallet_cannot_race_the_payout_change(env: EscrowEnv) -> None:
    """v1: anyone could call withdraw, so the holder of a leaked payout wallet drained the balance before
    the merchant's setPayoutAddress(new) was mined. Once the change lands the old wallet has no say."""
    order = _settled(env)
    leaked, fresh = env.buyers[1].address, env.buyers[2].address
    env.set_payout(order.merchant, leaked)
    env.set_payout(order.merchant, fresh)  # the merchant reacts to the leak

    with env.reverts("UnauthorisedWithdrawal", order.merchant, leaked):
        env.withdraw(order.merchant, order.token, sender=leaked)
    env.withdraw(order.merchant, order.token, sender=order.merchant)

    assert env.token_balance(order.token, fresh) == order.merchant_amount - DUST
    assert env.token_balance(order.token, leaked) == 0


def test_sweeper_is_granted_and_revoked_by_the_owner_only(env: EscrowEnv) -> None:
    order = _settled(env)
    with env.reverts("OwnableUnauthorizedAccount", env.bystander):
        env.send(env.escrow.functions.setSweeper(env.bystander, True), env.bystander)
    receipt = env.send(env.escrow.functions.setSweeper(env.sweeper, False), env.owner)
    (event,) = env.events(receipt, "SweeperSet")
    assert (event.args.sweeper, event.args.authorised) == (env.sweeper, False)

    with env.reverts("UnauthorisedWithdrawal", order.merchant, env.sweeper):
        env.withdraw(order.merchant, order.token, sender=env.sweeper)


@pytest.mark.parametrize("payout", ["usdc", "native"])
def test_payout_to_an_allow_listed_token_rejected(env: EscrowEnv, payout: str) -> None:
    merchant = env.merchants[0].address
    target = env.usdc.address if payout == "usdc" else None
    if target is None:  # address(0) means "reset to myself", which is allowed
        env.set_payout(merchant, NATIVE_TOKEN)
        assert env.escrow.functions.payoutAddressOf(merchant).call() == merchant
        return
    with env.reverts("InvalidPayoutAddress", target):
        env.set_payout(merchant, target)


def test_withdraw_native_pays_merchant_exactly(env: EscrowEnv) -> None:
    order = _settled(env, token=None, amount=10**16 + 3, fee_bps=250)
    merchant_before = env.token_balance(NATIVE_TOKEN, order.merchant)
    escrow_before = env.token_balance(NATIVE_TOKEN, env.escrow.address)

    env.withdraw(order.merchant, NATIVE_TOKEN)

    assert env.token_balance(NATIVE_TOKEN, order.merchant) - merchant_before == order.merchant_amount - DUST
    assert escrow_before - env.token_balance(NATIVE_TOKEN, env.escrow.address) == order.merchant_amount - DUST


def test_merchant_withdrawing_native_itself_nets_amount_minus_gas(env: EscrowEnv) -> None:
    order = _settled(env, token=None, amount=10**16)
    merchant_before = env.token_balance(NATIVE_TOKEN, order.merchant)

    receipt = env.withdraw(order.merchant, NATIVE_TOKEN, sender=order.merchant)

    assert env.token_balance(NATIVE_TOKEN, order.merchant) == (
        merchant_before + order.merchant_amount - DUST - env.gas_price_cost(receipt)
    )


def test_withdraw_pays_the_payout_address(env: EscrowEnv) -> None:
    order = _settled(env)
    treasury = TREASURY

    receipt = env.set_payout(order.merchant, treasury)
    (event,) = env.events(receipt, "PayoutAddressSet")
    assert (event.args.account, event.args.payout) == (order.merchant, treasury)
    assert env.escrow.functions.payoutAddressOf(order.merchant).call() == treasury

    receipt = env.withdraw(order.merchant, order.token)

    assert env.token_balance(order.token, treasury) == order.merchant_amount - DUST
    assert env.token_balance(order.token, order.merchant) == 0
    (withdrawn,) = env.events(receipt, "Withdrawn")
    assert (withdrawn.args.account, withdrawn.args.to) == (order.merchant, treasury)


def test_payout_address_reset_with_zero_address(env: EscrowEnv) -> None:
    merchant = env.merchants[0].address
    env.set_payout(merchant, env.chain.accounts[9].address)

    receipt = env.set_payout(merchant, ZERO)

    (event,) = env.events(receipt, "PayoutAddressSet")
    assert (event.args.account, event.args.payout) == (merchant, merchant)
    assert env.escrow.functions.payoutAddressOf(merchant).call() == merchant
    order = _settled(env, merchant=merchant)
    env.withdraw(merchant, order.token)
    assert env.token_balance(order.token, merchant) == order.merchant_amount - DUST
    assert env.token_balance(order.token, env.chain.accounts[9].address) == 0


def test_nothing_to_withdraw(env: EscrowEnv) -> None:
    merchant = env.merchants[1].address

    with env.reverts("NothingToWithdraw", merchant, env.usdc.address):
        env.withdraw(merchant, env.usdc.address)


def test_a_settlement_after_a_payout_costs_what_any_settlement_costs(env: EscrowEnv) -> None:
    """v1 zeroed the merchant and fee balances on payout, so the next settlement wrote both slots from
    zero: 87,058 gas instead of 52,858. The sweep pays merchants every minute, so that was the common case."""
    first, second, third = (env.make_order() for _ in range(3))
    for order in (first, second, third):
        env.pay(order)
    env.settle(first)
    steady = env.settle(second)["gasUsed"]
    env.withdraw(first.merchant, first.token)
    env.withdraw_fees(first.token)

    after_payout = env.settle(third)["gasUsed"]

    assert abs(after_payout - steady) <= 200, (after_payout, steady)  # calldata zero bytes vary a little
    assert env.escrow_balance(third.merchant, third.token) == DUST + third.merchant_amount
    assert env.fee_balance(third.token) == DUST + third.fee


def test_second_withdrawal_has_nothing_left(env: EscrowEnv) -> None:
    order = _settled(env)
    env.withdraw(order.merchant, order.token)

    with env.reverts("NothingToWithdraw", order.merchant, order.token):
        env.withdraw(order.merchant, order.token)

    assert env.token_balance(order.token, order.merchant) == order.merchant_amount - DUST


def test_withdraw_is_per_token(env: EscrowEnv) -> None:
    in_usdc = _settled(env)
    in_usdt = _settled(env, token=env.usdt)

    env.withdraw(in_usdc.merchant, env.usdc.address)

    assert env.token_balance(env.usdc.address, in_usdc.merchant) == in_usdc.merchant_amount - DUST
    assert env.token_balance(env.usdt.address, in_usdt.merchant) == 0
    assert env.escrow_balance(in_usdt.merchant, env.usdt.address) == in_usdt.merchant_amount


def test_reverting_payout_fails_only_its_own_withdrawal(env: EscrowEnv) -> None:
    wallet = env.deploy_helper("RevertingReceiver")  # a contract merchant that refuses ETH
    stuck = _settled(env, merchant=wallet.address, token=None, amount=10**16)
    fine = _settled(env, merchant=env.merchants[1].address, token=None, amount=2 * 10**16)
    escrow_before = env.token_balance(NATIVE_TOKEN, env.escrow.address)
    fine_before = env.token_balance(NATIVE_TOKEN, fine.merchant)

    with env.reverts("Refused"):
        env.withdraw(wallet.address, NATIVE_TOKEN)
    env.withdraw(fine.merchant, NATIVE_TOKEN)

    assert env.escrow_balance(wallet.address, NATIVE_TOKEN) == stuck.merchant_amount
    assert env.token_balance(NATIVE_TOKEN, wallet.address) == 0
    assert env.token_balance(NATIVE_TOKEN, fine.merchant) - fine_before == fine.merchant_amount - DUST
    assert escrow_before - env.token_balance(NATIVE_TOKEN, env.escrow.address) == fine.merchant_amount - DUST


def test_refusing_merchant_recovers_by_setting_a_payout_address(env: EscrowEnv) -> None:
    wallet = env.deploy_helper("RevertingReceiver")
    order = _settled(env, merchant=wallet.address, token=None, amount=10**16)
    treasury = TREASURY
    treasury_before = env.token_balance(NATIVE_TOKEN, treasury)

    env.execute(wallet, env.escrow, "setPayoutAddress", treasury)
    env.withdraw(wallet.address, NATIVE_TOKEN)

    assert env.token_balance(NATIVE_TOKEN, treasury) - treasury_before == order.merchant_amount - DUST
    assert env.escrow_balance(wallet.address, NATIVE_TOKEN) == DUST


def test_withdraw_fees_pays_fee_recipient(env: EscrowEnv) -> None:
    order = _settled(env, amount=9_999, fee_bps=1_000)  # fee 999

    receipt = env.withdraw_fees(order.token)

    assert env.token_balance(order.token, env.fee_recipient) == 998
    assert env.fee_balance(order.token) == DUST
    assert env.token_balance(order.token, env.escrow.address) == 9_001  # the merchant's credit and the dust
    assert env.token_balance(order.token, env.bystander) == 0
    (event,) = env.events(receipt, "FeesWithdrawn")
    assert (event.args.token, event.args.to, event.args.amount) == (order.token, env.fee_recipient, 998)


def test_withdraw_native_fees_pays_fee_recipient(env: EscrowEnv) -> None:
    order = _settled(env, token=None, amount=10**16, fee_bps=250)
    recipient_before = env.token_balance(NATIVE_TOKEN, env.fee_recipient)

    env.withdraw_fees(NATIVE_TOKEN)

    assert (
        env.token_balance(NATIVE_TOKEN, env.fee_recipient) - recipient_before
        == order.fee - DUST
        == 25 * 10**13 - 1
    )


def test_fees_go_to_the_current_fee_recipient(env: EscrowEnv) -> None:
    order = _settled(env)
    new_recipient = env.chain.accounts[9].address
    env.set_fee_recipient(new_recipient)

    env.withdraw_fees(order.token)

    assert env.token_balance(order.token, new_recipient) == order.fee - DUST
    assert env.token_balance(order.token, env.fee_recipient) == 0


def test_no_fees_to_withdraw(env: EscrowEnv) -> None:
    with env.reverts("NothingToWithdraw", env.escrow.address, env.usdt.address):
        env.withdraw_fees(env.usdt.address)


def test_withdrawals_work_while_paused(env: EscrowEnv) -> None:
    order = _settled(env)
    env.send(env.escrow.functions.pause(), env.owner)

    env.withdraw(order.merchant, order.token)
    env.withdraw_fees(order.token)

    assert env.token_balance(order.token, order.merchant) == order.merchant_amount - DUST
    assert env.token_balance(order.token, env.fee_recipient) == order.fee - DUST
    assert env.token_balance(order.token, env.escrow.address) == 2 * DUST


def test_payout_to_the_escrow_itself_rejected(env: EscrowEnv) -> None:
    merchant = env.merchants[0].address
    with env.reverts("InvalidPayoutAddress", env.escrow.address):
        env.send(env.escrow.functions.setPayoutAddress(env.escrow.address), merchant)
    assert env.escrow.functions.payoutAddressOf(merchant).call() == merchant
