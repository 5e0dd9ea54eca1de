"""Schema migrations (Alembic), run before the server's event loop starts, once at a time.

Synchronous on purpose: call it from ``serve`` and ``minipacs db upgrade`` before
``asyncio.run``; inside a running loop, hand it to a thread.

Several processes may start on one index at once (issue 15): the migrations run in one
transaction that first takes the index's migration lock (`engine.lock_for_migration`:
PostgreSQL's advisory lock, SQLite's write lock), so one process migrates and the others,
once it has committed, find the schema at head and do nothing. A database at a revision
these migrations do not know was made by a newer minipacs: it is refused (`SchemaTooNew`),
never touched.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import NullPool

from .engine import WRITE_OPTION, lock_for_migration, make_engine, sync_url

__all__ = ["MIGRATIONS_DIR", "SchemaTooNew", "alembic_config", "check_known", "upgrade"]

# A migration may wait this long for another process's (SQLite's busy timeout).
MIGRATION_BUSY_TIMEOUT_MS: Final = 120_000


class SchemaTooNew(Exception):
    """The index's schema revision is unknown here: a newer minipacs made it."""

    def __init__(self, current: str, head: str | None) -> None:
        super().__init__(f"index schema is at revision {current}, which this minipacs does not "
                         f"know (its newest is {head}): a newer minipacs has upgraded it; "
                         "run that version, or point database.url at another index")
        self.current = current
        self.head = head


def _migrations_dir() -> Path:
    """migrations/ as installed (package minipacs.migrations), else in the source tree."""
    spec = importlib.util.find_spec("minipacs.migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "migrations"


MIGRATIONS_DIR: Final = _migrations_dir()


def alembic_config(url: str | URL) -> Config:
    """An Alembic configuration for `url` without an alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = sync_url(url).render_as_string(hide_password=False)
    return config


def check_known(conn: Connection, config: Config) -> str | None:
    """The database's revision (None: not migrated); SchemaTooNew when it is not ours."""
    current = MigrationContext.configure(conn).get_current_revision()
    script = ScriptDirectory.from_config(config)
    if current is not None and current not in {r.revision for r in script.walk_revisions()}:
        raise SchemaTooNew(current, script.get_current_head())
    return current


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Bring the index database at `url` to `revision` (creating an SQLite file's folder).

    One transaction under the migration lock (module docstring). Raises SchemaTooNew for a
    database a newer minipacs has migrated.
    """
    parsed = sync_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    config = alembic_config(parsed)
    engine = make_engine(parsed, poolclass=NullPool, busy_timeout_ms=MIGRATION_BUSY_TIMEOUT_MS)
    try:
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
            lock_for_migration(conn)
            check_known(conn, config)
            config.attributes["connection"] = conn  # Alembic joins this transaction
            command.upgrade(config, revision)
    finally:
        engine.dispose()
