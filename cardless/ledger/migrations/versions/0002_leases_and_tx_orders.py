"""work leases on orders; chain_tx_orders, the indexed link from an order to its transactions

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 09:30:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "chain_tx_orders",
        sa.Column("chain_tx_id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.String(length=66), nullable=False),
        sa.ForeignKeyConstraint(["chain_tx_id"], ["chain_txs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("chain_tx_id", "order_id"),
    )
    op.create_index("ix_chain_tx_orders_order_id", "chain_tx_orders", ["order_id"], unique=False)
    # Backfill from the JSON list every existing transaction carries.
    bind = op.get_bind()
    links: list[dict[str, object]] = []
    for tx_id, order_ids in bind.execute(sa.text("SELECT id, order_ids FROM chain_txs")):
        ids = json.loads(order_ids) if isinstance(order_ids, str) else order_ids
        links.extend({"chain_tx_id": tx_id, "order_id": order_id} for order_id in dict.fromkeys(ids or []))
    if links:
        bind.execute(
            sa.text("INSERT INTO chain_tx_orders (chain_tx_id, order_id) VALUES (:chain_tx_id, :order_id)"),
            links,
        )


def downgrade() -> None:
    op.drop_index("ix_chain_tx_orders_order_id", table_name="chain_tx_orders")
    op.drop_table("chain_tx_orders")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("lease_owner")
