from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import create_engine_for, session_factory
from tests.support.db import migrated_engine


@pytest.fixture
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A fresh, migrated ledger: an SQLite file (so several connections and threads share it). A module
    that must also hold on PostgreSQL says ``LEDGER_BACKENDS = BACKENDS`` (tests.support.postgres): then
    each of its tests that takes ``ledger`` runs on both."""
    if getattr(request, "param", "sqlite") == "postgresql":
        with request.getfixturevalue("postgres").database() as url:
            engine = create_engine_for(url)
            yield session_factory(engine)
            engine.dispose()
        return
    engine = migrated_engine(f"sqlite:///{tmp_path / 'cardless.db'}")  # a copy of a migrated file
    yield session_factory(engine)
    engine.dispose()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    backends = getattr(metafunc.module, "LEDGER_BACKENDS", None)
    if backends and "ledger" in metafunc.fixturenames:
        metafunc.parametrize("ledger", backends, indirect=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
