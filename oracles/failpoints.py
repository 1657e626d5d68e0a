"""Named failpoints for crash tests.

``CARDLESS_FAILPOINTS=name[,name...]`` makes the process kill itself with SIGKILL the first time it
reaches a listed point, so tests can crash the oracle exactly before or after an external effect
(provider call, transaction broadcast) and prove recovery. Unset in production: a no-op.
"""

from __future__ import annotations

import os
import signal

__all__ = ["FAILPOINTS", "WEBHOOK_FAILPOINTS", "failpoint"]

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

# The webhook delivery job's points, crash-tested by tests/oracles/test_webhook_crash.py (not by the
# order crash matrix, whose scenarios are orders): killed after the event committed and before it was
# sent, and after it was sent but before the attempt was recorded.
WEBHOOK_FAILPOINTS: tuple[str, ...] = ("webhook.before_send", "webhook.after_send")


def _armed() -> frozenset[str]:
    return frozenset(p.strip() for p in os.environ.get("CARDLESS_FAILPOINTS", "").split(",") if p.strip())


def failpoint(name: str) -> None:
    if name not in FAILPOINTS and name not in WEBHOOK_FAILPOINTS:
        raise ValueError(f"unknown failpoint {name!r}")
    if name in _armed():
        os.kill(os.getpid(), signal.SIGKILL)
