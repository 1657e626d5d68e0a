"""PostgreSQL for the tests: a fresh, migrated database per test, created and dropped here.

The server is the one ``CARDLESS_TEST_PG_URL`` names (a role that may create databases; ``.ci/postgres``
installs and starts PostgreSQL and prints that variable). A test that needs PostgreSQL *fails* when it
is not set or the server does not answer: a payments ledger that was only ever tested on SQLite is not
tested on the database it runs on in production.

Per session (per xdist worker) one template database is migrated exactly as the services do
(``migrate``); a test gets ``CREATE DATABASE ... TEMPLATE`` of it (tens of milliseconds instead of a
migration), emptied with ``DELETE`` after the test and handed to the next one; the databases are
dropped at the end of the session, ``WITH (FORCE)`` so a connection a crashed subprocess left behind
cannot keep one alive.

- ``PostgresServer.database()``: a context manager yielding the URL of a fresh migrated database;
- ``postgres`` (session fixture): the server; ``pg_url``: a fresh migrated database for one test;
- ``backend_url`` (parametrised ``sqlite``/``postgresql``): the same test on both databases.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from cardless.ledger import Base, create_engine_for, migrate
from cardless.ledger.engine import normalise_url
from tests.support.db import sqlite_url

__all__ = ["PG_URL_VARIABLE", "PostgresServer", "backend_url", "pg_url", "postgres"]

PG_URL_VARIABLE = "CARDLESS_TEST_PG_URL"
BACKENDS = ("sqlite", "postgresql")


class PostgresServer:
    """The test server: makes and drops databases through an autocommit admin connection."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url: URL = make_url(normalise_url(admin_url))
        self._admin: Engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT", pool_size=1)
        # Unique per process: xdist workers and parallel runs on one server never meet.
        self.prefix = f"cardless_t{os.getpid()}_{secrets.token_hex(3)}"
        self._template: str | None = None
        self._count = 0
        self._free: list[str] = []  # migrated databases emptied after their test, for the next one

    def url(self, database: str) -> str:
        return self.admin_url.set(database=database).render_as_string(hide_password=False)

    def _execute(self, statement: str) -> None:
        with self._admin.connect() as connection:
            connection.execute(text(statement))

    def _new_name(self) -> str:
        self._count += 1
        return f"{self.prefix}_{self._count}"

    def template(self) -> str:
        """The session's migrated template database (made on first use)."""
        if self._template is None:
            name = f"{self.prefix}_template"
            self._execute(f'CREATE DATABASE "{name}"')
            engine = create_engine_for(self.url(name))
            try:
                migrate(engine)
            finally:
                engine.dispose()  # a template may have no other connection while it is copied
            self._template = name
        return self._template

    def create(self, *, migrated: bool = True) -> str:
        """A new database (a copy of the migrated template, or empty); returns its name."""
        name = self._new_name()
        template = f' TEMPLATE "{self.template()}"' if migrated else ""
        self._execute(f'CREATE DATABASE "{name}"{template}')
        return name

    def drop(self, name: str) -> None:
        try:
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except DBAPIError:
            # FORCE checks that this role may signal every backend in the database first, and an
            # autovacuum worker belongs to no role: without pg_signal_backend it refuses. The plain
            # form stops autovacuum workers itself (and waits up to 5 s for them).
            self._execute(f'DROP DATABASE IF EXISTS "{name}"')

    @contextmanager
    def database(self, *, migrated: bool = True) -> Iterator[str]:
        """The URL of a fresh database (migrated to head unless told otherwise).

        A migrated one is emptied afterwards (``DELETE``, milliseconds) and handed to the next test;
        dropping it costs a checkpoint (~0.7 s). An empty one, or one that cannot be emptied (a
        connection still holds a lock), is dropped."""
        name = self._free.pop() if migrated and self._free else self.create(migrated=migrated)
        try:
            yield self.url(name)
        finally:
            if migrated and self._emptied(name):
                self._free.append(name)
            else:
                self.drop(name)

    def _emptied(self, name: str) -> bool:
        engine = create_engine(self.admin_url.set(database=name), poolclass=NullPool)
        try:
            with engine.begin() as connection:
                connection.execute(text("SET LOCAL lock_timeout = '5s'"))
                # DELETE, not TRUNCATE: a test leaves a few rows, and TRUNCATE makes (and syncs) new
                # files for every table. Ids are not reset: no test relies on their values.
                for table in reversed(Base.metadata.sorted_tables):
                    connection.execute(table.delete())
            return True
        except Exception:
            return False
        finally:
            engine.dispose()

    def close(self) -> None:
        for name in self._free:
            self.drop(name)
        self._free.clear()
        if self._template is not None:
            self.drop(self._template)
        self._admin.dispose()


def connect_or_fail() -> PostgresServer:
    url = os.environ.get(PG_URL_VARIABLE)
    if not url:
        pytest.fail(
            f'{PG_URL_VARIABLE} is not set: these tests need PostgreSQL. Run `eval "$(.ci/postgres)"` '
            "(installs and starts it on loopback, creates a test role) or point the variable at a role "
            "that may create databases, e.g. postgresql://user:password@127.0.0.1:5432/postgres",
            pytrace=False,
        )
    server = PostgresServer(url)
    try:
        server._execute("SELECT 1")
    except Exception as exc:
        server._admin.dispose()
        pytest.fail(f"PostgreSQL at {PG_URL_VARIABLE} does not answer: {exc}", pytrace=False)
    return server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = connect_or_fail()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh migrated PostgreSQL database of this test, dropped after it."""
    with postgres.database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh migrated database of this test, on SQLite and then on PostgreSQL."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
        engine = create_engine_for(url)
        try:
            migrate(engine)
        finally:
            engine.dispose()
        yield url
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    with server.database() as url:
        yield url
