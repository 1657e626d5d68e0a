"""The dev deployment: the test stablecoin and a configured escrow on a dev chain (unlocked accounts).

Development, tests and benches only: production deployments go through ``cardless deploy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from eth_typing import ChecksumAddress
from web3 import Web3

from cardless.devchain.chain import deploy_contract, deploy_escrow
from cardless.protocol import NATIVE_TOKEN
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import Deployment, DeploymentError, TokenDeployment

__all__ = [
    "DEV_FEE_CAP_BPS",
    "DEV_MINT_AMOUNT",
    "DEV_TOKEN_DECIMALS",
    "DEV_TOKEN_NAME",
    "DEV_TOKEN_SYMBOL",
    "deploy_dev_system",
]

DEV_TOKEN_NAME: Final = "Test USD Coin"
DEV_TOKEN_SYMBOL: Final = "tUSDC"
DEV_TOKEN_DECIMALS: Final = 6
DEV_MINT_AMOUNT: Final = 1_000_000 * 10**DEV_TOKEN_DECIMALS  # per dev account
DEV_FEE_CAP_BPS: Final = 1_000

_ESCROW: Final = "CardlessEscrow"


def deploy_dev_system(
    w3: Web3,
    *,
    quote_signer: ChecksumAddress,
    oracle_signer: ChecksumAddress,
    owner: ChecksumAddress | None = None,
    fee_recipient: ChecksumAddress | None = None,
    fee_cap_bps: int = DEV_FEE_CAP_BPS,
    funded_accounts: Sequence[ChecksumAddress] | None = None,
    mint_amount: int = DEV_MINT_AMOUNT,
    rpc_url: str | None = None,
    sweeper: ChecksumAddress | None = None,
) -> Deployment:
    """Deploy the test stablecoin and the escrow on a dev chain; returns the deployment to save.

    The test stablecoin (MockERC20 "Test USD Coin"/tUSDC, 6 decimals) gets ``mint_amount`` minted to
    each of ``funded_accounts`` (default: every unlocked account of the node). The escrow allows it
    and native ETH, and authorises one quote and one oracle signer. ``owner`` (default: the node's
    first account) and ``fee_recipient`` (default: its second) must be unlocked on the node.
    """
    accounts: list[ChecksumAddress] = list(w3.eth.accounts)
    owner = owner or accounts[0]
    fee_recipient = fee_recipient or accounts[1]
    url = rpc_url or getattr(w3.provider, "endpoint_uri", None)
    if not url:
        raise DeploymentError("rpc_url", "the provider has no URL; pass rpc_url")
    first_block = w3.eth.block_number + 1
    usdc = deploy_contract(
        w3, "test-helpers/MockERC20", DEV_TOKEN_NAME, DEV_TOKEN_SYMBOL, DEV_TOKEN_DECIMALS, sender=owner
    )
    for account in accounts if funded_accounts is None else funded_accounts:
        receipt = w3.eth.wait_for_transaction_receipt(
            usdc.functions.mint(account, mint_amount).transact({"from": owner})
        )
        if receipt["status"] != 1:
            raise RuntimeError(f"minting {DEV_TOKEN_SYMBOL} to {account} failed")
    escrow, _ = deploy_escrow(
        w3,
        owner=owner,
        fee_recipient=fee_recipient,
        fee_cap_bps=fee_cap_bps,
        quote_signers=[quote_signer],
        oracle_signers=[oracle_signer],
        tokens=[usdc.address],
        allow_native=True,
        sweepers=[sweeper] if sweeper else [],
    )
    return Deployment(
        chain_id=w3.eth.chain_id,
        rpc_url=str(url),
        escrow=escrow.address,
        escrow_source_hash=load_artifact(_ESCROW).source_hash,
        owner=owner,
        fee_recipient=fee_recipient,
        quote_signers=[quote_signer],
        oracle_signers=[oracle_signer],
        tokens=[
            TokenDeployment(symbol="ETH", address=NATIVE_TOKEN, decimals=18),
            TokenDeployment(symbol=DEV_TOKEN_SYMBOL, address=usdc.address, decimals=DEV_TOKEN_DECIMALS),
        ],
        deployed_block=first_block,
    )
