"""Cardless oracle: chain watcher, fulfilment state machine, proof poster, transaction manager.

The wire protocol shared with the gateway and auditors lives in :mod:`oracles.protocol`.
"""

from oracles._exceptions import ArtifactError, ContractRevert, OracleError, ProtocolError

__all__ = ["ArtifactError", "ContractRevert", "OracleError", "ProtocolError"]
