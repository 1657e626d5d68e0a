"""Turns a reverted call into a :class:`ContractRevert` with the decoded custom error.

Each backend reports reverts its own way (../shared/TOOLCHAIN.md): eth-tester raises
``TransactionFailed`` with the revert bytes in its message, a Hardhat node ``ContractLogicError``
and anvil ``ContractCustomError`` with hex in ``.data``. This is the one place that knows.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from typing import Any

from eth_abi import decode
from eth_utils import function_signature_to_4byte_selector, to_bytes, to_checksum_address
from web3.exceptions import ContractCustomError, ContractLogicError

from cardless.protocol._exceptions import ContractRevert

__all__ = ["RevertDecoder", "revert_data"]

_ERROR_STRING = bytes.fromhex("08c379a0")
_PANIC = bytes.fromhex("4e487b71")


def _abi_type(param: dict[str, Any]) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return str(param["type"])


def revert_data(exc: BaseException) -> bytes | None:
    """The raw revert bytes carried by ``exc``, or None if it is not a revert with data."""
    if isinstance(exc, ContractCustomError | ContractLogicError):
        data = exc.data
        if isinstance(data, str) and data.startswith("0x"):
            return to_bytes(hexstr=data)
        if isinstance(data, bytes):
            return data
        return None
    if type(exc).__name__ == "TransactionFailed":  # eth_tester.exceptions, imported lazily
        message = str(exc.args[0]) if exc.args else ""
        prefix = "execution reverted: "
        if message.startswith(prefix):
            literal = message[len(prefix) :]
            try:
                value = ast.literal_eval(literal)
            except (ValueError, SyntaxError):
                # A plain `require(cond, "reason")`: eth-tester hands over the decoded reason string.
                return _ERROR_STRING + _encode_string(literal)
            if isinstance(value, bytes):
                return value
            if isinstance(value, str):  # a plain reason string already decoded by the backend
                return _ERROR_STRING + _encode_string(value)
        return b""
    return None


def _encode_string(value: str) -> bytes:
    from eth_abi import encode

    return encode(["string"], [value])


class RevertDecoder:
    """Decodes revert data against the custom errors of one or more ABIs."""

    def __init__(self, abis: Iterable[list[dict[str, Any]]]) -> None:
        self._errors: dict[bytes, tuple[str, list[str]]] = {}
        for abi in abis:
            for item in abi:
                if item.get("type") != "error":
                    continue
                types = [_abi_type(p) for p in item["inputs"]]
                selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
                self._errors[selector] = (item["name"], types)

    def decode(self, data: bytes) -> ContractRevert:
        selector, body = data[:4], data[4:]
        if selector == _ERROR_STRING:
            return ContractRevert("Error", tuple(decode(["string"], body)), data)
        if selector == _PANIC:
            return ContractRevert("Panic", tuple(decode(["uint256"], body)), data)
        known = self._errors.get(selector)
        if known is None:
            return ContractRevert("unknown", (data.hex(),), data)
        name, types = known
        values = decode(types, body)
        # eth-abi returns lower-case addresses; checksum them so they compare equal to web3's.
        values = tuple(
            to_checksum_address(v) if t == "address" else v for t, v in zip(types, values, strict=True)
        )
        return ContractRevert(name, values, data)

    def from_exception(self, exc: BaseException) -> ContractRevert | None:
        data = revert_data(exc)
        return None if data is None else self.decode(data)
