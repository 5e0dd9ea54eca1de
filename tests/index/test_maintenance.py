"""Index maintenance (minipacs.index.maintenance) on real SQLite files and PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from minipacs.index import IndexWriter
from minipacs.index.engine import RetryPolicy, make_engine
from minipacs.index.maintenance import (
    InstanceFile,
    NotSqliteError,
    RowCounts,
    backup_sqlite,
    clear_index,
    count_rows,
    current_revision,
    delete_rows,
    head_revision,
    instance_files_by_key,
    issuers_of_patient,
    iter_instance_files,
    settle_unreferenced,
    sqlite_path,
    unreferenced_keys,
)
from minipacs.index.migrate import upgrade
from minipacs.index.models import (
    Base,
    Instance,
    Level,
    Patient,
    PatientOtherId,
    PatientValue,
    Series,
    SeriesValue,
    Study,
    StudyValue,
)
from minipacs.ports import DuplicatePolicy
from tests.databases import sqlite_file, sqlite_only
from tests.index.dicomdata import attributes, make_dataset, other_ids, record, uid
from tests.index.test_migrations import HEAD

ALL_MODELS = (Patient, PatientOtherId, PatientValue, Study, StudyValue, Series, SeriesValue,
              Instance)


def n_rows(engine: Engine, model: type[Base]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def keys_of(engine: Engine) -> set[str]:
    return {f.key for f in iter_instance_files(engine)}


async def add(writer: IndexWriter, n: int, *, study: int = 1, series: int = 1,
              patient_id: str = "PID1", issuer: str | None = None) -> str:
    """Index instance `n` (with multi-valued keys at every level); returns its key."""
    ds = make_dataset(n, study=study, series=series, patient_id=patient_id, issuer=issuer)
    ds.OtherPatientIDsSequence = other_ids(("OTHER", "ELSEWHERE"))
    ds.OtherPatientNames = ["Roe^Richard", "Doe^J"]
    ds.PhysiciansOfRecord = ["House^Greg"]
    ds.OperatorsName = ["Tech^One"]
    rec = record(attributes(ds))
    await writer.submit(rec)
    return rec.stored.key


@pytest.fixture
async def populated(writer: IndexWriter) -> dict[str, list[str]]:
    """Patient PID1 (issuer A): study 1 (series 1: 3, series 2: 2); study 2 (series 1: 1).

    Patient PID1 (issuer B): study 3 (1 instance). Returns the keys per name.
    """
    keys: dict[str, list[str]] = {"s1.1": [], "s1.2": [], "s2.1": [], "s3.1": []}
    for n in (1, 2, 3):
        keys["s1.1"].append(await add(writer, n, study=1, series=1, issuer="A"))
    for n in (1, 2):
        keys["s1.2"].append(await add(writer, n, study=1, series=2, issuer="A"))
    keys["s2.1"].append(await add(writer, 1, study=2, series=1, issuer="A"))
    keys["s3.1"].append(await add(writer, 1, study=3, series=1, issuer="B"))
    return keys


async def test_iter_instance_files_pages_through_every_row(
    engine: Engine, populated: dict[str, list[str]]
) -> None:
    files = list(iter_instance_files(engine, page_size=2))
    assert [f.pk for f in files] == sorted(f.pk for f in files)
    assert {f.key for f in files} == {k for keys in populated.values() for k in keys}
    first = files[0]
    assert first == InstanceFile(first.pk, populated["s1.1"][0], 1234, "sha256:00",
                                 uid(1, 1, 1))
    found = instance_files_by_key(engine, [populated["s3.1"][0], "00/00/absent.dcm"])
    assert list(found) == [populated["s3.1"][0]]
    assert found[populated["s3.1"][0]].sop_instance_uid == uid(3, 1, 1)


async def test_counts_and_issuers(engine: Engine, populated: dict[str, list[str]]) -> None:
    assert count_rows(engine) == RowCounts(patients=2, studies=3, series=4, instances=7)
    assert issuers_of_patient(engine, "PID1") == ["A", "B"]
    assert issuers_of_patient(engine, "NOBODY") == []


async def test_delete_series_keeps_its_study_while_it_has_others(
    engine: Engine, populated: dict[str, list[str]]
) -> None:
    deleted = delete_rows(engine, Level.SERIES, uid(1, 2))
    assert deleted is not None
    assert sorted(deleted.keys) == sorted(populated["s1.2"])
    assert (deleted.instances, deleted.series, deleted.studies, deleted.patients) == (2, 1, 0, 0)
    assert count_rows(engine) == RowCounts(2, 3, 3, 5)
    assert keys_of(engine).isdisjoint(populated["s1.2"])


async def test_delete_last_series_removes_empty_study_but_not_a_busy_patient(
    engine: Engine, populated: dict[str, list[str]]
) -> None:
    deleted = delete_rows(engine, Level.SERIES, uid(2, 1))
    assert deleted is not None
    assert (deleted.instances, deleted.series, deleted.studies, deleted.patients) == (1, 1, 1, 0)
    with engine.connect() as conn:
        studies = set(conn.execute(select(Study.study_instance_uid)).scalars())
    assert studies == {uid(1), uid(3)}


async def test_delete_study_removes_rows_values_and_empty_patient(
    engine: Engine, populated: dict[str, list[str]]
) -> None:
    deleted = delete_rows(engine, Level.STUDY, uid(3))
    assert deleted is not None
    assert deleted.keys == tuple(populated["s3.1"])
    assert (deleted.series, deleted.studies, deleted.patients) == (1, 1, 1)
    assert count_rows(engine) == RowCounts(1, 2, 3, 6)
    assert issuers_of_patient(engine, "PID1") == ["A"]
    # The multi-valued keys of the removed rows went with them (ON DELETE CASCADE).
    with engine.connect() as conn:
        owners = {
            model: set(conn.execute(select(model.owner_pk)).scalars())
            for model in (PatientValue, StudyValue, SeriesValue)
        }
        assert owners[PatientValue] == set(conn.execute(select(Patient.pk)).scalars())
        assert owners[StudyValue] == set(conn.execute(select(Study.pk)).scalars())
        assert owners[SeriesValue] == set(conn.execute(select(Series.pk)).scalars())
        assert set(conn.execute(select(PatientOtherId.patient_pk)).scalars()) == owners[
            PatientValue]


async def test_delete_patient_takes_the_issuer_into_account(
    engine: Engine, populated: dict[str, list[str]]
) -> None:
    assert delete_rows(engine, Level.PATIENT, "PID1", "C") is None
    assert delete_rows(engine, Level.PATIENT, "PID1") is None  # issuer "" is another one
    deleted = delete_rows(engine, Level.PATIENT, "PID1", "A")
    assert deleted is not None
    assert sorted(deleted.keys) == sorted(populated["s1.1"] + populated["s1.2"]
                                          + populated["s2.1"])
    assert (deleted.series, deleted.studies, deleted.patients) == (3, 2, 1)
    assert count_rows(engine) == RowCounts(1, 1, 1, 1)
    assert keys_of(engine) == set(populated["s3.1"])


async def test_delete_unknown_changes_nothing(
    engine: Engine, populated: dict[str, list[str]]
) -> None:
    before = count_rows(engine)
    assert delete_rows(engine, Level.STUDY, uid(99)) is None
    assert delete_rows(engine, Level.SERIES, uid(1, 99)) is None
    assert count_rows(engine) == before


async def test_before_commit_sees_the_keys_while_the_rows_are_still_committed(
    engine: Engine, db_url: str, populated: dict[str, list[str]]
) -> None:
    seen: list[tuple[tuple[str, ...], int]] = []

    def journal(keys: tuple[str, ...]) -> None:
        # Another connection still sees the rows: the journal is written before the commit.
        other = make_engine(db_url)
        try:
            seen.append((keys, count_rows(other).instances))
        finally:
            other.dispose()

    deleted = delete_rows(engine, Level.STUDY, uid(1), before_commit=journal)
    assert deleted is not None
    assert seen == [(deleted.keys, 7)]
    assert count_rows(engine).instances == 2

    def fail(keys: tuple[str, ...]) -> None:
        raise OSError("journal not written")

    with pytest.raises(OSError, match="journal not written"):
        delete_rows(engine, Level.STUDY, uid(2), before_commit=fail)
    assert count_rows(engine).instances == 2  # rolled back: no journal, no delete


@sqlite_only
async def test_delete_waits_for_another_writer(
    db_url: str, populated: dict[str, list[str]]
) -> None:
    """A CLI delete beside a server: the write lock is waited out and retried, not an error."""
    engine = make_engine(db_url, busy_timeout_ms=10)
    locker = sqlite3.connect(sqlite_file(db_url), isolation_level=None,
                             check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    pauses: list[float] = []

    def pause(delay: float) -> None:  # the injected clock: the other writer commits meanwhile
        pauses.append(delay)
        if locker.in_transaction:
            locker.execute("COMMIT")

    try:
        deleted = delete_rows(engine, Level.STUDY, uid(3),
                              retry=RetryPolicy(retries=3, sleep=pause))
    finally:
        locker.close()
        engine.dispose()
    assert deleted is not None and deleted.patients == 1
    assert len(pauses) == 1


async def test_clear_index_empties_every_table(
    engine: Engine, populated: dict[str, list[str]]
) -> None:
    assert clear_index(engine) == RowCounts(2, 3, 4, 7)
    assert all(n_rows(engine, model) == 0 for model in ALL_MODELS)
    assert clear_index(engine) == RowCounts(0, 0, 0, 0)


@sqlite_only
async def test_backup_is_a_consistent_standalone_copy(
    engine: Engine, tmp_path: Path, populated: dict[str, list[str]]
) -> None:
    dest = tmp_path / "backups" / "copy.db"
    dest.parent.mkdir()
    counts = backup_sqlite(engine, dest)
    assert counts == count_rows(engine) == RowCounts(2, 3, 4, 7)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.db"]  # no .tmp, no -wal
    copy = sqlite3.connect(dest)
    try:
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert copy.execute("PRAGMA foreign_key_check").fetchall() == []
        keys = {r[0] for r in copy.execute("SELECT storage_key FROM instance")}
    finally:
        copy.close()
    assert keys == keys_of(engine)
    # An existing backup is replaced whole.
    clear_index(engine)
    assert backup_sqlite(engine, dest) == RowCounts(0, 0, 0, 0)


@sqlite_only
def test_backup_refuses_memory_and_itself(engine: Engine, db_url: str, tmp_path: Path) -> None:
    memory = make_engine("sqlite://")
    try:
        with pytest.raises(NotSqliteError):
            backup_sqlite(memory, tmp_path / "x.db")
    finally:
        memory.dispose()
    with pytest.raises(ValueError, match="the database itself"):
        backup_sqlite(engine, sqlite_file(db_url))


def test_sqlite_path() -> None:
    assert sqlite_path("sqlite+aiosqlite:////var/lib/x.db") == Path("/var/lib/x.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("sqlite://") is None
    assert sqlite_path("postgresql+asyncpg://u@h/db") is None


def test_revisions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    engine = make_engine(url)
    try:
        assert current_revision(engine) is None
        upgrade(url)
        assert current_revision(engine) == head_revision(engine) == HEAD
    finally:
        engine.dispose()


async def test_unreferenced_files_are_deleted_once_then_forgotten(engine: Engine) -> None:
    writer = IndexWriter(engine, duplicate_policy=DuplicatePolicy.REPLACE)
    await writer.start()
    try:
        attrs = attributes(make_dataset(1))
        first, second = record(attrs, "aa/bb/" + "a" * 32 + ".dcm"), record(
            attrs, "cc/dd/" + "c" * 32 + ".dcm")
        await writer.submit(first)
        await writer.submit(second)  # the crash comes before the first file is unlinked
    finally:
        await writer.aclose()
    assert unreferenced_keys(engine) == [first.stored.key]
    deleted: list[str] = []

    def failing(key: str) -> None:
        raise OSError("read-only file system")

    assert settle_unreferenced(engine, failing) == 0
    assert unreferenced_keys(engine) == [first.stored.key]  # kept for the next start
    assert settle_unreferenced(engine, deleted.append) == 1
    assert deleted == [first.stored.key] and unreferenced_keys(engine) == []
    assert settle_unreferenced(engine, deleted.append) == 0


async def test_a_key_referenced_again_is_forgotten_not_deleted(engine: Engine) -> None:
    """An index rebuilt with the other duplicates policy points to the old file again."""
    writer = IndexWriter(engine, duplicate_policy=DuplicatePolicy.REPLACE)
    await writer.start()
    attrs = attributes(make_dataset(1))
    old, new = (record(attrs, f"{c}{c}/{c}{c}/" + c * 32 + ".dcm") for c in "ab")
    try:
        await writer.submit(old)
        await writer.submit(new)
        await writer.submit(old)  # back to the first file (as a rebuild would do)
    finally:
        await writer.aclose()
    assert unreferenced_keys(engine) == sorted([old.stored.key, new.stored.key])
    deleted: list[str] = []
    assert settle_unreferenced(engine, deleted.append) == 1
    assert deleted == [new.stored.key] and unreferenced_keys(engine) == []
