"""The analytics rollups (``analytics_sales``, ``analytics_refunds``): kept exact as orders change.

An order counts in the rollups from the moment it has a payment time: its *share* is the 15-minute
bucket of ``paid_at``, merchant, SKU, token, amount, seconds to fulfil (``fulfilled_at`` minus the whole
seconds of ``paid_at``, once fulfilled) and refund reason. ``transition`` (the one place an order
changes) takes the share before and after each move; when they differ, the difference is added to the
session's pending deltas, and at commit (``before_commit``) the deltas are written as one upsert
(``INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n``) per touched row, in sorted key order:

- exact under concurrent workers: each upsert adds to the row under its row lock (PostgreSQL) or the
  database lock (SQLite), so no worker's delta is lost; the same key order in every transaction means two
  workers' batches never wait on each other's rows in a cycle (no deadlock);
- one statement per row a transaction touches, not per order: a stage that moves 50 orders paid in the
  same quarter hour writes one row;
- a rolled-back transaction writes nothing (the deltas are kept per transaction and dropped with it).

The maximum seconds to fulfil cannot be subtracted: when a transaction removes a value at least as large
as the row's maximum (a proof that moved ``fulfilled_at`` back, a reorganised payment), the maximum is
recomputed from the row's orders under the row lock the upsert took, with the session flushed first, so it
sees this transaction's own changes and every committed one (docs/risk.md, "rollups").

Orders written in bulk outside ``transition`` (the synthetic loader, the bench's COPY) are added with
:func:`rebuild`, set-based.
"""

from __future__ import annotations

import dataclasses
import functools
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import DateTime, bindparam, case, event, func, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from cardless.ledger._per_transaction import per_transaction
from cardless.ledger.models import BUCKET_SECONDS, FULFIL_BOUNDS, Order, RefundRollup, SalesRollup

__all__ = [
    "HISTOGRAM_COLUMNS",
    "Share",
    "backfill_sql",
    "epoch_seconds",
    "epoch_sql",
    "rebuild",
    "record",
    "share",
]

HISTOGRAM_COLUMNS = (*(f"h_{b}" for b in FULFIL_BOUNDS), "h_open")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PENDING = "cardless.rollups"
_AT = DateTime(timezone=True)


def epoch_seconds(at: datetime) -> int:
    """Whole seconds since the epoch (floored), a naive value read as UTC (SQLite returns them naive)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - _EPOCH) // timedelta(seconds=1)


def epoch_sql(dialect: str, column: str) -> str:
    """SQL for :func:`epoch_seconds` of ``column``."""
    if dialect == "postgresql":
        return f"CAST(FLOOR(EXTRACT(EPOCH FROM {column})) AS BIGINT)"
    return f"CAST(strftime('%s', {column}) AS INTEGER)"


class Share(NamedTuple):
    """What one order adds to the rollups."""

    bucket: int
    merchant: str
    sku: str
    token: str
    amount: int
    seconds: int | None
    """Seconds from payment to top-up, once fulfilled."""
    reason: int | None


SHARE_FIELDS = frozenset({"paid_at", "merchant", "sku", "token", "amount", "fulfilled_at", "refund_reason"})
"""The order's fields :func:`share` reads: a change that sets none of them leaves its share as it was."""


def share(order: Order) -> Share | None:
    """``order``'s share of the rollups as it stands (None: not paid, so in no figure)."""
    if order.paid_at is None:
        return None
    paid = epoch_seconds(order.paid_at)
    return Share(
        paid - paid % BUCKET_SECONDS,
        order.merchant,
        order.sku,
        order.token,
        int(order.amount),
        None if order.fulfilled_at is None else int(order.fulfilled_at) - paid,
        order.refund_reason,
    )


def _slot(seconds: int) -> int:
    return next((i for i, bound in enumerate(FULFIL_BOUNDS) if seconds < bound), len(FULFIL_BOUNDS))


@dataclasses.dataclass
class _Sales:
    orders: int = 0
    amount: int = 0
    fulfilled: int = 0
    fulfil_seconds: int = 0
    histogram: list[int] = dataclasses.field(default_factory=lambda: [0] * len(HISTOGRAM_COLUMNS))
    added_max: int | None = None
    removed_max: int | None = None

    def add(self, s: Share, sign: int) -> None:
        self.orders += sign
        self.amount += sign * s.amount
        if s.seconds is not None:
            self.fulfilled += sign
            self.fulfil_seconds += sign * s.seconds
            self.histogram[_slot(s.seconds)] += sign
            if sign > 0:
                self.added_max = s.seconds if self.added_max is None else max(self.added_max, s.seconds)
            else:
                self.removed_max = s.seconds if self.removed_max is None else max(self.removed_max, s.seconds)

    def empty(self) -> bool:
        return (
            self.orders == self.amount == self.fulfilled == self.fulfil_seconds == 0
            and not any(self.histogram)
            and self.added_max is None
            and self.removed_max is None
        )


