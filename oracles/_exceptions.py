"""Errors raised by the ``oracles`` package.

Hierarchy::

    OracleError
    ├── ProtocolError        a value does not fit the wire protocol (names the field)
    ├── ArtifactError        contracts/build output missing, corrupt or for another contract
    └── ContractRevert       a contract call reverted; carries the decoded custom error
"""

from __future__ import annotations

from typing import Any

__all__ = ["ArtifactError", "ContractRevert", "OracleError", "ProtocolError"]


class OracleError(Exception):
    """Root of every error this package raises."""


class ProtocolError(OracleError, ValueError):
    """A value cannot be encoded: ``field`` says which, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ArtifactError(OracleError):
    """The committed contract build output cannot be used."""


# The name mirrors Solidity's `revert` and is public API (tests and callers catch it), hence no Error suffix.
class ContractRevert(OracleError):  # noqa: N818
    """A call reverted.

    ``name`` is the custom error (or ``Error``/``Panic``/``unknown``), ``args`` its values.
    """

    def __init__(self, name: str, args: tuple[Any, ...], data: bytes) -> None:
        super().__init__(f"{name}{args!r}")
        self.name = name
        self.args_ = args
        self.data = data
