"""audit export: settled orders paged by settlement time (GET /v1/audit/receipts)

The receipts export walks settled orders oldest settlement first, keyed on (closed_at, id), for the
operator (all) and for one merchant; without these indexes every page would sort every settled order.

Revision ID: 0008
Revises: 0007_risk
Create Date: 2026-12-03 15:15:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007_risk"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_state_closed", ["state", "closed_at", "id"], unique=False)
        batch_op.create_index(
            "ix_orders_merchant_state_closed", ["merchant", "state", "closed_at", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_merchant_state_closed")
        batch_op.drop_index("ix_orders_state_closed")
