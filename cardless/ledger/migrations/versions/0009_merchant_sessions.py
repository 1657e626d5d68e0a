"""merchant sessions: the dashboard signed in with the merchant's settlement wallet (SIWE)

A bearer token stored as its SHA-256 like the buyers' sessions, bound to one merchant, with an expiry and
a sign-out time. Expired rows are swept when nonces are issued.

Revision ID: 0009_merchant_sessions
Revises: 0008
Create Date: 2026-12-03 18:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_merchant_sessions"
down_revision = "0008"  # the revision id inside 0008_audit_export.py
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "merchant_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("merchant_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_merchant_sessions_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_merchant_sessions_merchant_id"), ["merchant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("merchant_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_merchant_sessions_merchant_id"))
        batch_op.drop_index(batch_op.f("ix_merchant_sessions_expires_at"))
    op.drop_table("merchant_sessions")
