"""Analytics over the orders: one SQL statement per figure, grouped in the database (no Python loop over
the rows), on SQLite and PostgreSQL alike, each served by an index on the payment time
(``ix_orders_paid_at``, ``ix_orders_merchant_paid``; provider calls: ``provider_attempts``, one row per
call, by ``ix_provider_attempts_submitted`` and ``ix_provider_attempts_merchant_submitted``).

Every figure covers the orders paid in ``[since, until)``, one merchant's or all. Calendar figures
(weekday x hour, days, cohort weeks) are read in a fixed UTC offset, ``tz_offset_minutes`` (0: UTC; a
shop in China: 480); weekdays are numbered 0 = Sunday to 6 = Saturday (SQL's own numbering).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from cardless.protocol import RefundReason

__all__ = [
    "FIGURES",
    "Range",
    "cohorts",
    "fulfilment",
    "heatmap",
    "providers",
    "refunds",
    "repeat",
    "sku_daily",
]


@dataclasses.dataclass(frozen=True)
class Range:
    since: datetime
    until: datetime
    merchant: str | None = None
    tz_offset_minutes: int = 0

    def __post_init__(self) -> None:
        if not -720 <= self.tz_offset_minutes <= 840:
            raise ValueError("tz_offset_minutes must be within -720..840")

    def params(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until, "merchant": self.merchant}


def _pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _where(r: Range, alias: str = "o") -> str:
    merchant = f" AND {alias}.merchant = :merchant" if r.merchant is not None else ""
    return f"{alias}.paid_at >= :since AND {alias}.paid_at < :until{merchant}"


def _local(session: Session, r: Range, column: str) -> dict[str, str]:
    """SQL for the weekday, hour and day of ``column`` read at the range's UTC offset."""
    off = int(r.tz_offset_minutes)
    if _pg(session):
        local = f"(({column} AT TIME ZONE 'UTC') + interval '{off} minutes')"
        return {
            "weekday": f"CAST(EXTRACT(DOW FROM {local}) AS INTEGER)",
            "hour": f"CAST(EXTRACT(HOUR FROM {local}) AS INTEGER)",
            "day": f"TO_CHAR({local}, 'YYYY-MM-DD')",
        }
    shift = f"'{off:+d} minutes'"
    return {
        "weekday": f"CAST(strftime('%w', {column}, {shift}) AS INTEGER)",
        "hour": f"CAST(strftime('%H', {column}, {shift}) AS INTEGER)",
        "day": f"date({column}, {shift})",
    }


def _epoch(session: Session, column: str) -> str:
    if _pg(session):
        return f"CAST(FLOOR(EXTRACT(EPOCH FROM {column})) AS BIGINT)"  # whole seconds, as SQLite's %s
    return f"CAST(strftime('%s', {column}) AS INTEGER)"


def _seconds_between(session: Session, start: str, end: str) -> str:
    if _pg(session):
        return f"EXTRACT(EPOCH FROM ({end} - {start}))"
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


def _amount(session: Session, column: str) -> str:
    return f"SUM(CAST({column} AS NUMERIC))" if _pg(session) else f"SUM(CAST({column} AS INTEGER))"


WORK_MEM = "64MB"
"""PostgreSQL ``work_mem`` for one figure's transaction: its sorts and hashes (the provider figure's
window over a month of events, the cohorts' distinct counts) stay in memory instead of spilling."""


def _rows(session: Session, sql: str, r: Range, **extra: Any) -> list[dict[str, Any]]:
    if _pg(session):
        session.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
    return [dict(row._mapping) for row in session.execute(text(sql), {**r.params(), **extra})]


def heatmap(session: Session, r: Range) -> dict[str, Any]:
    """Paid orders by local weekday x hour; ``peak`` is the busiest cell."""
    local = _local(session, r, "o.paid_at")
    cells = _rows(
        session,
        f"SELECT {local['weekday']} AS weekday, {local['hour']} AS hour, COUNT(*) AS orders "
        f"FROM orders o WHERE {_where(r)} GROUP BY 1, 2 ORDER BY 1, 2",
        r,
    )
    peak = max(cells, key=lambda c: c["orders"], default=None)
    return {"tz_offset_minutes": r.tz_offset_minutes, "cells": cells, "peak": peak}


def sku_daily(session: Session, r: Range) -> dict[str, Any]:
    """Orders and volume (base units of each token, as decimal strings) per local day and SKU."""
    local = _local(session, r, "o.paid_at")
    rows = _rows(
        session,
        f"SELECT {local['day']} AS day, o.sku AS sku, o.token AS token, COUNT(*) AS orders, "
        f"{_amount(session, 'o.amount')} AS amount FROM orders o WHERE {_where(r)} "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        r,
    )
    for row in rows:
        row["amount"] = str(int(row["amount"]))
    return {"tz_offset_minutes": r.tz_offset_minutes, "rows": rows}


def repeat(session: Session, r: Range) -> dict[str, Any]:
    """Buyers in the range, those with two or more orders in it, and the repeat-purchase rate."""
    (row,) = _rows(
        session,
        "SELECT COUNT(*) AS buyers, COALESCE(SUM(CASE WHEN n >= 2 THEN 1 ELSE 0 END), 0) AS repeat_buyers, "
        "COALESCE(SUM(n), 0) AS orders "
        f"FROM (SELECT o.buyer, COUNT(*) AS n FROM orders o WHERE {_where(r)} GROUP BY o.buyer) per_buyer",
        r,
    )
    buyers = int(row["buyers"])
    return {
        "buyers": buyers,
        "repeat_buyers": int(row["repeat_buyers"]),
        "orders": int(row["orders"]),
        "repeat_rate": int(row["repeat_buyers"]) / buyers if buyers else 0.0,
    }


