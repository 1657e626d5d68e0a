"""Analytics and risk benchmark (issue 14): N synthetic orders (default 1,000,000 over a year) bulk-loaded
into a fresh PostgreSQL database with COPY, the analytics rollups filled from them (set-based, as
migration 0011 does), then every analytics figure timed over the last 30 days, over 366 days (the API's
longest range), and over 366 days with edges inside buckets at a half-hour offset; a sample of risk
decisions timed; the slowest figure's plan of each range is kept (EXPLAIN ANALYZE).

    PYTHONPATH=. python -m bench.analytics [ORDERS] [--keep]     (writes bench/results/analytics.json)

``--keep`` leaves the database in place (its URL is printed) for looking at plans by hand.

The server is CARDLESS_BENCH_PG_URL, else CARDLESS_TEST_PG_URL (a role that may create databases;
``.ci/postgres`` prints one). The database is dropped at the end.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import Connection

from cardless.ledger import Order, analytics, create_engine_for, migrate, rollups, session_factory
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.engine import normalise_url
from cardless.ledger.risk import RiskEngine
from cardless.ledger.synthetic import SyntheticConfig, generate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "analytics.json"
RUNS = 5
DECISIONS = 1_000
DAYS = 365
"""A year of history: the dashboard's default window is the last 30 days (timed first); the whole year is
timed too, as the worst case."""

ORDER_COLUMNS = [
    "id",
    "state",
    "chain_id",
    "escrow",
    "sku",
    "providers",
    "provider_index",
    "buyer",
    "merchant",
    "token",
    "amount",
    "fee_bps",
    "quote_expiry",
    "fulfilment_deadline",
    "sku_hash",
    "account_commitment",
    "account_ciphertext",
    "quote_signer",
    "quote_signature",
    "paid_tx",
    "paid_block",
    "paid_at",
    "fulfilled_at",
    "refund_reason",
    "closed_at",
    "attempts",
    "account_hash",
    "created_at",
    "updated_at",
]
EVENT_COLUMNS = ("order_id", "at", "from_state", "to_state", "reason", "detail")
ATTEMPT_COLUMNS = ("order_id", "merchant", "provider", "submitted_at", "outcome", "answered_at")
SIGNAL_COLUMNS = ("order_id", "buyer", "account_hash", "network_hash", "agent_hash", "seen_at")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def database(admin_url: str, keep: bool = False) -> Iterator[str]:
    url = make_url(normalise_url(admin_url))
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"cardless_bench_{os.getpid()}"
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        if keep:
            log(f"kept: {url.set(database=name).render_as_string(hide_password=False)}")
        else:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def copy(
    connection: Connection, table: str, columns: tuple[str, ...] | list[str], rows: list[dict[str, Any]]
) -> float:
    started = time.perf_counter()
    raw: Any = connection.connection.dbapi_connection
    with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(
                [
                    json.dumps(row[c]) if c in ("providers", "detail") and row[c] is not None else row[c]
                    for c in columns
                ]
            )
    return time.perf_counter() - started


def main(orders: int, keep: bool = False) -> dict[str, Any]:
    admin_url = os.environ.get("CARDLESS_BENCH_PG_URL") or os.environ.get("CARDLESS_TEST_PG_URL")
    if not admin_url:
        raise SystemExit('set CARDLESS_BENCH_PG_URL or CARDLESS_TEST_PG_URL (eval "$(.ci/postgres)")')
    config = SyntheticConfig(
        days=DAYS,
        orders_per_day=orders / DAYS,
        buyers=max(orders // 8, 100),
        bursts=30,
        tz_offset_minutes=480,
    )
    started = time.perf_counter()
    data = generate(config, AccountCipher(bytes(32)))
    generated = time.perf_counter() - started
    log(f"generated {len(data.orders)} orders, {len(data.events)} events in {generated:.1f} s")
    result: dict[str, Any] = {
        "orders": len(data.orders),
        "events": len(data.events),
        "generate_seconds": generated,
    }
    with database(admin_url, keep) as url:
        engine = create_engine_for(url)
        migrate(engine)
        with engine.begin() as connection:
            result["copy_seconds"] = {
                "orders": copy(connection, "orders", ORDER_COLUMNS, data.orders),
                "order_events": copy(connection, "order_events", EVENT_COLUMNS, data.events),
                "provider_attempts": copy(connection, "provider_attempts", ATTEMPT_COLUMNS, data.attempts),
                "risk_signals": copy(connection, "risk_signals", SIGNAL_COLUMNS, data.signals),
            }
        log(f"COPY: {result['copy_seconds']}")
        started = time.perf_counter()
        with engine.begin() as connection:
            rollups.rebuild(connection)
        result["rollup_fill_seconds"] = time.perf_counter() - started
        with engine.connect() as connection:
            result["rollup_rows"] = {
                table: connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
                for table in ("analytics_sales", "analytics_refunds")
            }
        log(f"rollups: {result['rollup_rows']} in {result['rollup_fill_seconds']:.1f} s")
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
        del data.events, data.signals, data.attempts

        # -- analytics: every figure over the last 30 days (the API's default), then over the whole year
        end = config.start + timedelta(days=config.days)
        captured: dict[str, tuple[str, Any]] = {}

        @event.listens_for(engine, "before_cursor_execute")
        def remember(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
        ) -> None:
            captured["last"] = (statement, parameters)

        sessions = session_factory(engine)
        result["load_average_at_figures"] = os.getloadavg()
        odd_end = end - timedelta(minutes=7, seconds=13, microseconds=500_000)
        ranges = (
            ("last_30_days", analytics.Range(end - timedelta(days=30), end, tz_offset_minutes=480)),
            ("last_366_days", analytics.Range(end - timedelta(days=366), end, tz_offset_minutes=480)),
            (
                "last_366_days_odd_edges_offset_330",
                analytics.Range(odd_end - timedelta(days=366), odd_end, tz_offset_minutes=330),
            ),
        )
        for label, r in ranges:
            with sessions() as session:
                in_range = session.execute(
                    text("SELECT COUNT(*) FROM orders WHERE paid_at >= :a AND paid_at < :b"),
                    {"a": r.since, "b": r.until},
                ).scalar_one()
            figures: dict[str, Any] = {}
            statements: dict[str, tuple[str, Any]] = {}
            for name, figure in analytics.FIGURES.items():
                times = []
                for _ in range(RUNS):
                    with sessions() as session:
                        t0 = time.perf_counter()
                        figure(session, r)
                        times.append(time.perf_counter() - t0)
                statements[name] = captured["last"]
                figures[name] = {
                    "first_seconds": times[0],
                    "median_seconds": statistics.median(times),
                    "max_seconds": max(times),
                }
                log(f"{label} {name}: first {times[0]:.3f} s, median {statistics.median(times):.3f} s")
            slowest = max(figures, key=lambda n: figures[n]["median_seconds"])
            statement, parameters = statements[slowest]
            with engine.connect() as connection:
                raw: Any = connection.connection.dbapi_connection
                with raw.cursor() as cursor:
                    cursor.execute(f"SET work_mem = '{analytics.WORK_MEM}'")  # as the figure runs
                    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                    plan = [row[0] for row in cursor.fetchall()]
            result[label] = {
                "since": r.since.isoformat(),
                "until": r.until.isoformat(),
                "tz_offset_minutes": r.tz_offset_minutes,
                "orders_in_range": in_range,
                "load_average": os.getloadavg(),
                "figures": figures,
                "all_under_1s": all(f["median_seconds"] < 1 for f in figures.values()),
                "slowest": {"figure": slowest, "sql": statement, "plan": plan},
            }
        event.remove(engine, "before_cursor_execute", remember)

        # -- risk: decisions on a random sample of paid orders, each as of its own payment time. Wall time
        # and this thread's CPU time per decision: on a shared machine the gap between them is the wait
        # for a core (this process's and the database server's), not the decision's work.
        engine_ = RiskEngine()
        with sessions() as session:
            ids = [
                row[0]
                for row in session.execute(
                    text("SELECT id FROM orders TABLESAMPLE SYSTEM (1) LIMIT :n"), {"n": DECISIONS}
                )
            ]
        random.Random(1).shuffle(ids)
        facts: dict[str, tuple[str, Any]] = {}

        @event.listens_for(engine, "before_cursor_execute")
        def remember_facts(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
        ) -> None:
            if statement.lstrip().upper().startswith("SELECT (SELECT"):
                facts["last"] = (statement, parameters)

        times, cpu, slowest_facts = [], [], (0.0, "", None)
        load_before = os.getloadavg()
        with sessions() as session:
            for order_id in ids:
                order = session.get(Order, order_id)
                assert order is not None
                c0, t0 = time.thread_time(), time.perf_counter()
                engine_.decide(session, order)
                session.flush()
                elapsed = time.perf_counter() - t0
                times.append(elapsed)
                cpu.append(time.thread_time() - c0)
                if elapsed > slowest_facts[0]:
                    slowest_facts = (elapsed, *facts["last"])
            session.rollback()
        event.remove(engine, "before_cursor_execute", remember_facts)
        times.sort()
        cpu.sort()

        def pct(values: list[float], p: float) -> float:
            return 1_000 * values[int(p * (len(values) - 1))]

        # The facts statement of the slowest decision, again, as the decision ran it (generic plan).
        with engine.connect() as connection:
            raw = connection.connection.dbapi_connection
            with raw.cursor() as cursor:
                cursor.execute("SET plan_cache_mode = force_generic_plan")
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + slowest_facts[1], slowest_facts[2])
                facts_plan = [row[0] for row in cursor.fetchall()]
        result["risk_decision"] = {
            "decisions": len(times),
            "median_ms": 1_000 * statistics.median(times),
            "p95_ms": pct(times, 0.95),
            "p99_ms": pct(times, 0.99),
            "max_ms": 1_000 * times[-1],
            "cpu_median_ms": 1_000 * statistics.median(cpu),
            "cpu_p95_ms": pct(cpu, 0.95),
            "cpu_p99_ms": pct(cpu, 0.99),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "slowest_facts_plan": facts_plan,
        }
        summary = {k: v for k, v in result["risk_decision"].items() if k != "slowest_facts_plan"}
        log(f"risk decision: {summary}")
        engine.dispose()
    result["decision_p95_under_5ms"] = result["risk_decision"]["p95_ms"] < 5
    return result


LABELS = ("last_30_days", "last_366_days", "last_366_days_odd_edges_offset_330")

if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--keep"]
    n = int(args[0]) if args else 1_000_000
    out = main(n, keep="--keep" in sys.argv[1:])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1, default=str) + "\n")
    for label in LABELS:
        print(label, json.dumps({k: v for k, v in out[label].items() if k != "slowest"}, indent=1))
        print(f"slowest: {out[label]['slowest']['figure']}")
        print("\n".join(out[label]["slowest"]["plan"]))
    print(json.dumps({k: v for k, v in out["risk_decision"].items() if k != "slowest_facts_plan"}))
    print("\n".join(out["risk_decision"]["slowest_facts_plan"]))