SalesKey = tuple[int, str, str, str]
RefundKey = tuple[int, str, int]


@dataclasses.dataclass
class _Pending:
    transaction: Any
    sales: dict[SalesKey, _Sales] = dataclasses.field(default_factory=dict)
    refunds: dict[RefundKey, int] = dataclasses.field(default_factory=dict)


def _pending(session: Session) -> _Pending:
    return per_transaction(session, _PENDING, _Pending)


def record(session: Session, before: Share | None, after: Share | None) -> None:
    """Stage the change of one order's share (``before`` -> ``after``) for this transaction's commit."""
    if before == after:
        return
    pending = _pending(session)
    if before is None or after is None or before[:6] != after[:6]:
        for s, sign in ((before, -1), (after, 1)):
            if s is not None:
                pending.sales.setdefault((s.bucket, s.merchant, s.sku, s.token), _Sales()).add(s, sign)
    if (
        before is None
        or after is None
        or (before.bucket, before.merchant, before.reason)
        != (
            after.bucket,
            after.merchant,
            after.reason,
        )
    ):
        for s, sign in ((before, -1), (after, 1)):
            if s is not None and s.reason is not None:
                key = (s.bucket, s.merchant, s.reason)
                pending.refunds[key] = pending.refunds.get(key, 0) + sign


def _greater(a: Any, b: Any) -> Any:
    """The larger of two nullable values (None only when both are), the same SQL on both databases."""
    return case((a.is_(None), b), (b.is_(None), a), (a >= b, a), else_=b)


_SALES_KEY = ("bucket", "merchant", "sku", "token")
_SALES_SUMS = ("orders", "amount", "fulfilled", "fulfil_seconds", *HISTOGRAM_COLUMNS)


@functools.cache
def _statements(dialect: str) -> tuple[Any, Any, Any]:
    """The sales upsert, the same returning the row's maximum, and the refunds upsert, built once per
    dialect with bound parameters (building them per row was most of the rollups' CPU)."""
    make: Any = pg_insert if dialect == "postgresql" else sqlite_insert
    sales = SalesRollup.__table__
    insert = make(sales).values({c.name: bindparam(c.name) for c in sales.columns})
    update = {name: sales.c[name] + insert.excluded[name] for name in _SALES_SUMS}
    if dialect != "postgresql":  # decimal text: SQLite's + would overflow to a float past 2**63
        update["amount"] = func.u256_add(sales.c.amount, insert.excluded.amount)
    update["fulfil_max"] = _greater(sales.c.fulfil_max, insert.excluded.fulfil_max)
    upsert = insert.on_conflict_do_update(index_elements=list(_SALES_KEY), set_=update)
    refunds = RefundRollup.__table__
    insert_r = make(refunds).values({c.name: bindparam(c.name) for c in refunds.columns})
    upsert_r = insert_r.on_conflict_do_update(
        index_elements=["bucket", "merchant", "reason"],
        set_={"orders": refunds.c.orders + insert_r.excluded.orders},
    )
    return upsert, upsert.returning(sales.c.fulfil_max), upsert_r


def _write_sales(session: Session, key: SalesKey, delta: _Sales) -> int | None:
    values: dict[str, Any] = dict(zip(_SALES_KEY, key, strict=True))
    values.update(
        orders=delta.orders,
        amount=delta.amount,
        fulfilled=delta.fulfilled,
        fulfil_seconds=delta.fulfil_seconds,
        fulfil_max=delta.added_max,
        **dict(zip(HISTOGRAM_COLUMNS, delta.histogram, strict=True)),
    )
    upsert, returning, _ = _statements(session.get_bind().dialect.name)
    if delta.removed_max is None:
        session.execute(upsert, values)
        return None
    return session.execute(returning, values).scalar_one()  # type: ignore[no-any-return]


