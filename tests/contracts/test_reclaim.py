"""reclaim(): after the settlement window (deadline + SETTLEMENT_GRACE) anyone may end an unsettled order;
the buyer is repaid."""

from __future__ import annotations

import dataclasses

import pytest

from cardless.protocol import NATIVE_TOKEN, OrderStatus
from tests.contracts.harness import EscrowEnv


def test_reclaim_at_deadline_rejected_with_block_time(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    env.chain.warp(order.fulfilment_deadline)

    with env.reverts(
        "SettlementWindowOpen", order.order_id, env.window_end(order), order.fulfilment_deadline
    ):
        env.reclaim(order)

    assert env.status(order) == OrderStatus.PAID
    assert env.token_balance(order.token, order.buyer) == 0
    assert env.token_balance(order.token, env.escrow.address) == order.amount


def test_reclaim_well_before_deadline_rejected(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    early = order.fulfilment_deadline - 1_000
    env.chain.warp(early)

    with env.reverts("SettlementWindowOpen", order.order_id, env.window_end(order), early):
        env.reclaim(order)

    assert env.token_balance(order.token, env.escrow.address) == order.amount


def test_reclaim_just_after_deadline_rejected_the_oracle_still_settles(env: EscrowEnv) -> None:
    """The v1 race: reclaim opened at deadline + 1, while a top-up at the deadline could still be proved.
    A buyer front-running the oracle kept the top-up and the money. Now the whole settlement window
    (deadline + SETTLEMENT_GRACE) belongs to the proof."""
    order = env.make_order(quote_ttl=60, deadline_ttl=120)
    env.pay(order)
    env.chain.warp(order.fulfilment_deadline + 1)

    with env.reverts(
        "SettlementWindowOpen", order.order_id, env.window_end(order), order.fulfilment_deadline + 1
    ):
        env.reclaim(order, sender=order.buyer)
    env.chain.warp(env.window_end(order))
    env.settle(order, fulfilment=env.fulfilment(order, fulfilled_at=order.fulfilment_deadline))

    assert env.status(order) == OrderStatus.SETTLED
    assert env.token_balance(order.token, order.buyer) == 0
    assert env.escrow_balance(order.merchant, order.token) == order.merchant_amount


def test_reclaim_opens_the_second_after_the_window_closes(env: EscrowEnv) -> None:
    order = env.make_order(quote_ttl=60, deadline_ttl=120)
    env.pay(order)
    env.chain.warp(env.window_end(order))
    with env.reverts("SettlementWindowOpen", order.order_id, env.window_end(order), env.window_end(order)):
        env.reclaim(order)

    env.chain.warp(env.reclaim_opens(order))
    env.reclaim(order)

    assert env.status(order) == OrderStatus.RECLAIMED
    assert env.token_balance(order.token, order.buyer) == order.amount


@pytest.mark.parametrize("caller", ["bystander", "merchant", "owner"])
def test_anyone_may_reclaim_and_the_buyer_is_paid(env: EscrowEnv, caller: str) -> None:
    order = env.make_order(amount=7_654_321)
    env.pay(order)
    env.chain.warp(env.reclaim_opens(order))
    sender = {"bystander": env.bystander, "merchant": order.merchant, "owner": env.owner}[caller]

    receipt = env.reclaim(order, sender=sender)

    assert env.status(order) == OrderStatus.RECLAIMED
    assert env.token_balance(order.token, order.buyer) == 7_654_321
    assert env.token_balance(order.token, sender) == 0
    assert env.token_balance(order.token, env.escrow.address) == 0
    assert env.escrow_balance(order.merchant, order.token) == 0
    assert env.fee_balance(order.token) == 0
    (event,) = env.events(receipt, "OrderReclaimed")
    assert bytes(event.args.orderId) == order.order_id
    assert event.args.caller == sender


def test_reclaim_native_by_bystander_pays_buyer_exactly(env: EscrowEnv) -> None:
    order = env.make_order(token=None, amount=10**16 + 9)
    env.pay(order)
    env.chain.warp(env.reclaim_opens(order))
    buyer_before = env.token_balance(NATIVE_TOKEN, order.buyer)
    escrow_before = env.token_balance(NATIVE_TOKEN, env.escrow.address)

    env.reclaim(order)

    assert env.token_balance(NATIVE_TOKEN, order.buyer) - buyer_before == order.amount
    assert escrow_before - env.token_balance(NATIVE_TOKEN, env.escrow.address) == order.amount


def test_reclaim_native_by_buyer_nets_amount_minus_gas(env: EscrowEnv) -> None:
    order = env.make_order(token=None, amount=10**16)
    env.pay(order)
    env.chain.warp(env.reclaim_opens(order))
    buyer_before = env.token_balance(NATIVE_TOKEN, order.buyer)

    receipt = env.reclaim(order, sender=order.buyer)

    assert env.token_balance(NATIVE_TOKEN, order.buyer) == (
        buyer_before + order.amount - env.gas_price_cost(receipt)
    )


def test_caller_cannot_redirect_the_repayment(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    env.chain.warp(env.reclaim_opens(order))

    with env.reverts("OrderMismatch", order.order_id):
        env.reclaim(dataclasses.replace(order, buyer=env.bystander), sender=env.bystander)

    assert env.token_balance(order.token, env.bystander) == 0
    assert env.token_balance(order.token, env.escrow.address) == order.amount


def test_settled_order_cannot_be_reclaimed(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    env.settle(order)
    env.chain.warp(env.reclaim_opens(order))

    with env.reverts("OrderNotPaid", order.order_id, OrderStatus.SETTLED):
        env.reclaim(order)

    assert env.token_balance(order.token, order.buyer) == 0
    assert env.escrow_balance(order.merchant, order.token) == order.merchant_amount


def test_refunded_order_cannot_be_reclaimed(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    env.refund(order)
    env.chain.warp(env.reclaim_opens(order))

    with env.reverts("OrderNotPaid", order.order_id, OrderStatus.REFUNDED):
        env.reclaim(order)

    assert env.token_balance(order.token, order.buyer) == order.amount  # once, from the refund


def test_reclaim_replay_rejected(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    env.chain.warp(env.reclaim_opens(order))
    env.reclaim(order)

    with env.reverts("OrderNotPaid", order.order_id, OrderStatus.RECLAIMED):
        env.reclaim(order)

    assert env.token_balance(order.token, order.buyer) == order.amount


def test_unknown_order_rejected(env: EscrowEnv) -> None:
    order = env.make_order()
    env.chain.warp(env.reclaim_opens(order))

    with env.reverts("OrderNotPaid", order.order_id, OrderStatus.NONE):
        env.reclaim(order)


def test_reclaim_works_while_paused(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    env.send(env.escrow.functions.pause(), env.owner)
    env.chain.warp(env.reclaim_opens(order))

    env.reclaim(order)

    assert env.token_balance(order.token, order.buyer) == order.amount
    assert env.token_balance(order.token, env.escrow.address) == 0


def test_reclaim_to_reverting_buyer_is_credited(env: EscrowEnv) -> None:
    wallet = env.deploy_helper("RevertingReceiver")
    order = env.make_order(buyer=wallet.address, token=None, amount=10**16)
    env.pay_from_contract(wallet, order)
    env.chain.warp(env.reclaim_opens(order))
    escrow_before = env.token_balance(NATIVE_TOKEN, env.escrow.address)

    receipt = env.reclaim(order)

    (deferred,) = env.events(receipt, "RefundDeferred")
    assert deferred.args.amount == order.amount
    assert env.status(order) == OrderStatus.RECLAIMED
    assert env.escrow_balance(wallet.address, NATIVE_TOKEN) == order.amount
    assert env.token_balance(NATIVE_TOKEN, env.escrow.address) == escrow_before
    assert env.token_balance(NATIVE_TOKEN, wallet.address) == 0
