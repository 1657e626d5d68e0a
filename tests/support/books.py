"""The money books of the escrow, read from the chain, for tests that check every unit ended where it
should: a buyer's money (wallet + escrow balance), a merchant's money (escrow balance + payout wallet,
so the oracle's sweep moving one to the other changes nothing), the fee balance.

Amounts are integers in base units; ``NATIVE_TOKEN`` is ETH.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from web3 import Web3
from web3.contract import Contract

from cardless.protocol import NATIVE_TOKEN
from cardless.protocol.artifacts import load_artifact

__all__ = ["Books", "Totals"]


@dataclasses.dataclass(frozen=True)
class Totals:
    """One token's books at a moment: merchants' money, the fee balance, buyers' money."""

    merchants: int
    fees: int
    buyers: int


class Books:
    def __init__(self, w3: Web3, escrow: Contract) -> None:
        self.w3, self.escrow = w3, escrow
        self._erc20_abi = load_artifact("test-helpers/MockERC20").abi

    def wallet(self, token: str, account: str) -> int:
        """``account``'s own balance of ``token`` (ETH or an ERC-20), outside the escrow."""
        account = Web3.to_checksum_address(account)
        if token == NATIVE_TOKEN:
            return int(self.w3.eth.get_balance(account))
        contract = self.w3.eth.contract(address=Web3.to_checksum_address(token), abi=self._erc20_abi)
        return int(contract.functions.balanceOf(account).call())

    def in_escrow(self, token: str, account: str) -> int:
        """What the escrow owes ``account`` in ``token`` (``balanceOf``; withdrawable)."""
        return int(self.escrow.functions.balanceOf(Web3.to_checksum_address(account), token).call())

    def buyer(self, token: str, buyer: str) -> int:
        """A buyer's money: wallet + escrow balance (a refund the escrow could not push waits there)."""
        return self.wallet(token, buyer) + self.in_escrow(token, buyer)

    def merchant(self, token: str, merchant: str) -> int:
        """A merchant's money: escrow balance + the payout wallet a withdrawal pays."""
        payout = self.escrow.functions.payoutAddressOf(Web3.to_checksum_address(merchant)).call()
        return self.in_escrow(token, merchant) + self.wallet(token, payout)

    def fees(self, token: str) -> int:
        return int(self.escrow.functions.feeBalance(token).call())

    def totals(self, token: str, *, merchants: Iterable[str], buyers: Iterable[str]) -> Totals:
        return Totals(
            merchants=sum(self.merchant(token, m) for m in merchants),
            fees=self.fees(token),
            buyers=sum(self.buyer(token, b) for b in buyers),
        )
