"""Surplus skim (issue 8, step 5): ETH forced in by selfdestruct and tokens sent directly can leave, to the
fee recipient, and never a base unit of what is owed (open escrow + balances + fee balances, dust included).
In v1 they were stuck forever."""

from __future__ import annotations

from cardless.protocol import NATIVE_TOKEN
from cardless.protocol.artifacts import load_artifact
from tests.contracts.harness import TOKEN_UNIT, EscrowEnv


def _owed(env: EscrowEnv, token: str) -> int:
    return int(env.escrow.functions.owed(token).call())


def _open_state(env: EscrowEnv, token: str | None) -> None:
    """Owed in every form: an open order, a settled one paid out (dust) and one refunded into a balance."""
    settled, still_open = env.make_order(token=token), env.make_order(token=token)
    for order in (settled, still_open):
        env.pay(order)
    env.settle(settled)
    env.withdraw(settled.merchant, settled.token)
    env.withdraw_fees(settled.token)


def test_forced_eth_is_skimmed_and_nothing_owed(env: EscrowEnv) -> None:
    _open_state(env, None)
    owed = _owed(env, NATIVE_TOKEN)
    assert owed == env.token_balance(NATIVE_TOKEN, env.escrow.address)
    with env.reverts("NoSurplus", NATIVE_TOKEN):
        env.send(env.escrow.functions.skimSurplus(NATIVE_TOKEN), env.bystander)

    forced = 12_345
    helper = load_artifact("test-helpers/ForceSend")
    factory = env.w3.eth.contract(abi=helper.abi, bytecode=helper.bytecode)
    tx = factory.constructor(env.escrow.address).transact({"from": env.bystander, "value": forced})
    assert env.w3.eth.get_transaction_receipt(tx)["status"] == 1
    assert env.escrow.functions.surplus(NATIVE_TOKEN).call() == forced
    before = env.token_balance(NATIVE_TOKEN, env.fee_recipient)

    receipt = env.send(env.escrow.functions.skimSurplus(NATIVE_TOKEN), env.bystander)

    (event,) = env.events(receipt, "SurplusSkimmed")
    assert (event.args.token, event.args.to, event.args.amount) == (NATIVE_TOKEN, env.fee_recipient, forced)
    assert env.token_balance(NATIVE_TOKEN, env.fee_recipient) == before + forced
    assert env.token_balance(NATIVE_TOKEN, env.escrow.address) == owed == _owed(env, NATIVE_TOKEN)
    with env.reverts("NoSurplus", NATIVE_TOKEN):
        env.send(env.escrow.functions.skimSurplus(NATIVE_TOKEN), env.bystander)


def test_tokens_sent_directly_are_skimmed_and_every_order_still_ends_whole(env: EscrowEnv) -> None:
    _open_state(env, "usdc")
    token = env.usdc.address
    stray = 7 * TOKEN_UNIT
    env.send(env.usdc.functions.mint(env.bystander, stray), env.owner)
    env.send(env.usdc.functions.transfer(env.escrow.address, stray), env.bystander)
    owed = _owed(env, token)
    assert env.token_balance(token, env.escrow.address) == owed + stray

    receipt = env.send(env.escrow.functions.skimSurplus(token), env.bystander)

    (event,) = env.events(receipt, "SurplusSkimmed")
    assert event.args.amount == stray
    assert env.token_balance(token, env.escrow.address) == owed
    # everything owed can still be paid: the open order refunds in full, balances withdraw
    late = env.make_order()
    env.pay(late)
    env.refund(late)
    assert env.token_balance(late.token, late.buyer) == late.amount
    # the refund left `owed` alone (no storage write in refund): an overstatement until reconciled
    assert _owed(env, token) == env.token_balance(token, env.escrow.address) + late.amount
    env.send(env.escrow.functions.reconcile([late.as_tuple()]), env.bystander)
    assert env.token_balance(token, env.escrow.address) == _owed(env, token)


def test_reconcile_counts_each_closed_order_once_and_only_closed_ones(env: EscrowEnv) -> None:
    token = env.usdc.address
    refunded, reclaimed, still_open = (
        env.make_order(),
        env.make_order(quote_ttl=60, deadline_ttl=120),
        env.make_order(),
    )
    for order in (refunded, reclaimed, still_open):
        env.pay(order)
    env.refund(refunded)
    env.chain.warp(env.reclaim_opens(reclaimed))
    env.reclaim(reclaimed)
    stray = 5
    env.send(env.usdc.functions.mint(env.escrow.address, stray), env.owner)
    # before reconciling, the skim pays only what is provably surplus: nothing of the closed orders
    assert env.escrow.functions.surplus(token).call() == 0

    with env.reverts("OrderNotClosed", still_open.order_id, 1):
        env.send(env.escrow.functions.reconcile([still_open.as_tuple()]), env.bystander)
    env.send(env.escrow.functions.reconcile([refunded.as_tuple(), reclaimed.as_tuple()]), env.bystander)
    with env.reverts("OrderMismatch", refunded.order_id):  # counted once
        env.send(env.escrow.functions.reconcile([refunded.as_tuple()]), env.bystander)
    assert env.status(refunded) == 3 and env.status(reclaimed) == 4  # statuses stay

    assert env.escrow.functions.surplus(token).call() == stray
    env.send(env.escrow.functions.skimSurplus(token), env.bystander)
    assert env.token_balance(token, env.escrow.address) == still_open.amount == _owed(env, token)


def test_a_deferred_refund_stays_owed_after_reconcile(env: EscrowEnv) -> None:
    """A buyer that cannot receive gets its refund as a balance: reconcile drops the order, the balance
    keeps the amount owed, and the skim cannot touch it."""
    proxy = env.deploy_helper("RevertingReceiver")
    order = env.make_order(token=None, buyer=proxy.address, amount=10**15)
    env.pay_from_contract(proxy, order)
    env.refund(order)
    assert env.escrow_balance(proxy.address, NATIVE_TOKEN) == order.amount
    env.send(env.escrow.functions.reconcile([order.as_tuple()]), env.bystander)
    assert _owed(env, NATIVE_TOKEN) == env.token_balance(NATIVE_TOKEN, env.escrow.address)
    with env.reverts("NoSurplus", NATIVE_TOKEN):
        env.send(env.escrow.functions.skimSurplus(NATIVE_TOKEN), env.bystander)


def test_owed_follows_every_transition(env: EscrowEnv) -> None:
    token = env.usdc.address
    order = env.make_order()
    assert _owed(env, token) == 0
    env.pay(order)
    assert _owed(env, token) == order.amount  # open escrow
    env.settle(order)
    assert _owed(env, token) == order.amount  # moved to the merchant and fee balances
    env.withdraw(order.merchant, token)
    assert _owed(env, token) == order.fee + 1  # the fee balance and the merchant's dust
    env.withdraw_fees(token)
    assert _owed(env, token) == 2
    assert env.token_balance(token, env.escrow.address) == 2
    assert env.escrow.functions.surplus(token).call() == 0
