"""settleBatch(): many orders released on one oracle signature over FulfilmentBatch(Fulfilment[])."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from cardless.protocol import Order, OrderStatus, batch_digest, batch_typed_data, fulfilment_typed_data
from tests.contracts.harness import EscrowEnv


def _paid(env: EscrowEnv, count: int, **kwargs: object) -> list[Order]:
    orders = [env.make_order(**kwargs) for _ in range(count)]  # type: ignore[arg-type]
    for order in orders:
        env.pay(order)
    return orders


def test_batch_across_two_merchants_and_two_tokens_credits_each_exactly(env: EscrowEnv) -> None:
    m0, m1 = env.merchants[0].address, env.merchants[1].address
    usdc, usdt = env.usdc, env.usdt
    # Interleaved so the contract's run-length summing must flush at every change of merchant or token.
    plan = [
        (m0, usdc, 9_999, 250),
        (m0, usdc, 9_999, 250),
        (m1, usdc, 1_000_000, 1_000),
        (m0, usdt, 333, 333),
        (m0, usdc, 7, 999),
        (m1, usdt, 123_456_789, 0),
        (m1, usdt, 50_001, 100),
        (m0, usdt, 10_000, 1),
    ]
    orders = [env.make_order(merchant=m, token=t, amount=a, fee_bps=f) for m, t, a, f in plan]
    for order in orders:
        env.pay(order)
    escrow_usdc = env.token_balance(usdc.address, env.escrow.address)
    escrow_usdt = env.token_balance(usdt.address, env.escrow.address)
    fulfilments = [env.fulfilment(o) for o in orders]

    receipt = env.settle_batch(orders, fulfilments=fulfilments)

    assert all(env.status(o) == OrderStatus.SETTLED for o in orders)
    # Each order's fee rounds down on its own: two 9_999 @ 2.5% orders pay 249 + 249, not 499.
    assert env.escrow_balance(m0, usdc.address) == 9_750 + 9_750 + 7
    assert env.escrow_balance(m1, usdc.address) == 900_000
    assert env.escrow_balance(m0, usdt.address) == 322 + 9_999
    assert env.escrow_balance(m1, usdt.address) == 123_456_789 + 49_501
    assert env.fee_balance(usdc.address) == 249 + 249 + 100_000 + 0
    assert env.fee_balance(usdt.address) == 11 + 0 + 500 + 1
    # Settlement only credits: nothing leaves the escrow.
    assert env.token_balance(usdc.address, env.escrow.address) == escrow_usdc
    assert env.token_balance(usdt.address, env.escrow.address) == escrow_usdt
    assert [bytes(e.args.orderId) for e in env.events(receipt, "OrderSettled")] == [
        o.order_id for o in orders
    ]
    (attested,) = env.events(receipt, "FulfilmentsAttested")
    assert attested.args.orders == len(orders)
    assert attested.args.signers == [env.oracle_key.address]
    assert bytes(attested.args.digest) == batch_digest(env.domain, fulfilments)


def test_batch_credits_match_single_settlements(env: EscrowEnv) -> None:
    orders = _paid(env, 5, amount=1_234_567, fee_bps=777)

    env.settle_batch(orders)

    assert env.escrow_balance(orders[0].merchant, env.usdc.address) == 5 * 1_138_642
    assert env.fee_balance(env.usdc.address) == 5 * 95_925


def test_orders_no_longer_paid_are_skipped_without_reverting(env: EscrowEnv) -> None:
    settled, refunded, open_ = _paid(env, 3)
    reclaimed = env.make_order(buyer=env.buyers[1].address, quote_ttl=60, deadline_ttl=120)
    env.pay(reclaimed)
    env.settle(settled)
    env.refund(refunded)
    env.chain.warp(env.reclaim_opens(reclaimed))
    env.reclaim(reclaimed)
    merchant = settled.merchant
    credited = env.escrow_balance(merchant, env.usdc.address)
    fees = env.fee_balance(env.usdc.address)
    escrow_tokens = env.token_balance(env.usdc.address, env.escrow.address)
    batch = [settled, refunded, reclaimed, open_]
    fulfilments = [env.fulfilment(o, fulfilled_at=reclaimed.fulfilment_deadline) for o in batch]

    receipt = env.settle_batch(batch, fulfilments=fulfilments)

    assert [bytes(e.args.orderId) for e in env.events(receipt, "OrderSettled")] == [open_.order_id]
    assert _skipped(env, receipt) == [(o.order_id, NOT_PAID) for o in (settled, refunded, reclaimed)]
    assert (env.status(settled), env.status(refunded), env.status(reclaimed), env.status(open_)) == (
        OrderStatus.SETTLED,
        OrderStatus.REFUNDED,
        OrderStatus.RECLAIMED,
        OrderStatus.SETTLED,
    )
    assert env.escrow_balance(merchant, env.usdc.address) == credited + open_.merchant_amount
    assert env.fee_balance(env.usdc.address) == fees + open_.fee
    assert env.token_balance(env.usdc.address, env.escrow.address) == escrow_tokens
    assert env.token_balance(env.usdc.address, refunded.buyer) == refunded.amount
    assert env.token_balance(env.usdc.address, reclaimed.buyer) == reclaimed.amount


def test_skipped_order_is_not_checked_against_its_deadline(env: EscrowEnv) -> None:
    done, open_ = _paid(env, 2)
    env.refund(done)
    late = env.fulfilment(done, fulfilled_at=done.fulfilment_deadline + 1)

    env.settle_batch([done, open_], fulfilments=[late, env.fulfilment(open_)])

    assert env.status(open_) == OrderStatus.SETTLED
    assert env.escrow_balance(open_.merchant, open_.token) == open_.merchant_amount


def test_order_repeated_in_one_batch_is_credited_once(env: EscrowEnv) -> None:
    (order,) = _paid(env, 1)

    receipt = env.settle_batch([order, order, order])

    assert len(env.events(receipt, "OrderSettled")) == 1
    assert env.escrow_balance(order.merchant, order.token) == order.merchant_amount
    assert env.fee_balance(order.token) == order.fee


def _skipped(env: EscrowEnv, receipt: Any) -> list[tuple[bytes, int]]:
    return [(bytes(e.args.orderId), int(e.args.reason)) for e in env.events(receipt, "SettlementSkipped")]


NOT_PAID, MISMATCH, LATE, WINDOW_CLOSED = 1, 2, 3, 4  # ICardlessEscrow.SkipReason


def test_order_mismatch_is_skipped_and_the_rest_settle(env: EscrowEnv) -> None:
    first, second, third = _paid(env, 3)
    tampered = dataclasses.replace(second, amount=second.amount * 2)

    receipt = env.settle_batch([first, tampered, third])

    assert _skipped(env, receipt) == [(second.order_id, MISMATCH)]
    assert [env.status(o) for o in (first, second, third)] == [
        OrderStatus.SETTLED,
        OrderStatus.PAID,
        OrderStatus.SETTLED,
    ]
    assert env.escrow_balance(first.merchant, first.token) == first.merchant_amount + third.merchant_amount
    assert env.fee_balance(first.token) == first.fee + third.fee


def test_never_paid_order_is_skipped_as_mismatch(env: EscrowEnv) -> None:
    (paid,) = _paid(env, 1)
    unknown = env.make_order()

    receipt = env.settle_batch([paid, unknown])

    assert _skipped(env, receipt) == [(unknown.order_id, MISMATCH)]
    assert env.status(paid) == OrderStatus.SETTLED
    assert env.status(unknown) == OrderStatus.NONE


def test_fulfilled_after_deadline_is_skipped_not_reverting_the_batch(env: EscrowEnv) -> None:
    """v1 reverted the whole batch for one late entry, and the worker picked the same batch every tick."""
    first, second = _paid(env, 2)
    fulfilments = [env.fulfilment(first), env.fulfilment(second, fulfilled_at=second.fulfilment_deadline + 1)]

    receipt = env.settle_batch([first, second], fulfilments=fulfilments)

    assert _skipped(env, receipt) == [(second.order_id, LATE)]
    assert (env.status(first), env.status(second)) == (OrderStatus.SETTLED, OrderStatus.PAID)
    assert env.escrow_balance(first.merchant, first.token) == first.merchant_amount
    (attested,) = env.events(receipt, "FulfilmentsAttested")
    assert attested.args.orders == 1


def test_an_order_past_its_settlement_window_is_skipped_and_the_rest_settle(env: EscrowEnv) -> None:
    """The worker-level version (one late order in a batch of 50) is in tests/oracles/test_settlement.py."""
    late = env.make_order(buyer=env.buyers[1].address, quote_ttl=60, deadline_ttl=120)
    env.pay(late)
    env.chain.warp(env.reclaim_opens(late))  # its settlement window has closed
    orders = _paid(env, 9)
    batch = [*orders[:4], late, *orders[4:]]
    fulfilments = [env.fulfilment(o, fulfilled_at=min(o.fulfilment_deadline, env.chain.now())) for o in batch]

    receipt = env.settle_batch(batch, fulfilments=fulfilments)

    assert _skipped(env, receipt) == [(late.order_id, WINDOW_CLOSED)]
    assert [env.status(o) for o in orders] == [OrderStatus.SETTLED] * 9
    assert env.status(late) == OrderStatus.PAID
    assert env.escrow_balance(orders[0].merchant, orders[0].token) == sum(o.merchant_amount for o in orders)
    env.reclaim(late)
    assert env.status(late) == OrderStatus.RECLAIMED


def test_empty_batch_rejected(env: EscrowEnv) -> None:
    with env.reverts("BatchLengthMismatch", 0, 0):
        env.settle_batch([], signature=b"")


def test_mismatched_lengths_rejected(env: EscrowEnv) -> None:
    first, second = _paid(env, 2)
    one, two = env.fulfilment(first), env.fulfilment(second)

    with env.reverts("BatchLengthMismatch", 2, 1):
        env.settle_batch([first, second], fulfilments=[one], signature=b"")
    with env.reverts("BatchLengthMismatch", 1, 2):
        env.settle_batch([first], fulfilments=[one, two], signature=b"")

    assert env.escrow_balance(first.merchant, first.token) == 0


def test_signature_over_another_order_sequence_rejected(env: EscrowEnv) -> None:
    first, second = _paid(env, 2)
    one, two = env.fulfilment(first), env.fulfilment(second)
    signed_in_order = env.oracle_sign(batch_typed_data(env.domain, [one, two]))

    with env.reverts("InvalidSignature", env.oracle_key.address, batch_digest(env.domain, [two, one])):
        env.settle_batch([second, first], fulfilments=[two, one], signature=signed_in_order)
    with env.reverts("InvalidSignature", env.oracle_key.address, batch_digest(env.domain, [one])):
        env.settle_batch([first], fulfilments=[one], signature=signed_in_order)

    assert env.escrow_balance(first.merchant, first.token) == 0


def test_single_fulfilment_proof_is_not_a_batch_of_one(env: EscrowEnv) -> None:
    (order,) = _paid(env, 1)
    fulfilment = env.fulfilment(order)
    single = env.oracle_sign(fulfilment_typed_data(env.domain, fulfilment))

    with env.reverts("InvalidSignature", env.oracle_key.address, batch_digest(env.domain, [fulfilment])):
        env.settle_batch([order], fulfilments=[fulfilment], signature=single)

    assert env.escrow_balance(order.merchant, order.token) == 0


def test_unauthorised_signer_rejected(env: EscrowEnv) -> None:
    orders = _paid(env, 2)
    intruder = env.chain.accounts[9]

    with env.reverts("UnauthorisedOracleSigner", intruder.address):
        env.settle_batch(orders, key=intruder, signer=intruder.address)

    assert env.escrow_balance(orders[0].merchant, orders[0].token) == 0


def test_wrong_key_for_authorised_signer_rejected(env: EscrowEnv) -> None:
    orders = _paid(env, 2)
    fulfilments = [env.fulfilment(o) for o in orders]

    with env.reverts("InvalidSignature", env.oracle_key.address, batch_digest(env.domain, fulfilments)):
        env.settle_batch(orders, fulfilments=fulfilments, key=env.chain.accounts[9])

    assert env.escrow_balance(orders[0].merchant, orders[0].token) == 0


def test_replayed_batch_settles_nothing_and_moves_no_money(env: EscrowEnv) -> None:
    orders = _paid(env, 3, merchant=env.merchants[2].address)
    fulfilments = [env.fulfilment(o) for o in orders]
    env.settle_batch(orders, fulfilments=fulfilments)
    credited = env.escrow_balance(orders[0].merchant, env.usdc.address)
    fees = env.fee_balance(env.usdc.address)
    escrow_tokens = env.token_balance(env.usdc.address, env.escrow.address)

    receipt = env.settle_batch(orders, fulfilments=fulfilments)

    assert env.events(receipt, "OrderSettled") == []
    assert credited == 3 * orders[0].merchant_amount
    assert env.escrow_balance(orders[0].merchant, env.usdc.address) == credited
    assert env.fee_balance(env.usdc.address) == fees
    assert env.token_balance(env.usdc.address, env.escrow.address) == escrow_tokens


def test_batch_works_while_paused(env: EscrowEnv) -> None:
    orders = _paid(env, 2)
    env.send(env.escrow.functions.pause(), env.owner)

    env.settle_batch(orders)

    assert env.escrow_balance(orders[0].merchant, orders[0].token) == 2 * orders[0].merchant_amount
    assert Counter(env.status(o) for o in orders) == {OrderStatus.SETTLED: 2}
