"""Alembic: `upgrade head` on a fresh database matches the models exactly, on both backends."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from minipacs.index.engine import make_engine
from minipacs.index.migrate import MIGRATIONS_DIR, alembic_config, upgrade
from minipacs.index.models import Base
from tests.databases import sqlite_file, sqlite_only

HEAD = "0008_processes"
OLD_CONSTRAINT = "uq_patient_other_id_patient_pk_other_patient_id_issuer_of_patient_id"


def test_upgrade_head_matches_the_models(engine: Engine, db_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == head == HEAD
        assert compare_metadata(context, Base.metadata) == []
    indexes = {ix["name"]: ix for ix in inspect(engine).get_indexes("patient")}
    assert indexes["uq_patient_identity"]["unique"]
    (unique,) = inspect(engine).get_unique_constraints("patient_other_id")
    assert unique["name"] == "uq_patient_other_id_identity"  # PostgreSQL: 63 characters max


def test_an_index_made_by_the_first_0001_is_renamed_and_kept(tmp_path: Path) -> None:
    """SQLite files made when 0001 used the 69-character name reach head with their rows."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0005_worklist")
    with contextlib.closing(sqlite3.connect(sqlite_file(url), isolation_level=None)) as db:
        (table_sql,) = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' "
                                  "AND name = 'patient_other_id'").fetchone()
        index_sql = [sql for (sql,) in db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'patient_other_id' AND sql IS NOT NULL")]
        db.executescript(
            "PRAGMA foreign_keys = OFF; BEGIN;"
            "ALTER TABLE patient_other_id RENAME TO old_other_id;"
            f"{table_sql.replace('uq_patient_other_id_identity', OLD_CONSTRAINT)};"
            "INSERT INTO patient VALUES (1, 'P1', '', NULL, NULL, NULL, NULL, NULL, '{}');"
            "INSERT INTO patient_other_id VALUES (1, 1, 'OTHER1', 'ISSUER');"
            "DROP TABLE old_other_id;"
            f"{';'.join(index_sql)}; COMMIT;")
    engine = make_engine(url)
    try:
        assert [u["name"] for u in inspect(engine).get_unique_constraints(
            "patient_other_id")] == [OLD_CONSTRAINT]
        upgrade(url)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn)
            assert context.get_current_revision() == HEAD
            assert compare_metadata(context, Base.metadata) == []
            assert conn.exec_driver_sql(
                "SELECT patient_pk, other_patient_id, issuer_of_patient_id "
                "FROM patient_other_id").all() == [(1, "OTHER1", "ISSUER")]
    finally:
        engine.dispose()


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


@sqlite_only
def test_sqlite_pragmas(engine: Engine) -> None:
    with engine.connect() as conn:
        pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                  for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
    assert pragma == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1,
                      "busy_timeout": 5000}
