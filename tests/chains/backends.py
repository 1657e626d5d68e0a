"""The two chain backends of the shared chain suite: the embedded py-evm node and anvil (npm).

Both are reached only over HTTP JSON-RPC, with the same dev accounts (keys 1..10) and chain id 31337.
:class:`ChainBackend` gives the suites what differs between them: mining blocks, pausing automine
(a mempool), and the ``DevChain`` shape the contract harness drives (:class:`RemoteChain`). anvil mines
asynchronously, so every transaction's receipt is awaited (``wait``), never assumed.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.exceptions import TransactionNotFound
from web3.types import TxReceipt

from cardless.devchain.anvil import AnvilNode, dev_accounts
from cardless.devchain.node import DevNode
from tests.contracts.harness import EscrowEnv, build_env
from tests.support.node import rpc

__all__ = ["AnvilBackend", "ChainBackend", "ChainEscrowEnv", "EmbeddedBackend", "RemoteChain", "wait"]


def wait(w3: Web3, tx_hash: Any, timeout: float = 30) -> TxReceipt:
    """The receipt of ``tx_hash``, polled every 5 ms (anvil mines a moment after it answers)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            receipt: TxReceipt = w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            return receipt
        except TransactionNotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


@dataclasses.dataclass
class RemoteChain:
    """``cardless.devchain.chain.DevChain``'s shape over JSON-RPC, for ``tests.contracts.harness``."""

    w3: Web3
    accounts: list[LocalAccount]

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def next_timestamp(self) -> int:
        return max(int(self.w3.eth.get_block("pending")["timestamp"]), self.now() + 1)

    def warp(self, timestamp: int) -> None:
        rpc(self.w3, "evm_mine", timestamp)

    def snapshot(self) -> Any:
        return rpc(self.w3, "evm_snapshot")

    def revert(self, snapshot_id: Any) -> None:
        assert rpc(self.w3, "evm_revert", snapshot_id) is True


@dataclasses.dataclass
class ChainEscrowEnv(EscrowEnv):
    """The contract harness with every receipt awaited (anvil mines asynchronously)."""

    def send(self, call: Any, sender: str, value: int = 0) -> TxReceipt:
        try:
            call.call({"from": sender, "value": value}, block_identifier="pending")
            tx_hash = call.transact({"from": sender, "value": value, "gas": 8_000_000})
        except Exception as exc:
            decoded = self.decoder.from_exception(exc)
            if decoded is None:
                raise
            raise decoded from exc
        receipt = wait(self.w3, tx_hash)
        assert receipt["status"] == 1, receipt
        return receipt


class ChainBackend:
    """One node of the suite: its URL, a web3 client, and what the suites need from it."""

    name = ""
    url = ""

    def __init__(self, url: str) -> None:
        self.url = url
        self.w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 30}))
        self.accounts = dev_accounts()

    def mine(self, blocks: int = 1) -> None:
        rpc(self.w3, "anvil_mine", blocks)

    def automine(self, on: bool) -> None:
        """Mine each transaction as it arrives (the default), or keep them pending until ``mine``."""
        raise NotImplementedError

    def escrow_env(self) -> ChainEscrowEnv:
        """The contract harness (escrow, two mock stablecoins, quote and oracle keys) on this node."""
        env = build_env(RemoteChain(self.w3, self.accounts))  # type: ignore[arg-type]
        return ChainEscrowEnv(**{f.name: getattr(env, f.name) for f in dataclasses.fields(env)})

    def send(self, tx: dict[str, Any]) -> TxReceipt:
        """Send from an unlocked dev account and wait for the receipt."""
        return wait(self.w3, self.w3.eth.send_transaction(tx))  # type: ignore[arg-type]


class EmbeddedBackend(ChainBackend):
    name = "embedded"

    def __init__(self, node: DevNode) -> None:
        super().__init__(node.url)
        self.node = node

    def automine(self, on: bool) -> None:
        # eth-tester's own switch (the DevNode has no evm_setAutomine); a new transaction with a pending
        # nonce replaces the old one in its pool.
        with self.node.lock:
            if on:
                self.node.chain.tester.enable_auto_mine_transactions()
            else:
                self.node.chain.tester.disable_auto_mine_transactions()


class AnvilBackend(ChainBackend):
    name = "anvil"

    def __init__(self, node: AnvilNode) -> None:
        super().__init__(node.url)
        self.node = node

    def automine(self, on: bool) -> None:
        rpc(self.w3, "evm_setAutomine", on)
