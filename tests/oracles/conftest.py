from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import create_engine_for, migrate, session_factory


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A fresh, migrated SQLite ledger (a file, so several connections and threads share it)."""
    engine = create_engine_for(f"sqlite:///{tmp_path / 'cardless.db'}")
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
