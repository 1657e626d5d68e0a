"""The oracle reads the node's counts (the key's nonce, the head, a log's block number and index, a
receipt's status) as raw JSON-RPC: an answer is taken only as a JSON-RPC quantity of at most 256 bits,
anything else refused naming the method or field (``oracles.rawabi.quantity``)."""

from __future__ import annotations

from typing import Any

import pytest
from web3.exceptions import Web3RPCError

from oracles.rawabi import _log_entry, quantity


@pytest.mark.parametrize(("answer", "expected"), [("0x0", 0), ("0x1a", 26), ("0xFF", 255), (7, 7)])
def test_a_quantity_is_read(answer: Any, expected: int) -> None:
    assert quantity(answer, "eth_getTransactionCount") == expected


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
        quantity(answer, "eth_getTransactionCount")


_LOG = {
    "address": "0x" + "11" * 20,
    "topics": ["0x" + "22" * 32],
    "data": "0x",
    "blockNumber": "0x10",
    "blockHash": "0x" + "33" * 32,
    "transactionHash": "0x" + "44" * 32,
    "transactionIndex": "0x0",
    "logIndex": "0x2",
}


def test_a_log_entrys_numbers_are_read() -> None:
    entry = _log_entry(_LOG)
    assert (entry["blockNumber"], entry["transactionIndex"], entry["logIndex"]) == (16, 0, 2)


@pytest.mark.parametrize("field", ["blockNumber", "transactionIndex", "logIndex"])
@pytest.mark.parametrize("answer", ["-0x1", "0x" + "f" * 65, 1.5, True])
def test_a_log_entry_with_a_number_that_is_not_a_quantity_is_refused_naming_the_field(
    field: str, answer: Any
) -> None:
    """int() took "-0x1" as -1 and 1.5 as 1: a log placed at a negative block, or one rounded."""
    with pytest.raises(Web3RPCError, match=rf"eth_getLogs {field} answered .*: not a quantity"):
        _log_entry({**_LOG, field: answer})
