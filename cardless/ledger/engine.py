"""Engine and session factory. SQLite (WAL) by default; PostgreSQL by URL.

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

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger.private_files import DIR_MODE, FILE_MODE, restrict

__all__ = ["create_engine_for", "migrate", "session_factory"]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


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
            if path is not None:
                for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    restrict(name)

        return engine
    return create_engine(url, pool_pre_ping=True)


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
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
