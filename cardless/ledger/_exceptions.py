"""Errors raised by :mod:`cardless.ledger`.

Hierarchy::

    CardlessError (cardless.protocol)
    └── LedgerError              root of this package
        ├── IllegalTransition    a state change the transition table does not allow (ledger.transitions)
        └── CipherError          the account key or a ciphertext cannot be used (ledger.cipher)
"""

from __future__ import annotations

from cardless.protocol import CardlessError

__all__ = ["LedgerError"]


class LedgerError(CardlessError):
    """Root of every error this package raises."""
