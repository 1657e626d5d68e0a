"""The Alembic migrations: ``migrate`` on an empty SQLite file builds exactly the models' schema, and
running it again changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Engine, Integer, MetaData, Table, inspect, select, text

import cardless.ledger.engine as db_session
from cardless.ledger import (
    Base,
    ChainCursor,
    Order,
    SignerNonce,
    create_engine_for,
    migrate,
    session_factory,
)
from tests.support.orders import order_row


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'cardless.db'}")
    yield engine
    engine.dispose()


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(db_session._MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def differences(engine: Engine, metadata: MetaData = Base.metadata) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_migrate_on_an_empty_database_builds_every_table_of_the_models(engine: Engine) -> None:
    assert inspect(engine).get_table_names() == []
    migrate(engine)
    assert set(inspect(engine).get_table_names()) == {*Base.metadata.tables, "alembic_version"}
    assert differences(engine) == []  # columns, types, nullability, indexes, unique constraints
    assert current_revision(engine) == head_revision()


def test_the_comparison_would_see_a_model_the_migrations_lack(engine: Engine) -> None:
    """A control for the test above: autogenerate does report a difference when there is one."""
    migrate(engine)
    metadata = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    Table("not_migrated", metadata, Column("id", Integer, primary_key=True))
    diffs = differences(engine, metadata)
    assert [d[0] for d in diffs] == ["add_table"]  # type: ignore[index]


def test_migrate_is_idempotent_and_keeps_the_data(engine: Engine) -> None:
    migrate(engine)
    sessions = session_factory(engine)
    with sessions.begin() as session:
        session.add(ChainCursor(name="escrow", block_number=7, block_hash="0x" + "ab" * 32))
        session.add(SignerNonce(address="0x" + "01" * 20, next_nonce=3))

    migrate(engine)
    migrate(engine)
    assert current_revision(engine) == head_revision()
    assert differences(engine) == []
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    with sessions() as session:
        assert session.execute(select(ChainCursor.block_number)).scalar_one() == 7
        assert session.execute(select(SignerNonce.next_nonce)).scalar_one() == 3


def test_the_sqlite_engine_runs_in_wal_mode_with_foreign_keys(engine: Engine) -> None:
    migrate(engine)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
        # freed pages are zeroed (Debian's SQLite does it by default; other builds need the pragma)
        assert connection.execute(text("PRAGMA secure_delete")).scalar_one() == 1


def test_0003_drops_the_stored_salts_and_leaves_no_copy_in_the_file(tmp_path: Path) -> None:
    """Rows quoted before 0003 kept a random salt beside the commitment; it cannot be re-derived, and
    their buyers already hold it, so 0003 drops it: not in the table, nor in the file's free pages."""
    path = tmp_path / "cardless.db"
    engine = create_engine_for(f"sqlite:///{path}")
    salt = "0x" + "5a17" * 16
    config = Config()
    config.set_main_option("script_location", str(db_session._MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
        row = order_row()
        now = datetime.now(UTC)
        values = {c.name: getattr(row, c.key) for c in Order.__table__.columns}
        values |= {"provider_index": 0, "attempts": 0, "created_at": now, "updated_at": now}
        with engine.begin() as connection:
            orders = Table("orders", MetaData(), autoload_with=connection)
            values = {name: value for name, value in values.items() if name in orders.c}  # 0002's columns
            connection.execute(orders.insert().values(**values, account_salt=salt))

        migrate(engine)
        assert "account_salt" not in {c["name"] for c in inspect(engine).get_columns("orders")}
        with session_factory(engine)() as session:
            assert session.get(Order, row.id) is not None  # the order itself survives
    finally:
        engine.dispose()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert salt[2:].encode() not in stored
    assert bytes.fromhex(salt[2:]) not in stored
