"""payWithPermit(): an ERC-20 payment authorised by the buyer's EIP-2612 permit in the same transaction."""

from __future__ import annotations

from cardless.protocol import OrderStatus
from tests.contracts.harness import EscrowEnv


def test_permit_payment_moves_exact_amount_and_consumes_allowance(env: EscrowEnv) -> None:
    buyer = env.buyers[0]
    order = env.make_order(buyer=buyer.address)
    env.send(env.usdc.functions.mint(buyer.address, order.amount + 7), env.owner)
    deadline = env.chain.now() + 600
    nonce = env.usdc.functions.nonces(buyer.address).call()

    receipt = env.pay_with_permit(order, env.permit_signature(buyer, order.amount, deadline), deadline)

    assert env.status(order) == OrderStatus.PAID
    assert env.token_balance(order.token, env.escrow.address) == order.amount
    assert env.token_balance(order.token, buyer.address) == 7
    assert env.usdc.functions.allowance(buyer.address, env.escrow.address).call() == 0
    assert env.usdc.functions.nonces(buyer.address).call() == nonce + 1
    (event,) = env.events(receipt, "OrderPaid")
    assert bytes(event.args.orderId) == order.order_id
    assert event.args.amount == order.amount


def test_front_run_permit_still_pays_from_existing_allowance(env: EscrowEnv) -> None:
    buyer = env.buyers[0]
    order = env.make_order(buyer=buyer.address)
    env.send(env.usdc.functions.mint(buyer.address, order.amount), env.owner)
    deadline = env.chain.now() + 600
    v, r, s = env.permit_signature(buyer, order.amount, deadline)
    # Someone copies the permit from the mempool and submits it first: its nonce is now spent.
    env.send(
        env.usdc.functions.permit(buyer.address, env.escrow.address, order.amount, deadline, v, r, s),
        env.bystander,
    )

    env.pay_with_permit(order, (v, r, s), deadline)

    assert env.status(order) == OrderStatus.PAID
    assert env.token_balance(order.token, env.escrow.address) == order.amount
    assert env.token_balance(order.token, buyer.address) == 0


def test_permit_signed_by_another_key_without_allowance_fails(env: EscrowEnv) -> None:
    buyer = env.buyers[0]
    order = env.make_order(buyer=buyer.address)
    env.send(env.usdc.functions.mint(buyer.address, order.amount), env.owner)
    deadline = env.chain.now() + 600
    forged = env.permit_signature(env.chain.accounts[9], order.amount, deadline)

    with env.reverts("ERC20InsufficientAllowance", env.escrow.address, 0, order.amount):
        env.pay_with_permit(order, forged, deadline)

    assert env.status(order) == OrderStatus.NONE
    assert env.token_balance(order.token, buyer.address) == order.amount
    assert env.token_balance(order.token, env.escrow.address) == 0


def test_expired_permit_without_allowance_fails(env: EscrowEnv) -> None:
    buyer = env.buyers[0]
    order = env.make_order(buyer=buyer.address)
    env.send(env.usdc.functions.mint(buyer.address, order.amount), env.owner)
    deadline = env.chain.now() + 60
    permit = env.permit_signature(buyer, order.amount, deadline)
    env.chain.warp(deadline + 1)

    with env.reverts("ERC20InsufficientAllowance", env.escrow.address, 0, order.amount):
        env.pay_with_permit(order, permit, deadline)

    assert env.status(order) == OrderStatus.NONE
    assert env.token_balance(order.token, buyer.address) == order.amount


def test_permit_for_less_than_the_amount_fails(env: EscrowEnv) -> None:
    buyer = env.buyers[0]
    order = env.make_order(buyer=buyer.address)
    env.send(env.usdc.functions.mint(buyer.address, order.amount), env.owner)
    deadline = env.chain.now() + 600
    # The escrow asks the token for a permit of exactly order.amount, so a signature over less is invalid.
    short = env.permit_signature(buyer, order.amount - 1, deadline)

    with env.reverts("ERC20InsufficientAllowance", env.escrow.address, 0, order.amount):
        env.pay_with_permit(order, short, deadline)

    assert env.token_balance(order.token, buyer.address) == order.amount


def test_native_order_rejected(env: EscrowEnv) -> None:
    order = env.make_order(token=None, amount=10**16)
    deadline = env.chain.now() + 600

    with env.reverts("PermitRequiresToken", order.order_id):
        env.pay_with_permit(order, (27, b"\x00" * 32, b"\x00" * 32), deadline)

    assert env.status(order) == OrderStatus.NONE
    assert env.token_balance(order.token, env.escrow.address) == 0


def test_only_buyer_may_submit_its_permit(env: EscrowEnv) -> None:
    buyer = env.buyers[0]
    order = env.make_order(buyer=buyer.address)
    env.send(env.usdc.functions.mint(buyer.address, order.amount), env.owner)
    deadline = env.chain.now() + 600
    permit = env.permit_signature(buyer, order.amount, deadline)

    with env.reverts("BuyerMismatch", order.order_id, buyer.address, env.bystander):
        env.pay_with_permit(order, permit, deadline, sender=env.bystander)

    assert env.token_balance(order.token, buyer.address) == order.amount
    assert env.usdc.functions.allowance(buyer.address, env.escrow.address).call() == 0


def test_paused_rejects_permit_payment(env: EscrowEnv) -> None:
    buyer = env.buyers[0]
    order = env.make_order(buyer=buyer.address)
    env.send(env.usdc.functions.mint(buyer.address, order.amount), env.owner)
    deadline = env.chain.now() + 600
    permit = env.permit_signature(buyer, order.amount, deadline)
    env.send(env.escrow.functions.pause(), env.owner)

    with env.reverts("EnforcedPause"):
        env.pay_with_permit(order, permit, deadline)

    assert env.token_balance(order.token, buyer.address) == order.amount
