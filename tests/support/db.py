"""A migrated database for the tests that need one: an SQLite file under the test's temporary
directory, brought to the newest Alembic revision exactly as the services do (``migrate``).

``migrated(url)`` is the helper (a context manager yielding a session factory); ``db_url`` and
``migrated_db`` are the fixtures (one fresh file per test). A module that wants one database for all
its tests wraps ``migrated`` in a module-scoped fixture of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import create_engine_for, migrate, session_factory

__all__ = ["db_url", "migrated", "migrated_db", "sqlite_url"]


def sqlite_url(directory: Path, name: str = "cardless.db") -> str:
    return f"sqlite:///{directory / name}"


@contextmanager
def migrated(url: str) -> Iterator[sessionmaker[Session]]:
    """Migrate the database at ``url`` and yield a session factory; the engine is disposed after."""
    engine = create_engine_for(url)
    try:
        migrate(engine)
        yield session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A not yet created SQLite file of this test (``migrated`` or the code under test creates it)."""
    return sqlite_url(tmp_path)


@pytest.fixture
def migrated_db(db_url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory over this test's own freshly migrated SQLite file."""
    with migrated(db_url) as sessions:
        yield sessions
