"""analytics rollups: paid orders per 15-minute bucket, merchant, SKU and token; refunds per reason

Over a whole year (1.06M orders) the heatmap, daily SKU volume, fulfilment and refund figures scanned
every order: 0.3-1.6 s. ``analytics_sales`` and ``analytics_refunds`` hold their sums per 15-minute bucket
of ``paid_at`` (kept by ``cardless.ledger.rollups`` in every order change's transaction); the figures read
the whole buckets of a range from them and only the partial buckets at its edges from the orders.

The backfill is two ``INSERT ... SELECT`` over the paid orders, before the secondary indexes. Its SQL is
a frozen copy of ``cardless.ledger.rollups.backfill_sql`` as of this schema.

Revision ID: 0011_analytics_rollups
Revises: 0010_analytics_speed
Create Date: 2026-12-03 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_analytics_rollups"
down_revision = "0010_analytics_speed"
branch_labels = None
depends_on = None

BUCKET = 900
BOUNDS = (5, 10, 30, 60, 300, 900)
HISTOGRAM = (*(f"h_{b}" for b in BOUNDS), "h_open")


def _backfill(dialect: str) -> list[str]:
    if dialect == "postgresql":
        paid = "CAST(FLOOR(EXTRACT(EPOCH FROM paid_at)) AS BIGINT)"
        amount = "CAST(amount AS NUMERIC)"
    else:
        paid = "CAST(strftime('%s', paid_at) AS INTEGER)"
        amount = "CAST(amount AS INTEGER)"
    slots = []
    lower = None
    for bound in (*BOUNDS, None):
        cond = [f"d >= {lower}"] if lower is not None else []
        cond += [f"d < {bound}"] if bound is not None else []
        slots.append(f"SUM(CASE WHEN {' AND '.join(cond)} THEN 1 ELSE 0 END)")
        lower = bound
    paid_orders = (
        f"SELECT {paid} AS t, merchant, sku, token, amount, refund_reason, fulfilled_at - {paid} AS d "
        "FROM orders WHERE paid_at IS NOT NULL"
    )
    return [
        "INSERT INTO analytics_sales (bucket, merchant, sku, token, orders, amount, fulfilled, "
        f"fulfil_seconds, fulfil_max, {', '.join(HISTOGRAM)}) "
        f"SELECT x.t - x.t % {BUCKET}, x.merchant, x.sku, x.token, COUNT(*), SUM({amount}), COUNT(x.d), "
        f"COALESCE(SUM(x.d), 0), MAX(x.d), {', '.join(slots)} "
        f"FROM ({paid_orders}) x GROUP BY x.t - x.t % {BUCKET}, x.merchant, x.sku, x.token",
        "INSERT INTO analytics_refunds (bucket, merchant, reason, orders) "
        f"SELECT x.t - x.t % {BUCKET}, x.merchant, x.refund_reason, COUNT(*) FROM ({paid_orders}) x "
        f"WHERE x.refund_reason IS NOT NULL GROUP BY x.t - x.t % {BUCKET}, x.merchant, x.refund_reason",
    ]


def upgrade() -> None:
    total = sa.BigInteger().with_variant(sa.Numeric(78, 0), "postgresql")
    op.create_table(
        "analytics_sales",
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("merchant", sa.String(length=42), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.Column("amount", total, nullable=False),
        sa.Column("fulfilled", sa.BigInteger(), nullable=False),
        sa.Column("fulfil_seconds", sa.BigInteger(), nullable=False),
        sa.Column("fulfil_max", sa.BigInteger(), nullable=True),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in HISTOGRAM),
        sa.PrimaryKeyConstraint("bucket", "merchant", "sku", "token"),
    )
    op.create_table(
        "analytics_refunds",
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("merchant", sa.String(length=42), nullable=False),
        sa.Column("reason", sa.Integer(), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "merchant", "reason"),
    )
    for statement in _backfill(op.get_bind().dialect.name):
        op.execute(statement)
    op.create_index("ix_analytics_sales_merchant_bucket", "analytics_sales", ["merchant", "bucket"])
    op.create_index("ix_analytics_refunds_merchant_bucket", "analytics_refunds", ["merchant", "bucket"])


def downgrade() -> None:
    op.drop_index("ix_analytics_refunds_merchant_bucket", table_name="analytics_refunds")
    op.drop_index("ix_analytics_sales_merchant_bucket", table_name="analytics_sales")
    op.drop_table("analytics_refunds")
    op.drop_table("analytics_sales")
