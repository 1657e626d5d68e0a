"""Operations: readiness (database, chain, providers, oracle lag) and the Prometheus metrics.

The metrics that describe the system rather than this process (orders by state, the webhook backlog,
the oracle's lag behind the chain, providers' circuit state) are read at scrape time from the
database, the chain and the adapters by a collector, so every gateway process reports the same
numbers and nothing has to be kept in step. Counters of this process (quote rate-limit hits) are
``prometheus_client`` counters in the app's own registry (no global registry: tests build several apps).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from adapters import ProviderAdapter
from cardless.ledger.models import ChainCursor, Order, OrderState, utcnow
from cardless.ledger.outbox import DeliveryStatus, WebhookDelivery, aware

__all__ = ["Check", "Metrics", "Readiness", "readiness"]

log = logging.getLogger(__name__)

ORACLE_CURSOR = "escrow"
MAX_ORACLE_LAG_BLOCKS = 50
"""Readiness fails when the oracle's watcher is this many blocks behind the head (beyond its
confirmation depth): payments are not being seen."""


@dataclasses.dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, Check]


def _oracle_lag(session: Session, head: int) -> int | None:
    cursor = session.get(ChainCursor, ORACLE_CURSOR)
    return None if cursor is None else max(head - cursor.block_number, 0)


def readiness(
    session: Session,
    w3: Web3,
    adapters: Mapping[str, ProviderAdapter],
    *,
    confirmations: int = 0,
) -> Readiness:
    """Whether this gateway can take orders that will be fulfilled: each dependency checked, the
    failure named without exception text (it can name hosts or credentials; it goes to the log)."""
    checks: dict[str, Check] = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = Check(True, "answers")
    except Exception:
        log.warning("readyz: the database does not answer", exc_info=True)
        checks["database"] = Check(False, "does not answer")
    head: int | None = None
    try:
        head = int(w3.eth.block_number)
        checks["chain"] = Check(True, f"head {head}")
    except Exception:
        log.warning("readyz: the chain does not answer", exc_info=True)
        checks["chain"] = Check(False, "does not answer")
    open_circuits = [name for name, a in adapters.items() if a.health().state.value == "open"]
    if adapters and len(open_circuits) == len(adapters):
        checks["providers"] = Check(False, "every provider's circuit is open")
    else:
        checks["providers"] = Check(
            True, f"{len(adapters) - len(open_circuits)} of {len(adapters)} available"
        )
    if head is not None and checks["database"].ok:
        lag = _oracle_lag(session, head)
        if lag is None:
            checks["oracle"] = Check(False, "the oracle has not processed any block yet")
        else:
            behind = lag - confirmations
            checks["oracle"] = Check(behind <= MAX_ORACLE_LAG_BLOCKS, f"{lag} blocks behind the head")
    else:
        checks["oracle"] = Check(False, "cannot tell without the chain and the database")
    return Readiness(ready=all(c.ok for c in checks.values()), checks=checks)


class _SystemCollector(Collector):
    def __init__(
        self,
        sessions: sessionmaker[Session],
        w3: Callable[[], Web3 | None],
        adapters: Callable[[], Mapping[str, ProviderAdapter]],
    ) -> None:
        self.sessions = sessions
        self.w3 = w3
        self.adapters = adapters

    def collect(self) -> Iterator[Metric]:
        orders = GaugeMetricFamily("cardless_orders", "Orders by state", labels=["state"])
        backlog = GaugeMetricFamily(
            "cardless_webhook_backlog", "Webhook deliveries not yet delivered, by status", labels=["status"]
        )
        oldest = GaugeMetricFamily(
            "cardless_webhook_oldest_pending_seconds", "Age of the oldest pending webhook delivery"
        )
        lag = GaugeMetricFamily(
            "cardless_oracle_lag_blocks", "Blocks between the chain head and the oracle's cursor"
        )
        breaker = GaugeMetricFamily(
            "cardless_provider_consecutive_failures",
            "Consecutive failed calls per provider (its circuit opens past a threshold)",
            labels=["provider"],
        )
        circuit = GaugeMetricFamily(
            "cardless_provider_circuit_open", "1 while a provider's circuit is open", labels=["provider"]
        )
        try:
            with self.sessions() as session:
                by_state = session.execute(select(Order.state, func.count()).group_by(Order.state))
                counts = {state: n for state, n in by_state}
                for state in OrderState:
                    orders.add_metric([state.value], counts.get(state.value, 0))
                pending = {
                    status: n
                    for status, n in session.execute(
                        select(WebhookDelivery.status, func.count())
                        .where(WebhookDelivery.status != DeliveryStatus.DELIVERED.value)
                        .group_by(WebhookDelivery.status)
                    )
                }
                for status in (DeliveryStatus.PENDING, DeliveryStatus.FAILED):
                    backlog.add_metric([status.value], pending.get(status.value, 0))
                first = aware(
                    session.scalar(
                        select(func.min(WebhookDelivery.created_at)).where(
                            WebhookDelivery.status == DeliveryStatus.PENDING.value
                        )
                    )
                )
                oldest.add_metric([], (utcnow() - first).total_seconds() if first else 0.0)
                w3 = self.w3()
                if w3 is not None:
                    behind = _oracle_lag(session, int(w3.eth.block_number))
                    if behind is not None:
                        lag.add_metric([], behind)
        except Exception:  # a scrape reports what it can; the failure goes to the log
            log.warning("metrics: the database or the chain did not answer", exc_info=True)
        for name, adapter in self.adapters().items():
            snapshot = adapter.health()
            breaker.add_metric([name], snapshot.consecutive_failures)
            circuit.add_metric([name], 1 if snapshot.state.value == "open" else 0)
        yield from (orders, backlog, oldest, lag, breaker, circuit)


class Metrics:
    """The app's registry: the system collector and this process's counters."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        w3: Callable[[], Web3 | None],
        adapters: Callable[[], Mapping[str, ProviderAdapter]],
        extra: Sequence[Collector] = (),
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SystemCollector(sessions, w3, adapters))
        for collector in extra:  # e.g. provider latency and errors, measured where the clients are built
            self.registry.register(collector)
        self.quote_rate_limited = Counter(
            "cardless_quote_rate_limit_hits",
            "Quotes refused by a rate limit, by limit",
            ["policy"],
            registry=self.registry,
        )

    def count_rate_limited(self, policies: list[str]) -> None:
        for policy in policies:
            self.quote_rate_limited.labels(policy=policy).inc()
