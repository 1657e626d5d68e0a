"""A migrated database for the tests that need one: an SQLite file under the test's temporary
directory, brought to the newest Alembic revision exactly as the services do (``migrate``).

``migrated(url)`` is the helper (a context manager yielding a session factory); ``db_url`` and
``migrated_db`` are the fixtures (one fresh file per test). A module that wants one database for all
its tests wraps ``migrated`` in a module-scoped fixture of its own.

A new SQLite file is a copy of one this test process migrated once (``migrate`` took ~70 ms a test,
the copy well under 1 ms); the migrations themselves are tested in tests/ledger/test_migrations.py.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import create_engine_for, migrate, session_factory

__all__ = ["db_url", "migrated", "migrated_db", "migrated_engine", "sqlite_url"]

_template: list[Path] = []


def sqlite_url(directory: Path, name: str = "cardless.db") -> str:
    return f"sqlite:///{directory / name}"


def _migrated_template() -> Path:
    """An SQLite file migrated to the newest revision, once per test process (closed: no WAL left)."""
    if not _template:
        path = Path(tempfile.mkdtemp(prefix="cardless-migrated-")) / "template.db"
        atexit.register(shutil.rmtree, path.parent, ignore_errors=True)
        engine = create_engine_for(sqlite_url(path.parent, path.name))
        try:
            migrate(engine)
        finally:
            engine.dispose()
        _template.append(path)
    return _template[0]


def migrated_engine(url: str) -> Engine:
    """An engine over the database at ``url``, migrated: a new SQLite file starts as a copy of the
    process's migrated template, anything else is migrated in place."""
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if path is not None and path != ":memory:" and not Path(path).exists():
        shutil.copyfile(_migrated_template(), path)
        return create_engine_for(url)
    engine = create_engine_for(url)
    try:
        migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


@contextmanager
def migrated(url: str) -> Iterator[sessionmaker[Session]]:
    """Migrate the database at ``url`` and yield a session factory; the engine is disposed after."""
    engine = migrated_engine(url)
    try:
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
