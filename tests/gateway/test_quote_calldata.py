"""The quote's calldata encoder (gateway.services.quotes._abi_encode) against eth_abi, byte for byte."""

from __future__ import annotations

import random
import secrets
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import to_checksum_address

from gateway.services.quotes import _abi_encode, _calldata, _calldata_encoder, _encodable


def _address() -> str:
    return to_checksum_address(secrets.token_hex(20))


def _order(rng: random.Random) -> tuple[Any, ...]:
    return (
        secrets.token_bytes(32),
        _address(),
        _address(),
        _address(),
        rng.choice([0, 1, 2**256 - 1, rng.randrange(2**256)]),
        rng.choice([0, 2**16 - 1, rng.randrange(2**16)]),
        rng.choice([0, 2**48 - 1, rng.randrange(2**48)]),
        rng.randrange(2**48),
        secrets.token_bytes(32),
        secrets.token_bytes(32),
    )


def test_pay_and_approve_calldata_are_eth_abis_bytes() -> None:
    rng = random.Random(7)
    _, pay, ours = _calldata_encoder("CardlessEscrow", "pay")
    assert ours
    for _ in range(300):
        args = [_order(rng), _address(), secrets.token_bytes(rng.choice([0, 1, 31, 32, 33, 64, 65, 200]))]
        assert _abi_encode(pay, args) == encode(pay, args)
    _, approve, ours = _calldata_encoder(None, "approve")
    assert ours
    for amount in (0, 1, 10**6, 2**256 - 1):
        args = [_address(), amount]
        assert _abi_encode(approve, args) == encode(approve, args)
    selector = _calldata_encoder(None, "approve")[0]
    assert _calldata(None, "approve", args) == "0x" + (selector + encode(approve, args)).hex()


@pytest.mark.parametrize(
    ("types", "args"),
    [
        pytest.param(("uint16",), [2**16], id="uint-too-large"),
        pytest.param(("uint256",), [-1], id="uint-negative"),
        pytest.param(("uint256",), [True], id="bool-as-uint"),
        pytest.param(("uint256",), ["1"], id="str-as-uint"),
        pytest.param(("bytes32",), [b"\x01" * 31], id="bytes32-short"),
        pytest.param(("address",), ["0x" + "11" * 19], id="address-short"),
        pytest.param(("address",), ["11" * 20], id="address-without-0x"),
        pytest.param(("bytes",), ["0x00"], id="str-as-bytes"),
        pytest.param(("(uint8,uint8)",), [(1,)], id="tuple-short"),
        pytest.param(("uint8", "uint8"), [1], id="too-few-arguments"),
    ],
)
def test_what_eth_abi_refuses_is_refused(types: tuple[str, ...], args: list[Any]) -> None:
    with pytest.raises(ValueError):
        _abi_encode(types, args)


def test_other_types_are_left_to_eth_abi() -> None:
    assert _encodable("(bytes32,address,uint48)") and _encodable("bytes") and _encodable("uint256")
    for other in (
        "string",
        "uint",
        "uint7",
        "int256",
        "bytes31",
        "address[]",
        "(uint8,(uint8,uint8))",
        "bool",
    ):
        assert not _encodable(other), other
