"""orders.account_salt dropped: the salt is derived from the account key (AccountCipher.salt)

A stored salt next to the commitment ``keccak256(account || salt)`` lets anyone with a copy of the
database brute-force short game accounts without the key. Existing rows' salts were random, so they
cannot be re-derived; they are dropped rather than kept encrypted because nothing reads them after
the quote (the oracle decrypts the account, the proof carries only the commitment) and the buyer
received each salt with their quote. ``secure_delete`` (set by the engine) zeroes the freed pages.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("account_salt")


def downgrade() -> None:
    # The dropped salts are gone: the column comes back empty (nullable) rather than with invented values.
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("account_salt", sa.String(length=66), nullable=True))
