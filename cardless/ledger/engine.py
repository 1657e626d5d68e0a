"""Engine and session factory. SQLite (WAL) by default; PostgreSQL by URL, through psycopg 3.

``postgresql://`` and ``postgres://`` (what hosted providers hand out) both mean psycopg 3
(``postgresql+psycopg://``); options in the URL's query (``sslmode=require``...) go to libpq unchanged.
Several processes may start on one PostgreSQL database at once: :func:`migrate` runs under a
transaction-scoped advisory lock, so one of them migrates and the others find the schema at head.

A SQLite database file is created 0600 before SQLite opens it (SQLite gives its -wal and -shm the
database file's mode), and all three are narrowed to 0600 on every connection in case they were made
by an older version. ``secure_delete`` zeroes freed content, so a dropped column or a deleted row
does not linger in the file's free pages.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger.private_files import DIR_MODE, FILE_MODE, restrict
from cardless.ledger.types import install_sqlite_u256

__all__ = ["create_engine_for", "is_postgresql", "migrate", "normalise_url", "session_factory"]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key of the migrations: any constant no other code uses ("cardless" in ASCII).
_MIGRATION_LOCK = 0x63617264_6C657373
_POSTGRES_DRIVERS = frozenset({"postgres", "postgresql", "postgresql+psycopg"})


def normalise_url(url: str) -> str:
    """The SQLAlchemy URL to connect with: PostgreSQL URLs get the psycopg 3 driver (the only one
    installed); anything else is returned unchanged. Raises ValueError for another PostgreSQL driver."""
    parsed = make_url(url)
    if parsed.drivername in _POSTGRES_DRIVERS:
        # Only the scheme changes: the rest (password, query) stays byte for byte as the operator wrote it.
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if parsed.drivername.startswith("postgresql+"):
        raise ValueError(
            f"PostgreSQL is reached through psycopg 3: use postgresql://, not {parsed.drivername}://"
        )
    return url


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def create_engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = make_url(url).database
        on_disk = database and database != ":memory:" and not database.startswith("file:")
        path = Path(database) if on_disk and database else None
        if path is not None:
            _create_private(path)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.close()
            install_sqlite_u256(dbapi_connection)
            if path is not None:
                for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    restrict(name)

        return engine
    # pre-ping: a pooled connection a failover or an idle timeout of the server (or a proxy) closed is
    # replaced before use instead of failing the worker's next transaction.
    return create_engine(
        normalise_url(url),
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args={"application_name": "cardless", "connect_timeout": 10},
    )


def _create_private(path: Path) -> None:
    """An empty 0600 file for SQLite to open; a missing directory is created 0700 (an existing one
    is the operator's and left alone)."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        if is_postgresql(engine):
            # Processes starting together on one database: the first migrates, the others wait here and
            # then find nothing to do (PostgreSQL runs the DDL in this transaction).
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
