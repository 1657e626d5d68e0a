"""Files the system creates are owner-only: the SQLite database with its -wal and -shm, and anything
written through ``cardless.ledger.private_files`` (keystores, their password, the account key)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import text

from cardless.ledger import create_engine_for, migrate
from cardless.ledger.private_files import private_dir, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_sqlite_database_and_its_wal_and_shm_are_0600_in_a_new_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "var" / "cardless.db"
    engine = create_engine_for(f"sqlite:///{path}")
    try:
        migrate(engine)
        with engine.begin() as connection:  # a write, so the -wal and -shm exist while connected
            connection.execute(text("INSERT INTO signer_nonces (address, next_nonce) VALUES ('0x01', 1)"))
        for name in ("cardless.db", "cardless.db-wal", "cardless.db-shm"):
            assert mode(path.parent / name) == 0o600, name
        assert mode(path.parent) == 0o700
    finally:
        engine.dispose()


def test_an_existing_world_readable_database_is_narrowed_and_its_directory_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "cardless.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    os.chmod(tmp_path, 0o755)  # the operator's directory: not ours to change
    engine = create_engine_for(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert mode(path) == 0o600
        assert mode(tmp_path) == 0o755
    finally:
        engine.dispose()


def test_write_private_is_0600_from_the_start_and_atomic(tmp_path: Path) -> None:
    directory = private_dir(tmp_path / "keys")
    path = directory / "secret"
    write_private(path, "one")
    write_private(path, "two")  # replaces
    assert path.read_text() == "two"
    assert mode(path) == 0o600
    assert mode(directory) == 0o700
    assert sorted(p.name for p in directory.iterdir()) == ["secret"]  # no temporary left behind


def test_private_dir_narrows_an_existing_directory(tmp_path: Path) -> None:
    directory = tmp_path / "var"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    assert mode(private_dir(directory)) == 0o700
