"""``cardless audit``: verify every order and every wei of an escrow from chain data alone.

Imports the protocol package only (an import-linter contract and ``tests/audit/test_imports.py`` hold
it to that): an auditor needs an RPC endpoint and the escrow's address, never the operator's database.

- :class:`ChainReader` (:mod:`.rpc`): counted JSON-RPC, ranged ``eth_getLogs`` pages that shrink when a
  node refuses a range, batches;
- :class:`Auditor` (:mod:`.auditor`): the scan, the per-order checks, the books; returns an
  :class:`AuditReport` whose :class:`AuditState` resumes a later run (``--state FILE``);
- :func:`load_receipts` / :func:`check_receipts` (:mod:`.receipts`): receipt hashes and account commitments.

Rules are listed in :data:`RULES` and in docs/audit.md.
"""

from cardless.audit._exceptions import (
    AuditError,
    NotAnEscrowError,
    ReceiptsFileError,
    RpcError,
    StateFileError,
)
from cardless.audit.auditor import ORDER_EVENTS, Auditor, AuditReport
from cardless.audit.model import RULES, AuditState, OrderRecord, Step, Violation
from cardless.audit.receipts import check_receipts, load_receipts
from cardless.audit.rpc import DEFAULT_PAGE_BLOCKS, ChainReader, RpcStats

__all__ = [
    "DEFAULT_PAGE_BLOCKS",
    "ORDER_EVENTS",
    "RULES",
    "AuditError",
    "AuditReport",
    "AuditState",
    "Auditor",
    "ChainReader",
    "NotAnEscrowError",
    "OrderRecord",
    "ReceiptsFileError",
    "RpcError",
    "RpcStats",
    "StateFileError",
    "Step",
    "Violation",
    "check_receipts",
    "load_receipts",
]
