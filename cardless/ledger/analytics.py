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
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.orm import Session

from cardless.ledger.models import BUCKET_SECONDS
from cardless.ledger.rollups import HISTOGRAM_COLUMNS, epoch_sql
from cardless.protocol import RefundReason

__all__ = [
    "EXACT_FIGURES",
    "FIGURES",
    "Range",
    "cohorts",
    "exact_cohorts",
    "exact_fulfilment",
    "exact_heatmap",
    "exact_refunds",
    "exact_sku_daily",
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
    # date_part is double precision (microseconds exact at these magnitudes); EXTRACT is NUMERIC since
    # PostgreSQL 14, and that arithmetic was a third of the providers figure over a year.
    if _pg(session):
        return f"date_part('epoch', {end} - {start})"
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


def exact_heatmap(session: Session, r: Range) -> dict[str, Any]:
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


def exact_sku_daily(session: Session, r: Range) -> dict[str, Any]:
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


def exact_cohorts(session: Session, r: Range) -> dict[str, Any]:
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


_WEEK = 604_800
_MASK_WEEKS = 63
"""Weeks a buyer's BIGINT bit mask can hold: 441 days, more than the API's 366."""


def cohorts(session: Session, r: Range) -> dict[str, Any]:
    """Wallet cohorts: buyers grouped by the week (from ``since``) of their first order in the range,
    and how many of each cohort bought again in each later week.

    On PostgreSQL, one pass over the range grouped by buyer (the ``(buyer, paid_at)`` index gives the
    rows in buyer order, so no sort): each buyer's first week and a bit mask of its weeks; then one
    aggregate per cohort counts the buyers with each week's bit set. The week is found by binary search
    of the week boundaries (``width_bucket``) instead of numeric epoch arithmetic per order. Twice as fast
    as the exact statement over a year (a year has 800k distinct buyer-weeks in 1M orders, so a
    buyer x period rollup would save little); SQLite, and ranges over 63 weeks, use the exact one."""
    start = int(r.since.timestamp())
    weeks = (int(r.until.timestamp()) - start) // _WEEK + 1
    if not _pg(session) or weeks > _MASK_WEEKS:
        return exact_cohorts(session, r)
    columns = ", ".join(f"SUM((b.weeks >> {j}) & 1) AS w{j}" for j in range(weeks))
    rows = _rows(
        session,
        "WITH b AS (SELECT MIN(x.wk) AS cohort, BIT_OR(CAST(1 AS BIGINT) << x.wk) AS weeks FROM ("
        "SELECT o.buyer AS buyer, WIDTH_BUCKET(o.paid_at, ARRAY(SELECT TO_TIMESTAMP(:start + :week * g) "
        f"FROM GENERATE_SERIES(0, :weeks) g)) - 1 AS wk FROM orders o WHERE {_where(r)}) x GROUP BY x.buyer) "
        f"SELECT b.cohort AS cohort, {columns} FROM b GROUP BY b.cohort ORDER BY 1",
        r,
        start=start,
        week=_WEEK,
        weeks=weeks,
    )
    out = [
        {"cohort": int(row["cohort"]), "week": j - int(row["cohort"]), "buyers": int(row[f"w{j}"])}
        for row in rows
        for j in range(int(row["cohort"]), weeks)
        if row[f"w{j}"]
    ]
    return {"week_seconds": _WEEK, "rows": out}


_BUCKETS = (5, 10, 30, 60, 300, 900)


def exact_fulfilment(session: Session, r: Range) -> dict[str, Any]:
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


def exact_refunds(session: Session, r: Range) -> dict[str, Any]:
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


# ------------------------------------------------------------------------------ from the rollups
# The whole 15-minute buckets of a range come from ``analytics_sales`` / ``analytics_refunds``
# (cardless.ledger.rollups keeps them with every order change), the partial buckets at its two edges from
# the orders themselves, in one statement (``UNION ALL`` under one ``GROUP BY``). Calendar figures read a
# bucket by its start: exact for every offset in whole quarter hours (every zone in use); any other offset,
# and a range inside one bucket, is answered by the exact statement over the orders above.

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_AT = DateTime(timezone=True)


@dataclasses.dataclass(frozen=True)
class _Split:
    """Whole buckets ``[lo, hi)`` (epoch seconds) from the rollups; ``[since, lo)`` and ``[hi, until)``
    from the orders."""

    lo: int
    hi: int


def _split(r: Range, *, calendar: bool = True) -> _Split | None:
    """The whole buckets of ``r``; None when there are none, or when a calendar figure's offset is not a
    whole number of quarter hours (a bucket could then straddle a local hour)."""
    if calendar and r.tz_offset_minutes % 15:
        return None
    step = BUCKET_SECONDS * 1_000_000
    since = (r.since - _EPOCH) // timedelta(microseconds=1)
    until = (r.until - _EPOCH) // timedelta(microseconds=1)
    lo = -(-since // step) * BUCKET_SECONDS  # the first bucket starting at or after `since`
    hi = until // step * BUCKET_SECONDS  # the end of the last bucket ending by `until`
    return _Split(lo, hi) if lo < hi else None


def _union(
    session: Session, r: Range, split: _Split, rollup: str, rollup_columns: str, order_columns: str,
    order_where: str = "",
) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """``SELECT rollup_columns`` over the whole buckets ``UNION ALL`` ``SELECT order_columns`` over the
    orders paid in the edges, and the parameters."""
    merchant_s = " AND s.merchant = :merchant" if r.merchant is not None else ""
    merchant_o = " AND o.merchant = :merchant" if r.merchant is not None else ""
    sql = (
        f"SELECT {rollup_columns} FROM {rollup} s WHERE s.bucket >= :lo AND s.bucket < :hi{merchant_s} "
        f"UNION ALL SELECT {order_columns} FROM orders o WHERE ((o.paid_at >= :since AND o.paid_at < :lo_at) "
        f"OR (o.paid_at >= :hi_at AND o.paid_at < :until)){merchant_o}{order_where}"
    )
    params = {
        **r.params(),
        "lo": split.lo,
        "hi": split.hi,
        "lo_at": _EPOCH + timedelta(seconds=split.lo),
        "hi_at": _EPOCH + timedelta(seconds=split.hi),
    }
    return sql, params


def _typed_rows(session: Session, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``sql``; the datetimes bound as the column type stores them (SQLite compares text)."""
    if _pg(session):
        session.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
    statement = text(sql).bindparams(*(bindparam(n, type_=_AT) for n in ("since", "until", "lo_at", "hi_at")))
    return [dict(row._mapping) for row in session.execute(statement, params)]


def heatmap(session: Session, r: Range) -> dict[str, Any]:
    """Paid orders by local weekday x hour; ``peak`` is the busiest cell."""
    split = _split(r)
    if split is None:
        return exact_heatmap(session, r)
    paid = epoch_sql(session.get_bind().dialect.name, "o.paid_at")
    source, params = _union(
        session, r, split, "analytics_sales", "s.bucket AS t, s.orders AS n", f"{paid}, 1"
    )
    # 1970-01-01 was a Thursday (4, counting from Sunday = 0).
    rows = _typed_rows(
        session,
        "SELECT ((x.t + :off) / 86400 + 4) % 7 AS weekday, ((x.t + :off) % 86400) / 3600 AS hour, "
        f"SUM(x.n) AS orders FROM ({source}) x GROUP BY 1, 2 HAVING SUM(x.n) > 0 ORDER BY 1, 2",
        {**params, "off": r.tz_offset_minutes * 60},
    )
    cells = [{k: int(v) for k, v in row.items()} for row in rows]
    peak = max(cells, key=lambda c: c["orders"], default=None)
    return {"tz_offset_minutes": r.tz_offset_minutes, "cells": cells, "peak": peak}


def sku_daily(session: Session, r: Range) -> dict[str, Any]:
    """Orders and volume (base units of each token, as decimal strings) per local day and SKU."""
    split = _split(r)
    if split is None:
        return exact_sku_daily(session, r)
    pg = _pg(session)
    paid = epoch_sql(session.get_bind().dialect.name, "o.paid_at")
    amount = "CAST(o.amount AS NUMERIC)" if pg else "CAST(o.amount AS INTEGER)"
    source, params = _union(
        session, r, split, "analytics_sales",
        "s.bucket AS t, s.sku AS sku, s.token AS token, s.orders AS n, s.amount AS amount",
        f"{paid}, o.sku, o.token, 1, {amount}",
    )  # fmt: skip
    rows = _typed_rows(
        session,
        "SELECT (x.t + :off) / 86400 AS day, x.sku AS sku, x.token AS token, SUM(x.n) AS orders, "
        f"SUM(x.amount) AS amount FROM ({source}) x GROUP BY 1, 2, 3 HAVING SUM(x.n) > 0 ORDER BY 1, 2, 3",
        {**params, "off": r.tz_offset_minutes * 60},
    )
    out = [
        {
            "day": (date(1970, 1, 1) + timedelta(days=int(row["day"]))).isoformat(),
            "sku": row["sku"],
            "token": row["token"],
            "orders": int(row["orders"]),
            "amount": str(int(row["amount"])),
        }
        for row in rows
    ]
    return {"tz_offset_minutes": r.tz_offset_minutes, "rows": out}


def fulfilment(session: Session, r: Range) -> dict[str, Any]:
    """Seconds from payment to the provider's confirmed top-up, as a histogram (upper bounds, the last
    bucket open), with the count, mean and maximum."""
    split = _split(r, calendar=False)
    if split is None:
        return exact_fulfilment(session, r)
    paid = epoch_sql(session.get_bind().dialect.name, "o.paid_at")
    delta = f"(o.fulfilled_at - {paid})"
    slots, lower = [], None
    for bound in (*_BUCKETS, None):
        cond = ([f"{delta} >= {lower}"] if lower is not None else []) + (
            [f"{delta} < {bound}"] if bound is not None else []
        )
        slots.append(f"CASE WHEN {' AND '.join(cond)} THEN 1 ELSE 0 END")
        lower = bound
    source, params = _union(
        session, r, split, "analytics_sales",
        "s.fulfilled AS n, s.fulfil_seconds AS total, s.fulfil_max AS mx, "
        + ", ".join(f"s.{c} AS {c}" for c in HISTOGRAM_COLUMNS),
        f"1, {delta}, {delta}, " + ", ".join(slots),
        " AND o.fulfilled_at IS NOT NULL",
    )  # fmt: skip
    sums = ", ".join(f"SUM(x.{c}) AS {c}" for c in HISTOGRAM_COLUMNS)
    (row,) = _typed_rows(
        session,
        f"SELECT SUM(x.n) AS n, SUM(x.total) AS total, MAX(x.mx) AS mx, {sums} FROM ({source}) x",
        params,
    )
    count = int(row["n"] or 0)
    histogram: list[dict[str, int | None]] = [
        {"le_seconds": b, "orders": int(row[c] or 0)}
        for b, c in zip((*_BUCKETS, None), HISTOGRAM_COLUMNS, strict=True)
    ]
    return {
        "orders": count,
        "mean_seconds": int(row["total"]) / count if count else None,
        "max_seconds": int(row["mx"]) if count and row["mx"] is not None else None,
        "histogram": histogram,
    }


def refunds(session: Session, r: Range) -> dict[str, Any]:
    """Refunded (or refunding) orders paid in the range, by refund reason."""
    split = _split(r, calendar=False)
    if split is None:
        return exact_refunds(session, r)
    source, params = _union(
        session, r, split, "analytics_refunds", "s.reason AS code, s.orders AS n", "o.refund_reason, 1",
        " AND o.refund_reason IS NOT NULL",
    )  # fmt: skip
    rows = _typed_rows(
        session,
        f"SELECT x.code AS code, SUM(x.n) AS orders FROM ({source}) x GROUP BY x.code HAVING SUM(x.n) > 0 "
        "ORDER BY 2 DESC, 1",
        params,
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

EXACT_FIGURES = {
    **FIGURES,
    "heatmap": exact_heatmap,
    "sku_daily": exact_sku_daily,
    "cohorts": exact_cohorts,
    "fulfilment": exact_fulfilment,
    "refunds": exact_refunds,
}
"""Every figure straight from the orders (what the rollups must reproduce; tests compare the two)."""
