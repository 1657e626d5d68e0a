"""Alembic environment: runs against the connection handed over by cardless.ledger.engine.migrate
(every Cardless command migrates its own database, ``Settings.effective_database_url``, at start).

From the alembic command line, pass the URL explicitly (``alembic -x url=sqlite:///var/cardless.db
upgrade head`` or ``sqlalchemy.url``): no environment variable and no default path, so there is one
database setting (``CARDLESS_DATABASE_URL``) and a migration never lands on a database nobody named.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from cardless.ledger.engine import normalise_url
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
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("alembic: name the database with -x url=<SQLAlchemy URL> (or sqlalchemy.url)")
    engine = create_engine(normalise_url(url))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
