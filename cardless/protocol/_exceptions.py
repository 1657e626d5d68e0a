"""Errors raised by :mod:`cardless.protocol`, and the root every Cardless package's errors share.

Hierarchy::

    CardlessError               root of every error Cardless raises (each package adds its own root)
    └── ProtocolBaseError        root of this package
        ├── ProtocolError        a value does not fit the wire protocol (names the field)
        ├── ArtifactError        contracts/build output missing, corrupt or for another contract
        ├── DeploymentError      a deployment file or the chain it names is wrong (names the field)
        └── ContractRevert       a contract call reverted; carries the decoded custom error
"""

from __future__ import annotations

from typing import Any

__all__ = ["ArtifactError", "CardlessError", "ContractRevert", "ProtocolBaseError", "ProtocolError"]


class CardlessError(Exception):
    """Root of every error Cardless raises."""


class ProtocolBaseError(CardlessError):
    """Root of every error :mod:`cardless.protocol` raises."""


class ProtocolError(ProtocolBaseError, ValueError):
    """A value cannot be encoded: ``field`` says which, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ArtifactError(ProtocolBaseError):
    """The committed contract build output cannot be used."""


# The name mirrors Solidity's `revert` and is public API (tests and callers catch it), hence no Error suffix.
class ContractRevert(ProtocolBaseError):  # noqa: N818
    """A call reverted.

    ``name`` is the custom error (or ``Error``/``Panic``/``unknown``), ``args`` its values.
    """

    def __init__(self, name: str, args: tuple[Any, ...], data: bytes) -> None:
        super().__init__(f"{name}{args!r}")
        self.name = name
        self.args_ = args
        self.data = data
