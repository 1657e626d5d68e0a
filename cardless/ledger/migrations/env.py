"""Alembic environment: runs against the connection handed over by cardless.ledger.engine.migrate
(or a URL from DATABASE_URL when invoked from the alembic command line)."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from cardless.ledger.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = os.environ.get("DATABASE_URL", "sqlite:///var/cardless.db")
    engine = create_engine(url)
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