def cohorts(session: Session, r: Range) -> dict[str, Any]:
    """Wallet cohorts: buyers grouped by the week (from ``since``) of their first order in the range,
    and how many of each cohort bought again in each later week.

    One pass over the range: each buyer's weeks with an order (distinct), the first of them by a window
    over that much smaller set; a buyer's first week is the week of its first order."""
    paid = _epoch(session, "o.paid_at")
    start = int(r.since.timestamp())
    rows = _rows(
        session,
        f"WITH w AS (SELECT o.buyer AS buyer, ({paid} - :start) / 604800 AS wk FROM orders o "
        f"WHERE {_where(r)} GROUP BY o.buyer, ({paid} - :start) / 604800), "
        "c AS (SELECT w.wk AS wk, MIN(w.wk) OVER (PARTITION BY w.buyer) AS cohort FROM w) "
        "SELECT c.cohort AS cohort, c.wk - c.cohort AS week, COUNT(*) AS buyers "
        "FROM c GROUP BY c.cohort, c.wk - c.cohort ORDER BY 1, 2",
        r,
        start=start,
    )
    return {"week_seconds": 604_800, "rows": [{k: int(v) for k, v in row.items()} for row in rows]}


_BUCKETS = (5, 10, 30, 60, 300, 900)


def fulfilment(session: Session, r: Range) -> dict[str, Any]:
    """Seconds from payment to the provider's confirmed top-up, as a histogram (upper bounds, the last
    bucket open), with the count, mean and maximum."""
    delta = f"(o.fulfilled_at - {_epoch(session, 'o.paid_at')})"
    case = " ".join(f"WHEN {delta} < {b} THEN {b}" for b in _BUCKETS)
    rows = _rows(
        session,
        f"SELECT CASE {case} ELSE -1 END AS le, COUNT(*) AS orders, SUM({delta}) AS total, "
        f"MAX({delta}) AS max FROM orders o WHERE {_where(r)} AND o.fulfilled_at IS NOT NULL GROUP BY 1",
        r,
    )
    count = sum(int(x["orders"]) for x in rows)
    total = sum(int(x["total"] or 0) for x in rows)
    buckets = {int(x["le"]): int(x["orders"]) for x in rows}
    histogram: list[dict[str, int | None]] = [
        {"le_seconds": b, "orders": buckets.get(b, 0)} for b in _BUCKETS
    ]
    histogram.append({"le_seconds": None, "orders": buckets.get(-1, 0)})
    return {
        "orders": count,
        "mean_seconds": total / count if count else None,
        "max_seconds": max((int(x["max"]) for x in rows), default=None),
        "histogram": histogram,
    }


def providers(session: Session, r: Range) -> dict[str, Any]:
    """Per provider: the calls submitted in the range (``provider_attempts``, one row per call, written
    with the timeline), how each had ended by ``until`` (succeeded, failed, unknown, retried: refused
    and failed over, or the breaker refused it; a call unanswered by ``until`` counts only as an
    attempt) and the mean and maximum seconds from submit to answer."""
    merchant = " AND p.merchant = :merchant" if r.merchant is not None else ""
    latency = _seconds_between(session, "p.submitted_at", "p.answered_at")
    done = "p.answered_at < :until"
    rows = _rows(
        session,
        "SELECT p.provider AS provider, COUNT(*) AS attempts, "
        f"SUM(CASE WHEN {done} AND p.outcome = 'succeeded' THEN 1 ELSE 0 END) AS succeeded, "
        f"SUM(CASE WHEN {done} AND p.outcome = 'failed_final' THEN 1 ELSE 0 END) AS failed, "
        f"SUM(CASE WHEN {done} AND p.outcome = 'unknown' THEN 1 ELSE 0 END) AS unknown, "
        f"SUM(CASE WHEN {done} AND p.outcome IN ('submitting', 'risk_checked') THEN 1 ELSE 0 END) "
        "AS retried, "
        f"AVG(CASE WHEN {done} THEN {latency} END) AS mean_seconds, "
        f"MAX(CASE WHEN {done} THEN {latency} END) AS max_seconds "
        "FROM provider_attempts p WHERE p.submitted_at >= :since AND p.submitted_at < :until"
        f"{merchant} GROUP BY p.provider ORDER BY p.provider",
        r,
    )
    out = []
    for row in rows:
        attempts = int(row["attempts"])
        answered = int(row["succeeded"]) + int(row["failed"])
        out.append(
            {
                "provider": row["provider"],
                "attempts": attempts,
                "succeeded": int(row["succeeded"]),
                "failed": int(row["failed"]),
                "unknown": int(row["unknown"]),
                "retried": int(row["retried"]),
                "success_rate": int(row["succeeded"]) / answered if answered else None,
                "mean_seconds": None if row["mean_seconds"] is None else float(row["mean_seconds"]),
                "max_seconds": None if row["max_seconds"] is None else float(row["max_seconds"]),
            }
        )
    return {"providers": out}


def refunds(session: Session, r: Range) -> dict[str, Any]:
    """Refunded (or refunding) orders paid in the range, by refund reason."""
    rows = _rows(
        session,
        "SELECT o.refund_reason AS code, COUNT(*) AS orders FROM orders o "
        f"WHERE {_where(r)} AND o.refund_reason IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1",
        r,
    )
    names = {int(x): x.name.lower() for x in RefundReason}
    return {"reasons": [{"code": int(x["code"]), "reason": names.get(int(x["code"]), "other"),
                         "orders": int(x["orders"])} for x in rows]}  # fmt: skip


FIGURES = {
    "heatmap": heatmap,
    "sku_daily": sku_daily,
    "repeat": repeat,
    "cohorts": cohorts,
    "fulfilment": fulfilment,
    "providers": providers,
    "refunds": refunds,
}
