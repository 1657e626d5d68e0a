"""Named failpoints for crash tests.

``CARDLESS_FAILPOINTS=name[,name...]`` makes the process kill itself with SIGKILL the first time it
reaches a listed point, so tests can crash the oracle exactly before or after an external effect
(provider call, transaction broadcast) and prove recovery. Unset in production: a no-op.
"""

from __future__ import annotations

import os
import signal

__all__ = ["FAILPOINTS", "failpoint"]

# Every failpoint in the code base, so the crash tests can enumerate them.
FAILPOINTS: tuple[str, ...] = (
    "watcher.after_logs_before_commit",
    "fulfilment.after_risk_commit",
    "provider.before_submit",
    "provider.after_submit",
    "provider.before_query",
    "provider.after_query",
    "proof.after_sign_commit",
    "tx.before_broadcast",
    "tx.after_broadcast",
    "refund.after_sign_commit",
)


def _armed() -> frozenset[str]:
    return frozenset(p.strip() for p in os.environ.get("CARDLESS_FAILPOINTS", "").split(",") if p.strip())


def failpoint(name: str) -> None:
    if name not in FAILPOINTS:
        raise ValueError(f"unknown failpoint {name!r}")
    if name in _armed():
        os.kill(os.getpid(), signal.SIGKILL)
