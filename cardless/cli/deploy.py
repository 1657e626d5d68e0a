"""``cardless deploy``: deploy and configure the escrow on any EVM JSON-RPC endpoint.

The owner's key comes from an encrypted keystore and signs every transaction locally (raw
transactions; no account needs to be unlocked on the node, so this works against a public RPC
provider). Each transaction is sent, then its receipt awaited and checked, in order: the escrow
constructor (owner, fee recipient, fee cap, admin delay, oracle and quote signers, oracle threshold),
then ``setTokenAllowed`` for each allowed token (and for native ETH when allowed). Token symbols and
decimals are read from the tokens themselves through the standard ERC-20 ABI. Finally the deployment
file is written and read back through ``load_deployment``, the same check ``cardless gateway`` and
``cardless oracle`` run at start.

Nothing here imports the dev chain: tests run it against the embedded node, operators against anvil, a
testnet or an L2. The owner should be handed to a multisig afterwards (``transferOwnership`` +
``acceptOwnership``, Ownable2Step); that step is deliberately left to the operator.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.types import Nonce, TxParams, TxReceipt, Wei

from cardless.protocol import NATIVE_TOKEN
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import Deployment, TokenDeployment
from cardless.protocol.erc20 import ERC20_ABI

__all__ = ["DeployError", "DeployPlan", "deploy_escrow"]

log = logging.getLogger("cardless.deploy")

MAX_FEE_CAP_BPS: Final = 10_000
DEFAULT_ADMIN_DELAY: Final = 2 * 24 * 3600
"""Two days: a working week's notice for a new signer, fee recipient or fee cap (docs/architecture.md)."""
_GAS_MARGIN: Final = 1.25  # estimates are exact for the state they ran on; leave room for drift
_DEFAULT_TIP: Final = Wei(1_000_000_000)  # 1 gwei, when the node has no eth_maxPriorityFeePerGas


class DeployError(RuntimeError):
    """The deployment cannot go ahead or a transaction failed; the message names what and where."""


@dataclasses.dataclass(frozen=True)
class DeployPlan:
    fee_recipient: ChecksumAddress
    fee_cap_bps: int
    quote_signers: Sequence[ChecksumAddress]
    oracle_signers: Sequence[ChecksumAddress]
    tokens: Sequence[ChecksumAddress]
    """ERC-20 tokens to allow; symbol and decimals are read from each."""
    allow_native: bool
    rpc_url: str
    """Written into the deployment file (where gateways and oracles reach the chain)."""
    sweepers: Sequence[ChecksumAddress] = ()
    """Accounts that may trigger merchants' withdrawals (the oracle's gas key runs the sweep job)."""
    admin_delay: int = DEFAULT_ADMIN_DELAY
    """Seconds between announcing an owner change (new signer, fee recipient, higher fee cap, threshold)
    and its earliest execution; 0 only on dev chains (the contract refuses it elsewhere)."""
    oracle_threshold: int = 1
    """Distinct oracle signatures settlement and refunds need (1..len(oracle_signers))."""

    def __post_init__(self) -> None:
        if not 0 <= self.fee_cap_bps <= MAX_FEE_CAP_BPS:
            raise DeployError(f"fee cap: {self.fee_cap_bps} bps is outside 0..{MAX_FEE_CAP_BPS}")
        if not self.quote_signers:
            raise DeployError("quote signers: at least one is needed (--quote-signer)")
        if not self.oracle_signers:
            raise DeployError("oracle signers: at least one is needed (--oracle-signer)")
        if not 1 <= self.oracle_threshold <= len(self.oracle_signers):
            raise DeployError(
                f"oracle threshold: {self.oracle_threshold} is outside "
                f"1..{len(self.oracle_signers)} (the oracle signers)"
            )
        if not 0 <= self.admin_delay < 2**48:
            raise DeployError(f"admin delay: {self.admin_delay} s is out of range")
        if not self.tokens and not self.allow_native:
            raise DeployError("tokens: allow at least one ERC-20 token (--token) or native ETH (--native)")
        for what, values in (
            ("quote signers", self.quote_signers),
            ("oracle signers", self.oracle_signers),
            ("tokens", self.tokens),
        ):
            if len(set(values)) != len(values):
                raise DeployError(f"{what}: listed twice: {sorted(v for v in values if values.count(v) > 1)}")
        if NATIVE_TOKEN in self.tokens:
            raise DeployError("tokens: the zero address is native ETH; use --native instead")


