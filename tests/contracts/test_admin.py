"""Owner operations: signers, token allow-list, fee cap and recipient, pause, Ownable2Step transfer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cardless.protocol import NATIVE_TOKEN, OrderStatus
from tests.contracts.harness import AdminAction, EscrowEnv, address_word

OWNER_CALLS: dict[str, Callable[[EscrowEnv], Any]] = {
    "scheduleAdminChange": lambda env: env.escrow.functions.scheduleAdminChange(
        AdminAction.ADD_ORACLE_SIGNER, address_word(env.bystander)
    ),
    "cancelAdminChange": lambda env: env.escrow.functions.cancelAdminChange(bytes(32)),
    "revokeOracleSigner": lambda env: env.escrow.functions.revokeOracleSigner(env.oracle_key.address),
    "revokeQuoteSigner": lambda env: env.escrow.functions.revokeQuoteSigner(env.quote_key.address),
    "setSweeper": lambda env: env.escrow.functions.setSweeper(env.bystander, True),
    "setTokenAllowed": lambda env: env.escrow.functions.setTokenAllowed(env.bystander, True),
    "lowerFeeCap": lambda env: env.escrow.functions.lowerFeeCap(0),
    "pause": lambda env: env.escrow.functions.pause(),
    "unpause": lambda env: env.escrow.functions.unpause(),
    "transferOwnership": lambda env: env.escrow.functions.transferOwnership(env.bystander),
    "renounceOwnership": lambda env: env.escrow.functions.renounceOwnership(),
}


@pytest.mark.parametrize("name", sorted(OWNER_CALLS))
def test_owner_functions_reject_non_owner(env: EscrowEnv, name: str) -> None:
    if name == "unpause":  # otherwise ExpectedPause would be indistinguishable from a missing check
        env.send(env.escrow.functions.pause(), env.owner)

    for caller in (env.bystander, env.fee_recipient, env.merchants[0].address):
        with env.reverts("OwnableUnauthorizedAccount", caller):
            env.send(OWNER_CALLS[name](env), caller)

    assert env.escrow.functions.owner().call() == env.owner


def test_ownership_transfer_takes_two_steps(env: EscrowEnv) -> None:
    new_owner = env.chain.accounts[9].address

    receipt = env.send(env.escrow.functions.transferOwnership(new_owner), env.owner)

    (started,) = env.events(receipt, "OwnershipTransferStarted")
    assert (started.args.previousOwner, started.args.newOwner) == (env.owner, new_owner)
    assert env.escrow.functions.owner().call() == env.owner
    assert env.escrow.functions.pendingOwner().call() == new_owner
    with env.reverts("OwnableUnauthorizedAccount", new_owner):  # not the owner until it accepts
        env.send(env.escrow.functions.pause(), new_owner)
    with env.reverts("OwnableUnauthorizedAccount", env.bystander):  # only the pending owner may accept
        env.send(env.escrow.functions.acceptOwnership(), env.bystander)

    receipt = env.send(env.escrow.functions.acceptOwnership(), new_owner)

    (transferred,) = env.events(receipt, "OwnershipTransferred")
    assert (transferred.args.previousOwner, transferred.args.newOwner) == (env.owner, new_owner)
    assert env.escrow.functions.owner().call() == new_owner
    assert env.escrow.functions.pendingOwner().call() == NATIVE_TOKEN
    with env.reverts("OwnableUnauthorizedAccount", env.owner):
        env.send(env.escrow.functions.pause(), env.owner)
    env.send(env.escrow.functions.pause(), new_owner)
    assert env.escrow.functions.paused().call()


def test_pending_transfer_can_be_replaced(env: EscrowEnv) -> None:
    first, second = env.chain.accounts[9].address, env.bystander
    env.send(env.escrow.functions.transferOwnership(first), env.owner)
    env.send(env.escrow.functions.transferOwnership(second), env.owner)

    with env.reverts("OwnableUnauthorizedAccount", first):
        env.send(env.escrow.functions.acceptOwnership(), first)

    env.send(env.escrow.functions.acceptOwnership(), second)
    assert env.escrow.functions.owner().call() == second


def test_fee_cap_above_max_bps_rejected(env: EscrowEnv) -> None:
    for bps in (10_001, 2**16 - 1, 2**255):
        with env.reverts("InvalidAdminValue", AdminAction.RAISE_FEE_CAP, bps.to_bytes(32, "big")):
            env.send(
                env.escrow.functions.scheduleAdminChange(AdminAction.RAISE_FEE_CAP, bps.to_bytes(32, "big")),
                env.owner,
            )
    with env.reverts("FeeCapNotLower", 1_000, 1_000):  # lowering is immediate, raising is not
        env.send(env.escrow.functions.lowerFeeCap(1_000), env.owner)
    with env.reverts("FeeCapNotLower", 10_000, 1_000):
        env.send(env.escrow.functions.lowerFeeCap(10_000), env.owner)

    assert env.escrow.functions.feeCapBps().call() == 1_000


def test_fee_cap_change_applies_to_new_payments(env: EscrowEnv) -> None:
    receipt = env.raise_fee_cap(10_000)

    (event,) = env.events(receipt, "FeeCapSet")
    assert event.args.feeCapBps == 10_000
    assert env.escrow.functions.feeCapBps().call() == 10_000
    order = env.make_order(fee_bps=10_000)
    env.pay(order)
    assert env.token_balance(order.token, env.escrow.address) == order.amount

    receipt = env.send(env.escrow.functions.lowerFeeCap(0), env.owner)
    (event,) = env.events(receipt, "FeeCapSet")
    assert event.args.feeCapBps == 0
    cheap = env.make_order(fee_bps=1)
    with env.reverts("FeeAboveCap", cheap.order_id, 1, 0):
        env.pay(cheap)
    assert env.token_balance(cheap.token, cheap.buyer) == cheap.amount


@pytest.mark.parametrize(
    "action", [AdminAction.ADD_ORACLE_SIGNER, AdminAction.ADD_QUOTE_SIGNER, AdminAction.SET_FEE_RECIPIENT]
)
def test_zero_or_oversized_address_rejected_when_scheduled(env: EscrowEnv, action: AdminAction) -> None:
    for value in (bytes(32), b"\x01" + bytes(31)):  # 0x0, and a word that is not an address
        with env.reverts("InvalidAdminValue", action, value):
            env.send(env.escrow.functions.scheduleAdminChange(action, value), env.owner)

    assert env.escrow.functions.feeRecipient().call() == env.fee_recipient


def test_set_fee_recipient_emits_event(env: EscrowEnv) -> None:
    new_recipient = env.chain.accounts[9].address

    receipt = env.set_fee_recipient(new_recipient)

    (event,) = env.events(receipt, "FeeRecipientSet")
    assert event.args.feeRecipient == new_recipient
    assert env.escrow.functions.feeRecipient().call() == new_recipient


@pytest.mark.parametrize(("kind", "event_name"), [("oracle", "OracleSignerSet"), ("quote", "QuoteSignerSet")])
def test_signer_grant_and_revoke_emit_events(env: EscrowEnv, kind: str, event_name: str) -> None:
    signer = env.chain.accounts[9].address
    view = getattr(env.escrow.functions, "isOracleSigner" if kind == "oracle" else "isQuoteSigner")
    grant = env.add_oracle_signer if kind == "oracle" else env.add_quote_signer
    revoke = (
        env.escrow.functions.revokeOracleSigner
        if kind == "oracle"
        else env.escrow.functions.revokeQuoteSigner
    )

    receipt = grant(signer)
    (event,) = env.events(receipt, event_name)
    assert (event.args.signer, event.args.authorised) == (signer, True)
    assert view(signer).call() is True

    receipt = env.send(revoke(signer), env.owner)  # immediate
    (event,) = env.events(receipt, event_name)
    assert (event.args.signer, event.args.authorised) == (signer, False)
    assert view(signer).call() is False


def test_revoked_quote_signer_stops_new_payments_only(env: EscrowEnv) -> None:
    paid = env.make_order()
    env.pay(paid)
    env.send(env.escrow.functions.revokeQuoteSigner(env.quote_key.address), env.owner)

    fresh = env.make_order()
    with env.reverts("UnauthorisedQuoteSigner", env.quote_key.address):
        env.pay(fresh)
    env.settle(paid)

    assert env.token_balance(fresh.token, fresh.buyer) == fresh.amount
    assert env.escrow_balance(paid.merchant, paid.token) == paid.merchant_amount


def test_disallowed_token_keeps_existing_orders_whole(env: EscrowEnv) -> None:
    settled, refunded = env.make_order(), env.make_order()
    env.pay(settled)
    env.pay(refunded)

    receipt = env.send(env.escrow.functions.setTokenAllowed(env.usdc.address, False), env.owner)

    (event,) = env.events(receipt, "TokenAllowedSet")
    assert (event.args.token, event.args.allowed) == (env.usdc.address, False)
    assert env.escrow.functions.isTokenAllowed(env.usdc.address).call() is False
    env.settle(settled)
    env.refund(refunded)
    env.withdraw(settled.merchant, env.usdc.address)
    env.withdraw_fees(env.usdc.address)
    assert env.token_balance(env.usdc.address, settled.merchant) == settled.merchant_amount - 1
    assert env.token_balance(env.usdc.address, env.fee_recipient) == settled.fee - 1
    assert env.token_balance(env.usdc.address, refunded.buyer) == refunded.amount
    assert env.token_balance(env.usdc.address, env.escrow.address) == 2  # the dust of two payouts


def test_pause_and_unpause(env: EscrowEnv) -> None:
    receipt = env.send(env.escrow.functions.pause(), env.owner)

    (paused,) = env.events(receipt, "Paused")
    assert paused.args.account == env.owner
    assert env.escrow.functions.paused().call() is True
    with env.reverts("EnforcedPause"):
        env.send(env.escrow.functions.pause(), env.owner)
    order = env.make_order()
    with env.reverts("EnforcedPause"):
        env.pay(order)
    assert env.status(order) == OrderStatus.NONE

    receipt = env.send(env.escrow.functions.unpause(), env.owner)

    (unpaused,) = env.events(receipt, "Unpaused")
    assert unpaused.args.account == env.owner
    with env.reverts("ExpectedPause"):
        env.send(env.escrow.functions.unpause(), env.owner)
    env.pay(order, fund=False)  # funded by the attempt above
    assert env.token_balance(order.token, env.escrow.address) == order.amount
    assert env.status(order) == OrderStatus.PAID


def test_owner_cannot_renounce_ownership(env: EscrowEnv) -> None:
    # An ownerless escrow could never be unpaused or rotate signers, so renouncing is disabled.
    with env.reverts("RenounceDisabled"):
        env.send(env.escrow.functions.renounceOwnership(), env.owner)
    assert env.escrow.functions.owner().call() == env.owner
