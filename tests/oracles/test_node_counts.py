"""The transaction manager reads the key's nonce count (and the head) as raw JSON-RPC: a node's answer
is taken only as a JSON-RPC quantity of at most 256 bits, anything else refused naming the method."""

from __future__ import annotations

from typing import Any

import pytest
from web3.exceptions import Web3RPCError

from oracles.txmanager import _count


@pytest.mark.parametrize(("answer", "expected"), [("0x0", 0), ("0x1a", 26), ("0xFF", 255), (7, 7)])
def test_a_quantity_is_read(answer: Any, expected: int) -> None:
    assert _count(answer, "eth_getTransactionCount") == expected


@pytest.mark.parametrize(
    "answer",
    [
        "-0x1",
        "0x-1",
        "0x",
        "1a",
        " 0x1",
        "0x1 ",
        "0x" + "f" * 65,
        "0x1_0",
        -1,
        2**256,
        1.5,
        True,
        None,
        {"count": 1},
        ["0x1"],
    ],
)
def test_anything_else_is_refused_naming_the_method(answer: Any) -> None:
    with pytest.raises(Web3RPCError, match=r"eth_getTransactionCount answered .*: not a quantity"):
        _count(answer, "eth_getTransactionCount")
