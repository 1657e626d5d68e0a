"""risk: rule configuration, block lists, request signals, decisions; order columns for velocity and holds

Revision ID: 0007_risk
Revises: 0006
Create Date: 2026-12-03 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_risk"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_configs",
        sa.Column("merchant", sa.String(length=42), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("merchant"),
    )
    op.create_table(
        "risk_lists",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("merchant", sa.String(length=42), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=66), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("merchant", "kind", "value", name="uq_risk_lists_entry"),
    )
    op.create_index("ix_risk_lists_kind_value", "risk_lists", ["kind", "value"])
    op.create_table(
        "risk_signals",
        sa.Column("order_id", sa.String(length=66), nullable=False),
        sa.Column("buyer", sa.String(length=42), nullable=False),
        sa.Column("account_hash", sa.String(length=64), nullable=True),
        sa.Column("network_hash", sa.String(length=64), nullable=False),
        sa.Column("agent_hash", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_id"),
    )
    op.create_index("ix_risk_signals_seen_at", "risk_signals", ["seen_at"])
    op.create_index("ix_risk_signals_buyer_seen", "risk_signals", ["buyer", "seen_at"])
    op.create_index("ix_risk_signals_account_seen", "risk_signals", ["account_hash", "seen_at"])
    op.create_table(
        "risk_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("order_id", sa.String(length=66), nullable=False),
        sa.Column("merchant", sa.String(length=42), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("review_action", sa.String(length=16), nullable=True),
        sa.Column("reviewer", sa.String(length=80), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_risk_decisions_order_id", "risk_decisions", ["order_id"])
    op.create_index(
        "ix_risk_decisions_merchant_decision", "risk_decisions", ["merchant", "decision", "decided_at"]
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("account_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("risk_hold_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_orders_risk_hold_at", ["risk_hold_at"])
        batch_op.create_index("ix_orders_buyer_paid", ["buyer", "paid_at"])
        batch_op.create_index("ix_orders_account_paid", ["account_hash", "paid_at"])
        batch_op.create_index("ix_orders_sku_paid", ["sku", "paid_at"])
        batch_op.create_index("ix_orders_merchant_paid", ["merchant", "paid_at"])
        batch_op.create_index("ix_orders_paid_at", ["paid_at"])
    op.create_index("ix_order_events_at", "order_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_order_events_at", table_name="order_events")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        for name in (
            "ix_orders_paid_at",
            "ix_orders_merchant_paid",
            "ix_orders_sku_paid",
            "ix_orders_account_paid",
            "ix_orders_buyer_paid",
            "ix_orders_risk_hold_at",
        ):
            batch_op.drop_index(name)
        batch_op.drop_column("risk_hold_at")
        batch_op.drop_column("account_hash")
    op.drop_table("risk_decisions")
    op.drop_table("risk_signals")
    op.drop_table("risk_lists")
    op.drop_table("risk_configs")