def _recompute_max(session: Session, key: SalesKey) -> None:
    """The row's maximum from its orders (this transaction's changes are flushed; the row is locked)."""
    dialect = session.get_bind().dialect.name
    paid = epoch_sql(dialect, "o.paid_at")
    bucket, merchant, sku, token = key
    statement = text(
        "UPDATE analytics_sales SET fulfil_max = ("
        f"SELECT MAX(o.fulfilled_at - {paid}) FROM orders o WHERE o.merchant = :merchant AND o.sku = :sku "
        "AND o.token = :token AND o.paid_at >= :start AND o.paid_at < :end AND o.fulfilled_at IS NOT NULL) "
        "WHERE bucket = :bucket AND merchant = :merchant AND sku = :sku AND token = :token"
    ).bindparams(bindparam("start", type_=_AT), bindparam("end", type_=_AT))
    start = _EPOCH + timedelta(seconds=bucket)
    session.execute(
        statement,
        {
            "bucket": bucket,
            "merchant": merchant,
            "sku": sku,
            "token": token,
            "start": start,
            "end": start + timedelta(seconds=BUCKET_SECONDS),
        },
    )


def _write_refunds(session: Session, key: RefundKey, delta: int) -> None:
    bucket, merchant, reason = key
    _, _, upsert = _statements(session.get_bind().dialect.name)
    session.execute(upsert, {"bucket": bucket, "merchant": merchant, "reason": reason, "orders": delta})


@event.listens_for(Session, "before_commit")
def _apply(session: Session) -> None:
    kept = session.info.pop(_PENDING, None)
    if not isinstance(kept, _Pending) or kept.transaction is not session.get_transaction():
        return
    sales = {k: v for k, v in kept.sales.items() if not v.empty()}
    refunds = {k: v for k, v in kept.refunds.items() if v}
    if not sales and not refunds:
        return
    if any(v.removed_max is not None for v in sales.values()):
        session.flush()  # the maximum is recomputed from the orders as this transaction leaves them
    for key in sorted(sales):
        delta = sales[key]
        maximum = _write_sales(session, key, delta)
        if delta.removed_max is not None and (maximum is None or delta.removed_max >= maximum):
            _recompute_max(session, key)
    for rkey in sorted(refunds):
        _write_refunds(session, rkey, refunds[rkey])


@event.listens_for(Session, "after_rollback")
def _drop(session: Session) -> None:
    session.info.pop(_PENDING, None)


def rebuild(connection: Connection) -> None:
    """Recompute both rollups from the orders, set-based (after a bulk load that bypassed ``transition``;
    not while workers write: run it offline, or inside a transaction that holds them off)."""
    connection.execute(text("DELETE FROM analytics_sales"))
    connection.execute(text("DELETE FROM analytics_refunds"))
    for statement in backfill_sql(connection.dialect.name):
        connection.execute(text(statement))


def backfill_sql(dialect: str) -> list[str]:
    """The two ``INSERT ... SELECT`` statements that fill empty rollups from the orders (migration 0011
    keeps its own copy, frozen with the schema it creates)."""
    paid = epoch_sql(dialect, "paid_at")
    amount = "SUM(CAST(amount AS NUMERIC))" if dialect == "postgresql" else "u256_sum(amount)"
    slots = []
    lower = None
    for bound in (*FULFIL_BOUNDS, None):
        cond = [f"d >= {lower}"] if lower is not None else []
        cond += [f"d < {bound}"] if bound is not None else []
        slots.append(f"SUM(CASE WHEN {' AND '.join(cond)} THEN 1 ELSE 0 END)")
        lower = bound
    b = BUCKET_SECONDS
    paid_orders = (
        f"SELECT {paid} AS t, merchant, sku, token, amount, refund_reason, fulfilled_at - {paid} AS d "
        "FROM orders WHERE paid_at IS NOT NULL"
    )
    return [
        "INSERT INTO analytics_sales (bucket, merchant, sku, token, orders, amount, fulfilled, "
        f"fulfil_seconds, fulfil_max, {', '.join(HISTOGRAM_COLUMNS)}) "
        f"SELECT x.t - x.t % {b}, x.merchant, x.sku, x.token, COUNT(*), {amount}, COUNT(x.d), "
        f"COALESCE(SUM(x.d), 0), MAX(x.d), {', '.join(slots)} "
        f"FROM ({paid_orders}) x GROUP BY x.t - x.t % {b}, x.merchant, x.sku, x.token",
        "INSERT INTO analytics_refunds (bucket, merchant, reason, orders) "
        f"SELECT x.t - x.t % {b}, x.merchant, x.refund_reason, COUNT(*) FROM ({paid_orders}) x "
        f"WHERE x.refund_reason IS NOT NULL GROUP BY x.t - x.t % {b}, x.merchant, x.refund_reason",
    ]
