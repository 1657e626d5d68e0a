"""Readers that present a tampered history: the real chain's answers, edited on the way to the auditor.

The real escrow refuses to produce these histories (it checks signers, caps and signatures), so the
tests edit what the node returns instead: logs dropped, moved or inserted, calldata altered. What the
auditor sees is then exactly what a lying node, or an escrow that skipped its checks, would show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak

from cardless.audit import ChainReader

__all__ = ["TamperedReader", "crafted_log", "topic"]

LogEdit = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


def crafted_log(
    escrow: str,
    before: dict[str, Any],
    signature: str,
    indexed: Sequence[bytes],
    types: list[str],
    values: list[Any],
) -> dict[str, Any]:
    """A log placed just before ``before`` (same block), in a transaction of its own."""
    return {
        "address": escrow,
        "topics": [topic(signature), *("0x" + t.rjust(32, b"\0").hex() for t in indexed)],
        "data": "0x" + abi_encode(types, values).hex(),
        "blockNumber": before["blockNumber"],
        "transactionHash": "0x" + keccak(text=f"crafted {signature} {values}").hex(),
        "transactionIndex": before["transactionIndex"],
        "logIndex": "0x0",
        "removed": False,
    }


class TamperedReader(ChainReader):
    """Applies ``edit`` to the whole log list (read once, unpaged) and ``edit_tx`` to each transaction."""

    def __init__(
        self,
        *args: Any,
        edit: LogEdit | None = None,
        edit_tx: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.edit, self.edit_tx = edit, edit_tx
        self._logs: list[dict[str, Any]] | None = None

    def get_logs(self, address: str, first: int, last: int, topics: list[Any] | None = None) -> list[Any]:
        if self._logs is None:
            logs = super().get_logs(address, 0, self.block_number(), None)
            self._logs = self.edit(logs) if self.edit else logs
        return [log for log in self._logs if first <= int(log["blockNumber"], 16) <= last]

    def transactions(self, hashes: Sequence[str]) -> dict[str, dict[str, Any]]:
        found = super().transactions(hashes)
        return {h: self.edit_tx(dict(tx)) if self.edit_tx else tx for h, tx in found.items()}
