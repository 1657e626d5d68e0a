"""Escrow v2 owner bounds (issue 8, step 5): adding signers, changing the fee recipient, raising the fee cap
and the oracle threshold take effect only ADMIN_DELAY after an announcement anyone can see, and the owner
can cancel them meanwhile; revoking a signer, lowering the fee cap and pausing are immediate. In v1 a
stolen owner key added its own oracle signer and redirected the fees in one block."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from cardless.devchain.chain import DEV_CHAIN_ID
from cardless.protocol import OrderStatus
from cardless.protocol.artifacts import load_artifact
from tests.contracts.harness import AdminAction, EscrowEnv, address_word, build_env

DELAY = 2 * 24 * 3600
GRACE = 14 * 24 * 3600
THIEF = Account.from_key(keccak(b"timelock-test-stolen-owner-oracle"))


@pytest.fixture(scope="module")
def _delayed() -> EscrowEnv:
    return build_env(admin_delay=DELAY)


@pytest.fixture
def env(_delayed: EscrowEnv) -> Iterator[EscrowEnv]:
    """An escrow deployed with a two-day admin delay; rolled back after each test."""
    snapshot = _delayed.chain.snapshot()
    try:
        yield _delayed
    finally:
        _delayed.chain.revert(snapshot)


def _schedule(env: EscrowEnv, action: AdminAction, value: bytes) -> tuple[bytes, int]:
    receipt = env.send(env.escrow.functions.scheduleAdminChange(action, value), env.owner)
    (event,) = env.events(receipt, "AdminChangeScheduled")
    return bytes(event.args.id), int(event.args.eta)


def test_a_new_oracle_signer_waits_for_the_delay_and_is_announced(env: EscrowEnv) -> None:
    value = address_word(THIEF.address)
    before = env.chain.next_timestamp()
    change_id, eta = _schedule(env, AdminAction.ADD_ORACLE_SIGNER, value)

    assert env.escrow.functions.ADMIN_DELAY().call() == DELAY
    assert before + DELAY <= eta <= before + DELAY + 5
    assert change_id == keccak(
        encode(["uint8", "bytes32", "uint48"], [AdminAction.ADD_ORACLE_SIGNER, value, eta])
    )
    assert env.escrow.functions.isAdminChangePending(change_id).call() is True
    order = env.make_order(deadline_ttl=DELAY * 2)
    env.pay(order)
    with env.reverts("AdminChangeNotReady"):
        env.send(
            env.escrow.functions.executeAdminChange(AdminAction.ADD_ORACLE_SIGNER, value, eta), env.bystander
        )
    with env.reverts("UnauthorisedOracleSigner", THIEF.address):  # the thief's key cannot settle meanwhile
        env.settle(order, key=THIEF, signer=THIEF.address)

    env.chain.warp(eta)
    receipt = env.send(
        env.escrow.functions.executeAdminChange(AdminAction.ADD_ORACLE_SIGNER, value, eta), env.bystander
    )

    assert [e.args.id for e in env.events(receipt, "AdminChangeExecuted")] == [change_id]
    (granted,) = env.events(receipt, "OracleSignerSet")
    assert (granted.args.signer, granted.args.authorised) == (THIEF.address, True)
    assert env.escrow.functions.isAdminChangePending(change_id).call() is False
    with env.reverts("AdminChangeUnknown", change_id):  # once only
        env.send(
            env.escrow.functions.executeAdminChange(AdminAction.ADD_ORACLE_SIGNER, value, eta), env.bystander
        )
    env.settle(order, key=THIEF, signer=THIEF.address)
    assert env.status(order) == OrderStatus.SETTLED


def test_a_cancelled_fee_redirect_never_takes_effect(env: EscrowEnv) -> None:
    """The fee recipient is what a stolen owner key would redirect: the announcement gives two days to
    cancel it (after rotating the owner), and the fees accrued meanwhile go to the old recipient."""
    order = env.make_order()
    env.pay(order)
    env.settle(order)
    value = address_word(THIEF.address)
    change_id, eta = _schedule(env, AdminAction.SET_FEE_RECIPIENT, value)

    env.withdraw_fees(order.token)
    assert env.token_balance(order.token, env.fee_recipient) == order.fee - 1
    receipt = env.send(env.escrow.functions.cancelAdminChange(change_id), env.owner)
    assert [e.args.id for e in env.events(receipt, "AdminChangeCancelled")] == [change_id]

    env.chain.warp(eta + 1)
    with env.reverts("AdminChangeUnknown", change_id):
        env.send(
            env.escrow.functions.executeAdminChange(AdminAction.SET_FEE_RECIPIENT, value, eta), env.bystander
        )
    with env.reverts("AdminChangeUnknown", change_id):
        env.send(env.escrow.functions.cancelAdminChange(change_id), env.owner)
    assert env.escrow.functions.feeRecipient().call() == env.fee_recipient


def test_an_announced_change_expires_after_the_grace(env: EscrowEnv) -> None:
    value = (5_000).to_bytes(32, "big")
    _, eta = _schedule(env, AdminAction.RAISE_FEE_CAP, value)

    env.chain.warp(eta + GRACE + 1)
    with env.reverts("AdminChangeExpired"):
        env.send(
            env.escrow.functions.executeAdminChange(AdminAction.RAISE_FEE_CAP, value, eta), env.bystander
        )
    assert env.escrow.functions.feeCapBps().call() == 1_000


@pytest.mark.parametrize("action", list(AdminAction))
def test_only_the_owner_schedules_and_the_delay_applies_to_every_action(
    env: EscrowEnv, action: AdminAction
) -> None:
    value = {
        AdminAction.ADD_ORACLE_SIGNER: address_word(THIEF.address),
        AdminAction.ADD_QUOTE_SIGNER: address_word(THIEF.address),
        AdminAction.SET_FEE_RECIPIENT: address_word(THIEF.address),
        AdminAction.RAISE_FEE_CAP: (2_000).to_bytes(32, "big"),
        AdminAction.SET_ORACLE_THRESHOLD: (1).to_bytes(32, "big"),
    }[action]
    with env.reverts("OwnableUnauthorizedAccount", env.bystander):
        env.send(env.escrow.functions.scheduleAdminChange(action, value), env.bystander)
    change_id, eta = _schedule(env, action, value)
    env.chain.warp(eta - 2)
    with env.reverts("AdminChangeNotReady"):
        env.send(env.escrow.functions.executeAdminChange(action, value, eta), env.bystander)
    with env.reverts("OwnableUnauthorizedAccount", env.bystander):
        env.send(env.escrow.functions.cancelAdminChange(change_id), env.bystander)


def test_revoking_lowering_and_pausing_are_immediate(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)

    env.send(env.escrow.functions.revokeOracleSigner(env.oracle_key.address), env.owner)
    with env.reverts("UnauthorisedOracleSigner", env.oracle_key.address):
        env.settle(order)
    env.send(env.escrow.functions.revokeQuoteSigner(env.quote_key.address), env.owner)
    with env.reverts("UnauthorisedQuoteSigner", env.quote_key.address):
        env.pay(env.make_order())
    env.send(env.escrow.functions.lowerFeeCap(10), env.owner)
    assert env.escrow.functions.feeCapBps().call() == 10
    env.send(env.escrow.functions.pause(), env.owner)
    assert env.escrow.functions.paused().call() is True
    assert env.escrow.functions.oracleSignerCount().call() == 0


def test_a_zero_delay_is_refused_outside_dev_chains(env: EscrowEnv) -> None:
    """Deployment with ADMIN_DELAY 0 is accepted on 31337/1337 only (the CHAINID the constructor reads)."""
    artifact = load_artifact("CardlessEscrow")
    factory = env.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    args = (env.owner, env.fee_recipient, 1_000, 0, [env.oracle_key.address], [env.quote_key.address], 1)
    data = factory.constructor(*args).data_in_transaction
    backend_chain = env.chain.tester.backend.chain
    backend_chain.chain_id = 1  # what CHAINID answers: mainnet
    try:
        with pytest.raises(Exception) as refused:
            env.w3.eth.call({"from": env.owner, "data": data})
        decoded = env.decoder.from_exception(refused.value)
        assert decoded is not None and (decoded.name, tuple(decoded.args_)) == ("AdminDelayRequired", (1,))
        delayed = factory.constructor(*args[:3], 3_600, *args[4:]).data_in_transaction
        env.w3.eth.call({"from": env.owner, "data": delayed})  # a real delay deploys anywhere
    finally:
        backend_chain.chain_id = DEV_CHAIN_ID
    env.w3.eth.call({"from": env.owner, "data": data})  # and 0 on the dev chain
