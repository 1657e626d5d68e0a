"""The audit's exceptions. One root; what the caller does next is in each name::

    AuditError            the audit could not run to the end (nothing is concluded about the escrow)
    ├── RpcError          the node refused or failed a request, even with smaller ranges: retry later
    ├── NotAnEscrowError  the address holds no Cardless escrow, or one of another protocol version
    ├── StateFileError    ``--state FILE`` is unreadable, or belongs to another escrow or chain
    └── ReceiptsFileError ``--receipts FILE`` is not the documented format

A violation found in the chain data is not an exception: it is a result (``Violation``).
"""

from __future__ import annotations

from cardless.protocol import CardlessError

__all__ = ["AuditError", "NotAnEscrowError", "ReceiptsFileError", "RpcError", "StateFileError"]


class AuditError(CardlessError):
    """The audit could not run to the end."""


class RpcError(AuditError):
    """The node refused or failed a request."""


class NotAnEscrowError(AuditError):
    """No Cardless escrow at the address, or an unknown protocol version."""


class StateFileError(AuditError):
    """The state file cannot be used for this escrow."""


class ReceiptsFileError(AuditError):
    """The receipts file is not in the documented format."""