class _Signer:
    """Sends transactions signed locally by one key, one at a time, each confirmed before the next."""

    def __init__(self, w3: Web3, account: LocalAccount, *, receipt_timeout: float) -> None:
        self.w3, self.account, self.receipt_timeout = w3, account, receipt_timeout
        self.chain_id = w3.eth.chain_id
        self.nonce = w3.eth.get_transaction_count(account.address, "pending")

    def _fees(self) -> dict[str, Wei]:
        base = self.w3.eth.get_block("latest").get("baseFeePerGas")
        if base is None:  # a pre-London chain
            return {"gasPrice": self.w3.eth.gas_price}
        try:
            tip = self.w3.eth.max_priority_fee
        except Exception:  # not every node implements eth_maxPriorityFeePerGas
            tip = _DEFAULT_TIP
        return {"maxPriorityFeePerGas": tip, "maxFeePerGas": Wei(2 * base + tip)}

    def send(self, what: str, tx: TxParams) -> TxReceipt:
        # build_transaction fills "gas": 0 (so web3 does not estimate by itself); estimate without it.
        tx = {k: v for k, v in tx.items() if k != "gas"}  # type: ignore[assignment]
        tx = {**tx, "from": self.account.address, "nonce": self.nonce, "chainId": self.chain_id}
        try:
            tx["gas"] = int(self.w3.eth.estimate_gas(tx) * _GAS_MARGIN)
        except Exception as exc:
            raise DeployError(f"{what}: the node refuses it (gas estimate failed: {exc})") from exc
        tx.update(self._fees())  # type: ignore[typeddict-item]
        signed = self.account.sign_transaction(tx)  # type: ignore[arg-type]
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        self.nonce = Nonce(self.nonce + 1)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout)
        if receipt["status"] != 1:
            raise DeployError(f"{what}: transaction {tx_hash.to_0x_hex()} reverted")
        log.info("%s: %s (block %s)", what, tx_hash.to_0x_hex(), receipt["blockNumber"])
        return receipt

    def call(self, what: str, function: ContractFunction) -> TxReceipt:
        return self.send(what, function.build_transaction({"from": self.account.address, "gas": 0}))


def _token(w3: Web3, address: ChecksumAddress) -> TokenDeployment:
    """Symbol and decimals as the token itself reports them (the standard ERC-20 ABI)."""
    if not w3.eth.get_code(address):
        raise DeployError(f"token {address}: no contract code at this address on this chain")
    contract = w3.eth.contract(address=address, abi=ERC20_ABI)
    try:
        symbol = str(contract.functions.symbol().call())
        decimals = int(contract.functions.decimals().call())
    except Exception as exc:
        raise DeployError(f"token {address}: does not answer symbol()/decimals() as ERC-20 ({exc})") from exc
    try:
        return TokenDeployment(symbol=symbol, address=address, decimals=decimals)
    except ValueError as exc:
        raise DeployError(
            f"token {address}: unusable metadata (symbol {symbol!r}, {decimals} decimals)"
        ) from exc


def deploy_escrow(
    w3: Web3,
    owner: LocalAccount,
    plan: DeployPlan,
    *,
    receipt_timeout: float = 300,
    progress: Callable[[str], Any] | None = None,
) -> Deployment:
    """Deploy and configure the escrow from ``owner``; returns the deployment to save."""
    say = progress or (lambda _message: None)
    tokens = [_token(w3, address) for address in plan.tokens]  # refuse bad tokens before spending gas
    symbols = [t.symbol for t in tokens] + (["ETH"] if plan.allow_native else [])
    if len(set(symbols)) != len(symbols):
        raise DeployError(
            f"tokens: two tokens share a symbol ({symbols}); the gateway names tokens by symbol"
        )
    if w3.eth.get_balance(owner.address) == 0:
        raise DeployError(f"owner {owner.address} has no ETH on chain {w3.eth.chain_id} to pay for gas")

    signer = _Signer(w3, owner, receipt_timeout=receipt_timeout)
    artifact = load_artifact("CardlessEscrow")
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    constructor = factory.constructor(
        owner.address,
        plan.fee_recipient,
        plan.fee_cap_bps,
        plan.admin_delay,
        list(plan.oracle_signers),
        list(plan.quote_signers),
        plan.oracle_threshold,
    )
    say(f"deploying CardlessEscrow from {owner.address} on chain {signer.chain_id}")
    receipt = signer.send("deploy CardlessEscrow", constructor.build_transaction({"gas": 0}))
    address = receipt["contractAddress"]
    if address is None:
        raise DeployError("deploy CardlessEscrow: the receipt names no contract address")
    escrow = w3.eth.contract(address=address, abi=artifact.abi)
    say(f"escrow at {address}")

    steps: list[tuple[str, ContractFunction]] = []
    steps += [
        (f"setTokenAllowed({t.symbol})", escrow.functions.setTokenAllowed(t.address, True)) for t in tokens
    ]
    if plan.allow_native:
        steps.append(("setTokenAllowed(ETH)", escrow.functions.setTokenAllowed(NATIVE_TOKEN, True)))
    steps += [(f"setSweeper({s})", escrow.functions.setSweeper(s, True)) for s in plan.sweepers]
    for what, function in steps:
        signer.call(what, function)
        say(what)

    all_tokens = (
        [TokenDeployment(symbol="ETH", address=NATIVE_TOKEN, decimals=18)] if plan.allow_native else []
    )
    return Deployment(
        chain_id=signer.chain_id,
        rpc_url=plan.rpc_url,
        escrow=address,
        escrow_source_hash=artifact.source_hash,
        owner=owner.address,
        fee_recipient=plan.fee_recipient,
        quote_signers=list(plan.quote_signers),
        oracle_signers=list(plan.oracle_signers),
        tokens=all_tokens + tokens,
        deployed_block=receipt["blockNumber"],
    )
