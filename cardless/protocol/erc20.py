"""The standard ERC-20 interface (EIP-20) as an ABI, for calls on any allow-listed token.

The escrow's tokens are whatever the owner allow-lists, so nothing here may depend on the test
stablecoin's build: a wallet's ``approve`` is built from this ABI, and the deployment check reads
``symbol``/``decimals`` through it.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["ERC20_ABI"]


def _function(
    name: str, inputs: list[tuple[str, str]], outputs: list[str], mutability: str
) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "stateMutability": mutability,
        "inputs": [{"name": n, "type": t} for n, t in inputs],
        "outputs": [{"name": "", "type": t} for t in outputs],
    }


def _event(name: str, fields: list[tuple[str, str, bool]]) -> dict[str, Any]:
    return {
        "type": "event",
        "name": name,
        "anonymous": False,
        "inputs": [{"name": n, "type": t, "indexed": i} for n, t, i in fields],
    }


ERC20_ABI: Final[list[dict[str, Any]]] = [
    _function("name", [], ["string"], "view"),
    _function("symbol", [], ["string"], "view"),
    _function("decimals", [], ["uint8"], "view"),
    _function("totalSupply", [], ["uint256"], "view"),
    _function("balanceOf", [("account", "address")], ["uint256"], "view"),
    _function("allowance", [("owner", "address"), ("spender", "address")], ["uint256"], "view"),
    _function("transfer", [("to", "address"), ("value", "uint256")], ["bool"], "nonpayable"),
    _function("approve", [("spender", "address"), ("value", "uint256")], ["bool"], "nonpayable"),
    _function(
        "transferFrom", [("from", "address"), ("to", "address"), ("value", "uint256")], ["bool"], "nonpayable"
    ),
    _event("Transfer", [("from", "address", True), ("to", "address", True), ("value", "uint256", False)]),
    _event(
        "Approval", [("owner", "address", True), ("spender", "address", True), ("value", "uint256", False)]
    ),
]
