"""chain_reorgs and the operator review flag on orders

A reorganisation deeper than the confirmation depth can take away a payment, a settlement or a refund
the ledger has already acted on. Each one is recorded in ``chain_reorgs`` (where, how deep, which logs
were dropped), and every order it touched after its top-up may have happened is marked for an
operator: ``review_reason`` says what happened, ``review_detail`` holds the evidence (the dropped
log, the old and new block hashes, the order's state at the time), ``review_at`` when.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chain_reorgs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cursor_name", sa.String(length=64), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("old_block", sa.BigInteger(), nullable=False),
        sa.Column("old_hash", sa.String(length=66), nullable=False),
        sa.Column("ancestor_block", sa.BigInteger(), nullable=False),
        sa.Column("depth", sa.BigInteger(), nullable=False),
        sa.Column("confirmations", sa.Integer(), nullable=False),
        sa.Column("dropped_logs", sa.JSON(), nullable=False),
        sa.Column("order_ids", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("review_reason", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("review_detail", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("review_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_orders_review_reason", ["review_reason"])


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_review_reason")
        batch_op.drop_column("review_at")
        batch_op.drop_column("review_detail")
        batch_op.drop_column("review_reason")
    op.drop_table("chain_reorgs")
