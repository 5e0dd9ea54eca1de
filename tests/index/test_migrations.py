"""Alembic: `upgrade head` on a fresh database matches the models exactly."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from minipacs.index.engine import make_engine
from minipacs.index.migrate import MIGRATIONS_DIR, alembic_config, upgrade
from minipacs.index.models import Base


def test_upgrade_head_matches_the_models(engine: Engine, db_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == head == "0005_worklist"
        assert compare_metadata(context, Base.metadata) == []
    indexes = {ix["name"]: ix for ix in inspect(engine).get_indexes("patient")}
    assert indexes["uq_patient_identity"]["unique"]


def test_upgrade_is_idempotent_and_makes_the_folder(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'new' / 'index.db'}"  # the config's default form
    upgrade(url)
    upgrade(url)
    engine = make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) >= {
            "patient", "study", "series", "instance", "alembic_version"}
    finally:
        engine.dispose()
    assert (MIGRATIONS_DIR / "env.py").is_file()


def test_sqlite_pragmas(engine: Engine) -> None:
    with engine.connect() as conn:
        pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                  for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
    assert pragma == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1,
                      "busy_timeout": 5000}
