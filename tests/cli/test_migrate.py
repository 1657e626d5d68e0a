"""``cardless migrate``: the schema first, the code second. On an empty PostgreSQL database it builds the
schema at head; run again it changes nothing; a database that does not answer is one line, exit 1."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect
from typer.testing import CliRunner

from cardless.cli.main import app
from cardless.ledger import Base, create_engine_for
from tests.support.postgres import PostgresServer


def run(url: str, tmp_path: Path) -> tuple[int, str]:
    env = {"CARDLESS_DATABASE_URL": url, "CARDLESS_VAR_DIR": str(tmp_path)}
    result = CliRunner().invoke(app, ["migrate"], env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_cardless_migrate_brings_an_empty_postgresql_database_to_head(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    with postgres.database(migrated=False) as url:
        code, output = run(url, tmp_path)
        assert code == 0, output
        assert "database at revision" in output
        engine = create_engine_for(url)
        try:
            assert set(inspect(engine).get_table_names()) == {*Base.metadata.tables, "alembic_version"}
        finally:
            engine.dispose()
        assert run(url, tmp_path) == (code, output)  # again: nothing to do, same revision


def test_cardless_migrate_names_a_database_that_does_not_answer(tmp_path: Path) -> None:
    # A loopback port nothing listens on (1 is reserved), and a short connect timeout.
    code, output = run("postgresql://nobody:x@127.0.0.1:1/cardless?connect_timeout=2", tmp_path)
    assert code == 1
    assert output.startswith("migrate failed:") and "127.0.0.1" in output and "Traceback" not in output
