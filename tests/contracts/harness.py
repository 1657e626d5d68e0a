"""A deployed escrow on the in-process chain, with helpers to drive every operation.

Used by the contract tests, the Hypothesis state machine and ``bench/gas.py``. Keys:
accounts[0] owner, [1] fee recipient, [2..4] buyers, [5..7] merchants, [8] bystander, [9] sweeper; the
quote and oracle signers are off-chain keys that never hold ETH.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
from collections.abc import Iterator, Sequence
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import keccak
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from cardless.devchain.chain import DevChain, deploy_contract, deploy_escrow, start_devchain
from cardless.protocol import (
    NATIVE_TOKEN,
    SETTLEMENT_GRACE,
    ContractRevert,
    EscrowDomain,
    Fulfilment,
    Order,
    account_commitment,
    batch_typed_data,
    fulfilment_typed_data,
    permit_typed_data,
    quote_typed_data,
    refund_typed_data,
    sign,
)
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.reverts import RevertDecoder

FEE_CAP_BPS = 1_000
DEFAULT_FEE_BPS = 250
TOKEN_UNIT = 10**6  # the mock stablecoins have 6 decimals
_GAS_LIMIT = 8_000_000  # ample for any escrow call, including a 100-order batch
HELPER_NAMES = [
    "MockERC20",
    "NoReturnToken",
    "FeeOnTransferToken",
    "BlacklistToken",
    "ReentrantToken",
    "RevertingReceiver",
    "ERC1271Signer",
    "ForceSend",
]


class AdminAction(enum.IntEnum):
    """``ICardlessEscrow.AdminAction``."""

    ADD_ORACLE_SIGNER = 0
    ADD_QUOTE_SIGNER = 1
    SET_FEE_RECIPIENT = 2
    RAISE_FEE_CAP = 3
    SET_ORACLE_THRESHOLD = 4


def address_word(address: str) -> bytes:
    """An address as the ``bytes32`` value of an admin change."""
    return bytes(12) + bytes.fromhex(address[2:])


class RevertExpectationFailed(AssertionError):  # noqa: N818 - an assertion, reported as a test failure
    pass


@dataclasses.dataclass
class EscrowEnv:
    chain: DevChain
    escrow: Contract
    domain: EscrowDomain
    usdc: Contract  # MockERC20 with permit, 6 decimals
    usdt: Contract  # second MockERC20 (the state machine's second ERC-20)
    quote_key: LocalAccount
    oracle_key: LocalAccount
    decoder: RevertDecoder
    _order_counter: int = 0

    # ------------------------------------------------------------------ accounts

    @property
    def w3(self) -> Any:
        return self.chain.w3

    @property
    def owner(self) -> ChecksumAddress:
        return self.chain.accounts[0].address

    @property
    def fee_recipient(self) -> ChecksumAddress:
        return self.chain.accounts[1].address

    @property
    def buyers(self) -> list[LocalAccount]:
        return self.chain.accounts[2:5]

    @property
    def merchants(self) -> list[LocalAccount]:
        return self.chain.accounts[5:8]

    @property
    def bystander(self) -> ChecksumAddress:
        return self.chain.accounts[8].address

    @property
    def sweeper(self) -> ChecksumAddress:
        """Authorised to trigger any account's withdrawal (the oracle's sweep job in production)."""
        return self.chain.accounts[9].address

    # ------------------------------------------------------------------ transactions

    def send(self, call: Any, sender: str, value: int = 0) -> TxReceipt:
        """Send ``call`` from ``sender``; raises ContractRevert with the decoded error on revert."""
        try:
            # One eth_call surfaces a revert with its data; then the transaction goes out with a fixed gas
            # limit, skipping eth_estimateGas's binary search (several executions per transaction).
            call.call({"from": sender, "value": value}, block_identifier="pending")
            tx_hash = call.transact({"from": sender, "value": value, "gas": _GAS_LIMIT})
        except Exception as exc:
            decoded = self.decoder.from_exception(exc)
            if decoded is None:
                raise
            raise decoded from exc
        receipt: TxReceipt = self.w3.eth.get_transaction_receipt(tx_hash)
        assert receipt["status"] == 1, receipt
        return receipt

    @contextlib.contextmanager
    def reverts(self, name: str, *args: Any) -> Iterator[None]:
        """Assert the block reverts with custom error ``name`` and exactly ``args`` (if given)."""
        try:
            yield
        except ContractRevert as exc:
            if exc.name != name:
                raise RevertExpectationFailed(f"expected {name}{args}, got {exc.name}{exc.args_}") from exc
            if args and tuple(exc.args_) != tuple(args):
                raise RevertExpectationFailed(f"expected {name}{args}, got {exc.name}{exc.args_}") from exc
        else:
            raise RevertExpectationFailed(f"expected revert {name}{args}, call succeeded")

    # ------------------------------------------------------------------ orders

    def token_address(self, token: Contract | str | None) -> ChecksumAddress:
        if token is None:
            return NATIVE_TOKEN
        if isinstance(token, str):
            return self.w3.to_checksum_address(token)
        return token.address

    def make_order(
        self,
        *,
        buyer: str | None = None,
        merchant: str | None = None,
        token: Contract | str | None = "usdc",
        amount: int = 10 * TOKEN_UNIT,
        fee_bps: int = DEFAULT_FEE_BPS,
        quote_ttl: int = 600,
        deadline_ttl: int = 3_600,
        order_id: bytes | None = None,
    ) -> Order:
        if token == "usdc":
            token = self.usdc
        self._order_counter += 1
        now = self.chain.next_timestamp()
        return Order(
            order_id=order_id or keccak(b"order-%d-%d" % (self._order_counter, now)),
            buyer=buyer or self.buyers[0].address,
            merchant=merchant or self.merchants[0].address,
            token=self.token_address(token),
            amount=amount,
            fee_bps=fee_bps,
            quote_expiry=now + quote_ttl,
            fulfilment_deadline=now + deadline_ttl,
            sku_hash=keccak(b"sku:genshin-60"),
            account_commitment=account_commitment(f"player#{self._order_counter}", os.urandom(32)),
        )

    @staticmethod
    def window_end(order: Order) -> int:
        """The last second a proof for ``order`` is accepted (``fulfilmentDeadline + SETTLEMENT_GRACE``)."""
        return order.fulfilment_deadline + SETTLEMENT_GRACE

    @staticmethod
    def reclaim_opens(order: Order) -> int:
        """The first second ``order`` may be reclaimed: just after its settlement window closed."""
        return order.fulfilment_deadline + SETTLEMENT_GRACE + 1

    def quote(self, order: Order, key: LocalAccount | None = None) -> bytes:
        return sign((key or self.quote_key).key, quote_typed_data(self.domain, order))

    def fund(self, order: Order) -> None:
        """Mint the order's amount to its buyer and approve the escrow (ERC-20 orders only)."""
        if order.is_native:
            return
        token = self.erc20(order.token)
        self.send(token.functions.mint(order.buyer, order.amount), self.owner)
        self.send(token.functions.approve(self.escrow.address, order.amount), order.buyer)

    def pay(
        self,
        order: Order,
        *,
        sender: str | None = None,
        value: int | None = None,
        signer: str | None = None,
        signature: bytes | None = None,
        fund: bool = True,
    ) -> TxReceipt:
        if fund:
            self.fund(order)
        if value is None:
            value = order.amount if order.is_native else 0
        call = self.escrow.functions.pay(
            order.as_tuple(), signer or self.quote_key.address, signature or self.quote(order)
        )
        return self.send(call, sender or order.buyer, value)

    def fulfilment(self, order: Order, fulfilled_at: int | None = None) -> Fulfilment:
        return Fulfilment(
            order_id=order.order_id,
            receipt_hash=keccak(b"receipt:" + order.order_id),
            fulfilled_at=self.chain.now() if fulfilled_at is None else fulfilled_at,
        )

    def settle(
        self,
        order: Order,
        *,
        fulfilment: Fulfilment | None = None,
        signer: str | None = None,
        key: LocalAccount | None = None,
        keys: Sequence[LocalAccount] | None = None,
        signers: Sequence[str] | None = None,
        sender: str | None = None,
        domain: EscrowDomain | None = None,
    ) -> TxReceipt:
        fulfilment = fulfilment or self.fulfilment(order)
        named, signatures = self.oracle_signatures(
            fulfilment_typed_data(domain or self.domain, fulfilment), key=key, keys=keys, signer=signer
        )
        call = self.escrow.functions.settle(
            order.as_ref_tuple(), fulfilment.as_tuple(), list(signers or named), signatures
        )
        return self.send(call, sender or self.bystander)

    def settle_batch(
        self,
        orders: Sequence[Order],
        *,
        fulfilments: Sequence[Fulfilment] | None = None,
        key: LocalAccount | None = None,
        keys: Sequence[LocalAccount] | None = None,
        signer: str | None = None,
        sender: str | None = None,
        signature: bytes | None = None,
    ) -> TxReceipt:
        """Settle ``orders`` on one batch proof; ``signature`` replaces the one over ``fulfilments``."""
        fulfilments = list(fulfilments or [self.fulfilment(o) for o in orders])
        if signature is None:
            named, signatures = self.oracle_signatures(
                batch_typed_data(self.domain, fulfilments), key=key, keys=keys, signer=signer
            )
        else:
            named, signatures = [signer or self.oracle_key.address], [signature]
        call = self.escrow.functions.settleBatch(
            [o.as_ref_tuple() for o in orders], [f.as_tuple() for f in fulfilments], named, signatures
        )
        return self.send(call, sender or self.bystander)

    def refund(
        self,
        order: Order,
        reason: int = 1,
        *,
        key: LocalAccount | None = None,
        keys: Sequence[LocalAccount] | None = None,
        signer: str | None = None,
        signers: Sequence[str] | None = None,
        sender: str | None = None,
        domain: EscrowDomain | None = None,
    ) -> TxReceipt:
        named, signatures = self.oracle_signatures(
            refund_typed_data(domain or self.domain, order.order_id, reason),
            key=key,
            keys=keys,
            signer=signer,
        )
        call = self.escrow.functions.refund(order.as_tuple(), reason, list(signers or named), signatures)
        return self.send(call, sender or self.bystander)

    def oracle_sign(self, message: SignableMessage, key: LocalAccount | None = None) -> bytes:
        return sign((key or self.oracle_key).key, message)

    def oracle_signatures(
        self,
        message: SignableMessage,
        *,
        key: LocalAccount | None = None,
        keys: Sequence[LocalAccount] | None = None,
        signer: str | None = None,
    ) -> tuple[list[str], list[bytes]]:
        """Signers (ascending, as the escrow requires) and their signatures over ``message``: ``keys`` under
        their own addresses, or the one ``key`` (default the oracle key) named as ``signer`` (default the
        oracle key's address, so a wrong key is caught as a wrong key)."""
        if keys:
            chosen = sorted(keys, key=lambda k: int(k.address, 16))
            return [k.address for k in chosen], [sign(k.key, message) for k in chosen]
        return [signer or self.oracle_key.address], [sign((key or self.oracle_key).key, message)]

    def schedule_and_execute(self, action: int, value: bytes) -> TxReceipt:
        """Announce an admin change and execute it at its eta (the dev chain's delay is 0)."""
        receipt = self.send(self.escrow.functions.scheduleAdminChange(action, value), self.owner)
        (scheduled,) = self.events(receipt, "AdminChangeScheduled")
        eta = int(scheduled.args.eta)
        if self.chain.next_timestamp() < eta:
            self.chain.warp(eta)
        return self.send(self.escrow.functions.executeAdminChange(action, value, eta), self.bystander)

    def add_oracle_signer(self, signer: str) -> TxReceipt:
        return self.schedule_and_execute(AdminAction.ADD_ORACLE_SIGNER, address_word(signer))

    def add_quote_signer(self, signer: str) -> TxReceipt:
        return self.schedule_and_execute(AdminAction.ADD_QUOTE_SIGNER, address_word(signer))

    def set_fee_recipient(self, recipient: str) -> TxReceipt:
        return self.schedule_and_execute(AdminAction.SET_FEE_RECIPIENT, address_word(recipient))

    def raise_fee_cap(self, bps: int) -> TxReceipt:
        return self.schedule_and_execute(AdminAction.RAISE_FEE_CAP, bps.to_bytes(32, "big"))

    def set_oracle_threshold(self, k: int) -> TxReceipt:
        return self.schedule_and_execute(AdminAction.SET_ORACLE_THRESHOLD, k.to_bytes(32, "big"))

    def reclaim(self, order: Order, *, sender: str | None = None) -> TxReceipt:
        return self.send(self.escrow.functions.reclaim(order.as_tuple()), sender or self.bystander)

    def withdraw(self, account: str, token: str, *, sender: str | None = None) -> TxReceipt:
        return self.send(self.escrow.functions.withdraw(account, token), sender or self.sweeper)

    def withdraw_fees(self, token: str, *, sender: str | None = None) -> TxReceipt:
        return self.send(self.escrow.functions.withdrawFees(token), sender or self.bystander)

    def set_payout(self, account: str, payout: str) -> TxReceipt:
        return self.send(self.escrow.functions.setPayoutAddress(payout), account)

    # ------------------------------------------------------------------ permits

    def permit_signature(
        self, owner: LocalAccount, value: int, deadline: int, *, token: Contract | None = None
    ) -> tuple[int, bytes, bytes]:
        """EIP-2612 ``(v, r, s)`` by ``owner`` letting the escrow spend ``value`` of ``token`` (usdc)."""
        token = token or self.usdc
        typed = permit_typed_data(
            token_name=token.functions.name().call(),
            token=token.address,
            chain_id=self.w3.eth.chain_id,
            owner=owner.address,
            spender=self.escrow.address,
            value=value,
            nonce=token.functions.nonces(owner.address).call(),
            deadline=deadline,
        )
        sig = sign(owner.key, typed)
        return sig[64], sig[:32], sig[32:64]

    def pay_with_permit(
        self, order: Order, permit: tuple[int, bytes, bytes], deadline: int, *, sender: str | None = None
    ) -> TxReceipt:
        call = self.escrow.functions.payWithPermit(
            order.as_tuple(), self.quote_key.address, self.quote(order), deadline, *permit
        )
        return self.send(call, sender or order.buyer)

    # ------------------------------------------------------------------ contract accounts

    def execute(
        self,
        proxy: Contract,
        target: Contract,
        fn_name: str,
        *args: Any,
        value: int = 0,
        sender: str | None = None,
    ) -> TxReceipt:
        """Call ``target.fn_name(*args)`` from ``proxy`` (a RevertingReceiver), paid for by ``sender``."""
        data = target.encode_abi(fn_name, args=list(args))
        return self.send(proxy.functions.execute(target.address, data), sender or self.bystander, value)

    def pay_from_contract(self, proxy: Contract, order: Order) -> TxReceipt:
        """Pay ``order`` whose buyer is the RevertingReceiver ``proxy`` (funds and approves it first)."""
        assert order.buyer == proxy.address, "the order's buyer must be the proxy"
        value = order.amount if order.is_native else 0
        if not order.is_native:
            token = self.erc20(order.token)
            self.send(token.functions.mint(proxy.address, order.amount), self.owner)
            self.execute(proxy, token, "approve", self.escrow.address, order.amount)
        args = (order.as_tuple(), self.quote_key.address, self.quote(order))
        return self.execute(proxy, self.escrow, "pay", *args, value=value)

    # ------------------------------------------------------------------ reads

    def status(self, order: Order) -> int:
        return int(self.escrow.functions.orderStatus(order.order_id).call())

    def erc20(self, token: str) -> Contract:
        """``token`` bound to the MockERC20 ABI (mint, approve, balanceOf, allowance)."""
        return self.w3.eth.contract(address=token, abi=load_artifact("test-helpers/MockERC20").abi)

    def token_balance(self, token: str, account: str) -> int:
        if token == NATIVE_TOKEN:
            return int(self.w3.eth.get_balance(account))
        return int(self.erc20(token).functions.balanceOf(account).call())

    def escrow_balance(self, account: str, token: str) -> int:
        return int(self.escrow.functions.balanceOf(account, token).call())

    def fee_balance(self, token: str) -> int:
        return int(self.escrow.functions.feeBalance(token).call())

    def events(self, receipt: TxReceipt, name: str) -> list[Any]:
        return list(getattr(self.escrow.events, name)().process_receipt(receipt, errors=DISCARD))

    def deploy_helper(self, name: str, *args: Any) -> Contract:
        return deploy_contract(self.w3, f"test-helpers/{name}", *args, sender=self.owner)

    def delegate_eoa(self, key: LocalAccount, delegate: str, *, chain_id: int = 0) -> None:
        """Give ``key``'s EOA the EIP-7702 code ``0xef0100 || delegate`` with a real set-code transaction
        (type 4) carrying the key's authorisation; ``chain_id`` 0 makes it valid on every chain."""
        authorisation = Account.sign_authorization(
            {
                "chainId": chain_id,
                "address": delegate,
                "nonce": self.w3.eth.get_transaction_count(key.address),
            },
            key.key,
        )
        sender = self.chain.accounts[8]
        tx = {
            "type": 4,
            "chainId": self.w3.eth.chain_id,
            "nonce": self.w3.eth.get_transaction_count(sender.address),
            "to": sender.address,
            "value": 0,
            "data": b"",
            "gas": 100_000,
            "maxFeePerGas": 2 * self.w3.eth.gas_price + 10**9,
            "maxPriorityFeePerGas": 1,
            "authorizationList": [authorisation],
        }
        tx_hash = self.w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
        assert self.w3.eth.get_transaction_receipt(tx_hash)["status"] == 1
        assert bytes(self.w3.eth.get_code(key.address)) == b"\xef\x01\x00" + bytes.fromhex(delegate[2:])

    def allow_token(self, token: Contract) -> None:
        self.send(self.escrow.functions.setTokenAllowed(token.address, True), self.owner)

    def gas_price_cost(self, receipt: TxReceipt) -> int:
        return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


