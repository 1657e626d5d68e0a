"""rate limit windows: the quote limits' counters, shared by every gateway process on the database

One row per (limit, client or wallet, fixed window): a counter bumped by one atomic upsert, deleted once
its window has closed. Until now the counters borrowed ``idempotency_records`` rows.

Revision ID: 0012_rate_limit_windows
Revises: 0011_analytics_rollups
Create Date: 2026-12-03 23:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_rate_limit_windows"
down_revision = "0011_analytics_rollups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_windows",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_rate_limit_windows_expires_at", "rate_limit_windows", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_rate_limit_windows_expires_at", table_name="rate_limit_windows")
    op.drop_table("rate_limit_windows")
