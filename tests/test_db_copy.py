"""`minipacs db copy --to URL`: SQLite to PostgreSQL and back, all or nothing (issue 15).

A store is filled through the C-STORE SCP, with a Storage Commitment transaction pending;
the index is copied to an empty PostgreSQL database, checked there against the same store
with `db check`, written to (its sequences moved past the copied keys), and copied back
into a new SQLite file; every row of every table is compared at each step.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from minipacs.config import load_config
from minipacs.index.commitment import SqlCommitmentIndex
from minipacs.index.copy import copied_tables
from minipacs.index.engine import make_engine
from minipacs.index.processes import ProcessRegistry
from minipacs.ports import CommitmentItem, CommitmentTransaction
from tests.databases import POSTGRESQL, Databases, databases  # noqa: F401
from tests.index.dicomdata import make_dataset
from tests.support import write_config
from tests.test_ops_cli import populate, run

CT = "1.2.840.10008.5.1.4.1.1.2"

Dump = dict[str, list[tuple[Any, ...]]]


def dump(url: str) -> Dump:
    """Every row of every copied table, in key order, timestamps in UTC."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            out = {}
            for table in copied_tables():
                rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
                out[table.name] = [tuple(_utc(v) for v in row) for row in rows]
            return out
    finally:
        engine.dispose()


def _utc(value: object) -> object:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def with_url(directory: Path, store: Path, url: str) -> Path:
    directory.mkdir(exist_ok=True)
    return write_config(directory, storage={"root": str(store)}, database={"url": url})


def add_commitment(url: str) -> None:
    """A pending transaction, claimed by a process that is gone (the claim is not copied)."""
    engine = make_engine(url)
    try:
        index = SqlCommitmentIndex(engine, owner="old:1:gone")
        txn = CommitmentTransaction("1.2.3.99", "MODALITY", "MINIPACS",
                                    (CommitmentItem(CT, "1.2.3.99.1"),), datetime.now(UTC))
        assert asyncio.run(index.add_transaction(txn))
    finally:
        engine.dispose()


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, Path, Dump]:
    """A config of a SQLite index with two studies stored, and its dump."""
    config = with_url(tmp_path / "sqlite", tmp_path / "store",
                      f"sqlite:///{tmp_path / 'sqlite' / 'index.db'}")
    populate(load_config(config), [make_dataset(n, study=1 + n % 2, patient_id=f"P{n % 2}")
                                   for n in range(1, 7)])
    url = load_config(config).database.url
    add_commitment(url)
    before = dump(url)
    assert len(before["instance"]) == 6 and before["commitment_transaction"][0][-1]
    return config, tmp_path / "store", before


def without_claims(rows: Dump) -> Dump:
    out = dict(rows)
    out["commitment_transaction"] = [(*row[:-1], None) for row in rows["commitment_transaction"]]
    return out


def test_copy_to_postgresql_and_back(filled: tuple[Path, Path, Dump],
                                     databases: Databases,  # noqa: F811
                                     tmp_path: Path) -> None:
    config, store, before = filled
    pg_url = databases.create_empty(POSTGRESQL)
    result = run("db", "copy", "--to", pg_url, "--config", config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("copied ")
    assert "6 instance" in result.stdout
    assert dump(pg_url) == without_claims(before)
    pg_config = with_url(tmp_path / "pg", store, pg_url)
    check = run("db", "check", "--config", pg_config)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("checked 6 instances and 6 files: no problems")

    # The copy takes writes: new rows get keys past the copied ones.
    populate(load_config(pg_config), [make_dataset(7, study=3, patient_id="P3")])
    grown = dump(pg_url)
    assert len(grown["instance"]) == 7 and len(grown["patient"]) == 3

    back_url = f"sqlite:///{tmp_path / 'back' / 'index.db'}"
    result = run("db", "copy", "--to", back_url, "--config", pg_config)
    assert result.returncode == 0, result.stderr
    assert dump(back_url) == grown
    check = run("db", "check", "--config", with_url(tmp_path / "back", store, back_url))
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_failed_copy_leaves_the_destination_empty(
        filled: tuple[Path, Path, Dump], databases: Databases) -> None:  # noqa: F811
    """All or nothing: a row PostgreSQL refuses (SQLite never enforced the column length),
    the last instance, fails the copy after the tables before it went in: all rolled back."""
    config, _store, _before = filled
    engine = make_engine(load_config(config).database.url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE instance SET calling_ae_title = :v "
                              "WHERE pk = (SELECT max(pk) FROM instance)"), {"v": "X" * 400})
    finally:
        engine.dispose()
    pg_url = databases.create_empty(POSTGRESQL)
    result = run("db", "copy", "--to", pg_url, "--config", config)
    assert result.returncode == 1
    assert "failed, nothing written" in result.stderr and result.stderr.count("\n") == 1
    assert all(rows == [] for rows in dump(pg_url).values())
    # Fixed at the source, the same copy runs again into the same (still empty) database.
    engine = make_engine(load_config(config).database.url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE instance SET calling_ae_title = 'MODALITY'"))
    finally:
        engine.dispose()
    assert run("db", "copy", "--to", pg_url, "--config", config).returncode == 0


def test_copy_refusals(filled: tuple[Path, Path, Dump], tmp_path: Path) -> None:
    config, _store, _before = filled
    source_url = load_config(config).database.url
    same = run("db", "copy", "--to", source_url, "--config", config)
    assert same.returncode == 2 and "is the index itself" in same.stderr
    bad = run("db", "copy", "--to", "not a url", "--config", config)
    assert bad.returncode == 2 and bad.stderr.startswith("minipacs db copy: ")
    assert bad.stderr.count("\n") == 1

    full_url = f"sqlite:///{tmp_path / 'full' / 'index.db'}"
    assert run("db", "copy", "--to", full_url, "--config", config).returncode == 0
    again = run("db", "copy", "--to", full_url, "--config", config)
    assert again.returncode == 1 and "is not empty (" in again.stderr

    engine = make_engine(source_url)
    try:  # a serving process on the source: what it stores meanwhile would be missed
        ProcessRegistry(engine, lease=60, token="test:serving").register("MINIPACS", "x:1")
        busy = run("db", "copy", "--to", f"sqlite:///{tmp_path / 'other.db'}",
                   "--config", config)
    finally:
        engine.dispose()
    assert busy.returncode == 1 and "stop them first" in busy.stderr
    assert not (tmp_path / "other.db").exists()
