"""The in-process py-evm chain (eth-tester) and the deployment of the Cardless contracts on it.

Tests, benchmarks and the embedded system all start chains through :func:`start_devchain` and deploy
through :func:`deploy_escrow`, so there is one way to stand the contracts up.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester, PyEVMBackend
from eth_typing import ChecksumAddress
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.providers.eth_tester.defaults import API_ENDPOINTS

from cardless.protocol import NATIVE_TOKEN, EscrowDomain
from cardless.protocol.artifacts import load_artifact

__all__ = [
    "DEV_CHAIN_ID",
    "DevChain",
    "DevPyEVMBackend",
    "deploy_contract",
    "deploy_escrow",
    "dev_api_endpoints",
    "start_devchain",
]

# The chain id of local dev chains (anvil, Hardhat): wallets and Foundry know it as a dev chain.
DEV_CHAIN_ID: Final = 31337

# eth-tester funds accounts whose keys are 1, 2, 3, ... with 1,000,000 ETH each.
_DEFAULT_KEY_COUNT = 10


class DevPyEVMBackend(PyEVMBackend):  # type: ignore[misc]  # eth-tester ships no type hints
    """eth-tester's py-evm backend on chain id :data:`DEV_CHAIN_ID` instead of 131277322940537.

    eth-tester fixes the id as a class attribute of a chain class it builds inside
    ``setup_tester_chain``; py-evm reads ``self.chain_id`` whenever it builds a VM (the EIP-155
    signature check, the ``CHAINID`` opcode), so setting it on the chain instance changes the id
    everywhere. The genesis state does not depend on it.
    """

    def reset_to_genesis(self, *args: Any, **kwargs: Any) -> None:
        super().reset_to_genesis(*args, **kwargs)
        self.chain.chain_id = DEV_CHAIN_ID


def dev_api_endpoints() -> dict[str, dict[str, Any]]:
    """web3's in-process eth-tester endpoints, reporting :data:`DEV_CHAIN_ID` (web3 hard-codes
    eth-tester's default id in ``eth_chainId`` and answers ``1`` to ``net_version``)."""
    endpoints = {namespace: dict(methods) for namespace, methods in API_ENDPOINTS.items()}
    endpoints["eth"]["chainId"] = lambda *_: DEV_CHAIN_ID
    endpoints["net"]["version"] = lambda *_: str(DEV_CHAIN_ID)
    return endpoints


@dataclasses.dataclass
class DevChain:
    """An in-process chain with funded dev accounts whose private keys are known."""

    w3: Web3
    tester: EthereumTester
    accounts: list[LocalAccount]

    def now(self) -> int:
        """Timestamp of the latest block."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def next_timestamp(self) -> int:
        """Timestamp the next mined block will get. After a snapshot revert the latest block can be minutes
        old while new blocks follow the wall clock, so "now" for a new quote must be this, not ``now()``."""
        return int(self.w3.eth.get_block("pending")["timestamp"])

    def warp(self, timestamp: int) -> None:
        """Mine an empty block at ``timestamp`` (must be later than the latest block)."""
        self.tester.time_travel(timestamp)

    def snapshot(self) -> Any:
        return self.tester.take_snapshot()

    def revert(self, snapshot_id: Any) -> None:
        self.tester.revert_to_snapshot(snapshot_id)


def start_devchain() -> DevChain:
    tester = EthereumTester(DevPyEVMBackend())
    w3 = Web3(EthereumTesterProvider(tester, api_endpoints=dev_api_endpoints()))
    accounts = [Account.from_key(i.to_bytes(32, "big")) for i in range(1, _DEFAULT_KEY_COUNT + 1)]
    known = set(w3.eth.accounts)
    missing = [a.address for a in accounts if a.address not in known]
    if missing:
        raise RuntimeError(f"eth-tester no longer funds the default keys: {missing}")
    return DevChain(w3=w3, tester=tester, accounts=accounts)


def deploy_contract(w3: Web3, name: str, *args: Any, sender: ChecksumAddress) -> Contract:
    """Deploy ``contracts/build/<name>.json`` from an unlocked ``sender`` and return the bound contract."""
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx_hash = factory.constructor(*args).transact({"from": sender})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    if receipt["status"] != 1 or receipt["contractAddress"] is None:
        raise RuntimeError(f"deploying {name} failed: {receipt}")
    return w3.eth.contract(address=receipt["contractAddress"], abi=artifact.abi)


def deploy_escrow(
    w3: Web3,
    *,
    owner: ChecksumAddress,
    fee_recipient: ChecksumAddress,
    fee_cap_bps: int,
    quote_signers: list[ChecksumAddress],
    oracle_signers: list[ChecksumAddress],
    tokens: list[ChecksumAddress],
    allow_native: bool = True,
    sweepers: list[ChecksumAddress] | None = None,
    admin_delay: int = 0,
    oracle_threshold: int = 1,
) -> tuple[Contract, EscrowDomain]:
    """Deploy and configure ``CardlessEscrow``; returns it with its EIP-712 domain.

    The signers and the threshold are constructor arguments (deployment is not an admin change, so no
    delay applies); ``admin_delay`` 0 is accepted only on dev chains (31337, 1337)."""
    escrow = deploy_contract(
        w3,
        "CardlessEscrow",
        owner,
        fee_recipient,
        fee_cap_bps,
        admin_delay,
        list(oracle_signers),
        list(quote_signers),
        oracle_threshold,
        sender=owner,
    )
    calls = [escrow.functions.setTokenAllowed(t, True) for t in tokens]
    if allow_native:
        calls.append(escrow.functions.setTokenAllowed(NATIVE_TOKEN, True))
    calls += [escrow.functions.setSweeper(s, True) for s in sweepers or []]
    for call in calls:
        receipt = w3.eth.wait_for_transaction_receipt(call.transact({"from": owner}))
        if receipt["status"] != 1:
            raise RuntimeError(f"configuring the escrow failed: {call.fn_name}")
    return escrow, EscrowDomain(chain_id=w3.eth.chain_id, verifying_contract=escrow.address)
