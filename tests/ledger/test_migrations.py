"""The Alembic migrations: ``migrate`` on an empty SQLite file and on an empty PostgreSQL database builds
exactly the models' schema, running it again changes nothing, and processes starting together on one
PostgreSQL database migrate it once."""

from __future__ import annotations

import threading
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
from cardless.ledger.engine import normalise_url
from tests.support.orders import order_row
from tests.support.postgres import PostgresServer


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


# ---------------------------------------------------------------------- PostgreSQL


def test_migrate_on_an_empty_postgresql_database_builds_the_models_schema(postgres: PostgresServer) -> None:
    """The same migrations on the database several workers share in production: the schema is exactly
    the models' (types, nullability, indexes), and a second run changes nothing and keeps the data."""
    with postgres.database(migrated=False) as url:
        engine = create_engine_for(url)
        try:
            assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
            assert inspect(engine).get_table_names() == []
            migrate(engine)
            assert set(inspect(engine).get_table_names()) == {*Base.metadata.tables, "alembic_version"}
            assert differences(engine) == []
            with session_factory(engine).begin() as session:
                session.add(SignerNonce(address="0x" + "01" * 20, next_nonce=2**40))
                session.add(order_row(amount=2**255))  # uint256 amounts beyond BIGINT survive as text
            migrate(engine)
            assert current_revision(engine) == head_revision()
            with session_factory(engine)() as session:
                assert session.execute(select(SignerNonce.next_nonce)).scalar_one() == 2**40
                assert session.execute(select(Order.amount)).scalar_one() == 2**255
        finally:
            engine.dispose()


def test_processes_starting_together_on_one_postgresql_database_migrate_it_once(
    postgres: PostgresServer,
) -> None:
    """Four workers and a gateway start at once on a new database: each runs ``migrate`` with its own
    engine; the advisory lock lets one build the schema while the others wait and then find it at head
    (without it, the second CREATE TABLE fails and that process does not start)."""
    with postgres.database(migrated=False) as url:
        engines = [create_engine_for(url) for _ in range(4)]
        barrier = threading.Barrier(len(engines))
        errors: list[BaseException] = []

        def start(engine: Engine) -> None:
            try:
                barrier.wait(10)
                migrate(engine)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        try:
            assert not errors, errors
            assert current_revision(engines[0]) == head_revision()
            assert differences(engines[0]) == []
        finally:
            for engine in engines:
                engine.dispose()


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u:p@db.example:5432/cardless", "postgresql+psycopg://u:p@db.example:5432/cardless"),
        # what hosted providers hand out; the query (TLS options) goes to libpq unchanged
        (
            "postgres://u:p@db.example/cardless?sslmode=require",
            "postgresql+psycopg://u:p@db.example/cardless?sslmode=require",
        ),
        (
            "postgresql+psycopg://u@/cardless?host=/run/postgresql",
            "postgresql+psycopg://u@/cardless?host=/run/postgresql",
        ),
        ("sqlite:///var/cardless.db", "sqlite:///var/cardless.db"),
    ],
)
def test_postgresql_urls_use_psycopg_3(given: str, used: str) -> None:
    assert normalise_url(given) == used


def test_another_postgresql_driver_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="psycopg 3: use postgresql://"):
        normalise_url("postgresql+psycopg2://u:p@localhost/cardless")