def build_env(chain: DevChain | None = None, *, admin_delay: int = 0) -> EscrowEnv:
    """Deploy the escrow and two mock stablecoins on ``chain`` (default: a new in-process chain)."""
    chain = chain or start_devchain()
    owner = chain.accounts[0].address
    quote_key = Account.from_key(keccak(b"cardless-test-quote-signer"))
    oracle_key = Account.from_key(keccak(b"cardless-test-oracle-signer"))
    usdc = deploy_contract(chain.w3, "test-helpers/MockERC20", "Test USD Coin", "tUSDC", 6, sender=owner)
    usdt = deploy_contract(chain.w3, "test-helpers/MockERC20", "Test Tether", "tUSDT", 6, sender=owner)
    escrow, domain = deploy_escrow(
        chain.w3,
        owner=owner,
        fee_recipient=chain.accounts[1].address,
        fee_cap_bps=FEE_CAP_BPS,
        quote_signers=[quote_key.address],
        oracle_signers=[oracle_key.address],
        tokens=[usdc.address, usdt.address],
        sweepers=[chain.accounts[9].address],
        admin_delay=admin_delay,
    )
    abis = [load_artifact("CardlessEscrow").abi] + [
        load_artifact(f"test-helpers/{n}").abi for n in HELPER_NAMES
    ]
    return EscrowEnv(
        chain=chain,
        escrow=escrow,
        domain=domain,
        usdc=usdc,
        usdt=usdt,
        quote_key=quote_key,
        oracle_key=oracle_key,
        decoder=RevertDecoder(abis),
    )
