"""Errors raised by the ``oracles`` package.

Hierarchy::

    CardlessError (cardless.protocol)
    └── OracleError          root of this package
        ├── KeystoreError    a keystore or its password cannot be used (oracles.keys)
        └── TxSendError      a transaction could not be signed, sent or confirmed (oracles.txmanager)
"""

from __future__ import annotations

from cardless.protocol import CardlessError

__all__ = ["OracleError"]


class OracleError(CardlessError):
    """Root of every error this package raises."""
