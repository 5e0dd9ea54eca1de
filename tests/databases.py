"""Index databases for tests, on both backends: a fresh SQLite file or PostgreSQL database.

`scripts/test` starts a private PostgreSQL cluster and passes its URL in
``MINIPACS_TEST_POSTGRESQL_URL``; without it the PostgreSQL cases fail with a message (never
skip silently). Each PostgreSQL database is a copy of a template migrated once per session
(``CREATE DATABASE ... TEMPLATE``), so a test pays for a file copy, not for the migrations.

Fixtures: ``backend`` ("sqlite", "postgresql"), ``db_url`` (a fresh migrated database of
that backend), ``engine`` over it, and ``databases`` to make more (any scope).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from minipacs.index.engine import make_engine
from minipacs.index.migrate import upgrade

POSTGRESQL_ENV: Final = "MINIPACS_TEST_POSTGRESQL_URL"
SQLITE: Final = "sqlite"
POSTGRESQL: Final = "postgresql"
BACKENDS: Final = (SQLITE, POSTGRESQL)
_TEMPLATE: Final = "minipacs_test_template"
# For what only SQLite has (file locks, PRAGMAs, the online backup API, its query plans):
# parametrizing `backend` directly overrides the fixture's two values.
sqlite_only: Final = pytest.mark.parametrize("backend", [SQLITE])
# For what only PostgreSQL has: several writers at once (SQLite's writers take turns).
postgresql_only: Final = pytest.mark.parametrize("backend", [POSTGRESQL])


class Databases:
    """Makes fresh, migrated index databases and drops the PostgreSQL ones at the end."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self._tmp = tmp
        self._admin: Engine | None = None
        self._admin_url = os.environ.get(POSTGRESQL_ENV, "")
        self._numbers = itertools.count(1)
        # Unique per instance: each test package that imports the fixture has its own.
        self._prefix = f"minipacs_test_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self._made: list[str] = []

    def create(self, backend: str) -> str:
        """The URL of a new database of `backend`, at the head revision."""
        if backend == SQLITE:
            url = self.create_empty(SQLITE)
            upgrade(url)
            return url
        return self._new_postgresql(f' TEMPLATE "{_TEMPLATE}"')

    def create_empty(self, backend: str) -> str:
        """The URL of a new database of `backend` with nothing in it (not migrated)."""
        if backend == SQLITE:
            return f"sqlite:///{self._tmp.mktemp('db') / 'index.db'}"
        return self._new_postgresql("")

    def _new_postgresql(self, options: str) -> str:
        admin = self._postgresql()
        name = f"{self._prefix}{next(self._numbers)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{options}'))
        self._made.append(name)
        return make_url(self._admin_url).set(database=name).render_as_string(
            hide_password=False)

    def drop(self, url: str) -> None:
        """Drop a PostgreSQL database made here (closing its sessions); SQLite: nothing."""
        name = make_url(url).database
        if self._admin is None or name not in self._made:
            return
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._made.remove(name)

    def close(self) -> None:
        if self._admin is None:
            return
        for name in list(self._made):
            self.drop(make_url(self._admin_url).set(database=name).render_as_string(False))
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)'))
        self._admin.dispose()

    def _postgresql(self) -> Engine:
        if self._admin is not None:
            return self._admin
        if not self._admin_url:
            pytest.fail(f"no PostgreSQL for the postgresql cases: run the tests with "
                        f"scripts/test, which starts one and sets {POSTGRESQL_ENV}",
                        pytrace=False)
        # CREATE/DROP DATABASE cannot run inside a transaction.
        admin = create_engine(make_url(self._admin_url).set(drivername="postgresql+psycopg"),
                              isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{_TEMPLATE}"'))
        upgrade(make_url(self._admin_url).set(database=_TEMPLATE))
        self._admin = admin
        return admin


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    made = Databases(tmp_path_factory)
    yield made
    made.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(databases: Databases, backend: str) -> Iterator[str]:
    url = databases.create(backend)
    yield url
    databases.drop(url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def sqlite_file(url: str) -> Path:
    """The database file of an SQLite URL made here."""
    return Path(make_url(url).database or "")
