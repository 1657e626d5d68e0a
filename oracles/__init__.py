"""Cardless oracle: chain watcher, fulfilment pipeline, proof poster, transaction manager.

The wire protocol shared with the gateway and auditors lives in :mod:`cardless.protocol`; the
database the oracle shares with the gateway lives in :mod:`cardless.ledger`.
"""

from oracles._exceptions import OracleError

__all__ = ["OracleError"]
