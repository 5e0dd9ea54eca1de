"""Operations on the index outside the server: listing, deleting, clearing, backing up.

Blocking functions over a synchronous engine (``make_engine``), for the ``minipacs db`` and
``minipacs delete`` commands. They may run while a server writes the same database: reads
are short keyset-paginated transactions (a long one would pin SQLite's WAL), and writes go
through the one write transaction helper (``engine.write_transaction``: the write lock up
front, retried with bounded backoff; DESIGN principle 11).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, delete, exists, func, select
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute

from .engine import DEFAULT_RETRY, RetryPolicy, sync_url, write_transaction
from .migrate import alembic_config
from .models import (
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
    UnreferencedFile,
)

__all__ = [
    "Deleted",
    "IndexDatabaseError",
    "InstanceFile",
    "NotSqliteError",
    "RowCounts",
    "backup_sqlite",
    "clear_index",
    "count_rows",
    "current_revision",
    "delete_instances",
    "delete_rows",
    "head_revision",
    "instance_files_by_key",
    "issuers_of_patient",
    "iter_instance_files",
    "referenced_keys",
    "settle_unreferenced",
    "sqlite_path",
    "unreferenced_keys",
]

log = logging.getLogger("minipacs.index")

PAGE_SIZE: Final = 1000
# SQLite accepts at least 999 bound parameters per statement (its oldest default limit).
_MAX_PARAMS: Final = 500
# Children first, so that foreign keys hold at every statement.
_ALL_TABLES: Final = (
    Instance, SeriesValue, Series, StudyValue, Study, PatientOtherId, PatientValue, Patient,
)
_T = TypeVar("_T")

# What the database raises, for callers that must not know SQLAlchemy.
IndexDatabaseError = SQLAlchemyError


class NotSqliteError(ValueError):
    """The operation needs an SQLite database file (e.g. the online backup API)."""


@dataclass(frozen=True, slots=True)
class InstanceFile:
    """What the index records of one instance's file."""

    pk: int
    key: str
    size: int
    checksum: str  # "<algorithm>:<hex digest>"
    sop_instance_uid: str


@dataclass(frozen=True, slots=True)
class RowCounts:
    """Rows per level."""

    patients: int
    studies: int
    series: int
    instances: int


@dataclass(frozen=True, slots=True)
class Deleted:
    """What one delete removed: rows per level and the files they pointed to."""

    keys: tuple[str, ...]
    patients: int
    studies: int
    series: int

    @property
    def instances(self) -> int:
        return len(self.keys)


# --- reading --------------------------------------------------------------------------


_FILE_COLUMNS: Final = (Instance.pk, Instance.storage_key, Instance.file_size,
                        Instance.checksum, Instance.sop_instance_uid)


def _instance_file(row: object) -> InstanceFile:
    pk, key, size, checksum, uid = row  # type: ignore[misc]
    return InstanceFile(int(pk), key, int(size), checksum, uid)


def iter_instance_files(engine: Engine, page_size: int = PAGE_SIZE) -> Iterator[InstanceFile]:
    """Every instance's file, by primary key, one short transaction per page."""
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(*_FILE_COLUMNS).where(Instance.pk > last)
                .order_by(Instance.pk).limit(page_size)
            ).all()
        for row in rows:
            yield _instance_file(row)
        if len(rows) < page_size:
            return
        last = rows[-1][0]


def instance_files_by_key(engine: Engine, keys: Iterable[str]) -> dict[str, InstanceFile]:
    """The instances whose file is one of `keys`, now (to re-check a suspected problem)."""
    found: dict[str, InstanceFile] = {}
    wanted = sorted(set(keys))
    with engine.connect() as conn:
        for start in range(0, len(wanted), _MAX_PARAMS):
            chunk = wanted[start:start + _MAX_PARAMS]
            for row in conn.execute(
                select(*_FILE_COLUMNS).where(Instance.storage_key.in_(chunk))
            ):
                found[row.storage_key] = _instance_file(row)
    return found


def referenced_keys(engine: Engine, keys: Iterable[str]) -> set[str]:
    """Which of `keys` an instance row points to, now."""
    return set(instance_files_by_key(engine, keys))


def unreferenced_keys(engine: Engine) -> list[str]:
    """The files recorded as no longer referenced and not deleted yet (`UnreferencedFile`)."""
    with engine.connect() as conn:
        return list(conn.execute(
            select(UnreferencedFile.storage_key).order_by(UnreferencedFile.storage_key)
        ).scalars())


def settle_unreferenced(engine: Engine, delete_file: Callable[[str], None]) -> int:
    """Delete the files recorded as unreferenced, then their records; returns how many.

    A key a row points to again (an index rebuilt since) is only forgotten, never deleted.
    A file that cannot be deleted (`delete_file` raised) keeps its record for next time.
    """
    keys = unreferenced_keys(engine)
    if not keys:
        return 0
    kept = referenced_keys(engine, keys)
    settled = []
    for key in keys:
        if key not in kept:
            try:
                delete_file(key)
            except Exception as exc:  # the storage's error: the record stays, for next time
                log.warning("cannot delete unreferenced file %s: %s", key, exc)
                continue
        settled.append(key)

    def forget(conn: Connection) -> None:
        for start in range(0, len(settled), _MAX_PARAMS):
            conn.execute(delete(UnreferencedFile).where(
                UnreferencedFile.storage_key.in_(settled[start:start + _MAX_PARAMS])))

    write_transaction(engine, forget, what="unreferenced files")
    return len(settled) - len(kept & set(settled))


def count_rows(engine: Engine) -> RowCounts:
    """Rows per level, in one transaction."""
    with engine.connect() as conn:
        return _count(conn)


def _count(conn: Connection) -> RowCounts:
    def n(model: type[Base]) -> int:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())

    return RowCounts(n(Patient), n(Study), n(Series), n(Instance))


def issuers_of_patient(engine: Engine, patient_id: str) -> list[str]:
    """The Issuers of Patient ID under which `patient_id` is known ("" = none recorded)."""
    with engine.connect() as conn:
        return list(conn.execute(
            select(Patient.issuer_of_patient_id).where(Patient.patient_id == patient_id)
            .order_by(Patient.issuer_of_patient_id)
        ).scalars())


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None: not migrated yet)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    """The newest Alembic revision in migrations/ (what ``upgrade`` brings a database to)."""
    return ScriptDirectory.from_config(alembic_config(engine.url)).get_current_head()


# --- writing --------------------------------------------------------------------------


def delete_rows(
    engine: Engine, level: Level, uid: str, issuer: str = "", *,
    before_commit: Callable[[tuple[str, ...]], None] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> Deleted | None:
    """Delete a patient, study or series and everything under it, in one transaction.

    `uid` is the Study or Series Instance UID, or the Patient ID (with `issuer`) at patient
    level. Parents left without children are deleted too. Returns None when nothing has
    that identifier. The files are the caller's to delete, after this commit;
    `before_commit` gets their keys while the write lock is held (to journal them).
    """

    def work(conn: Connection) -> Deleted | None:
        deleted = _delete(conn, level, uid, issuer)
        if deleted is not None and before_commit is not None:
            before_commit(deleted.keys)
        return deleted

    return write_transaction(engine, work, retry=retry, what="delete")


def _delete(conn: Connection, level: Level, uid: str, issuer: str) -> Deleted | None:
    study_pk: int | None = None
    if level is Level.PATIENT:
        patient_pk = conn.execute(select(Patient.pk).where(
            Patient.patient_id == uid, Patient.issuer_of_patient_id == issuer)).scalar()
        if patient_pk is None:
            return None
        studies = select(Study.pk).where(Study.patient_pk == patient_pk)
        series = select(Series.pk).where(Series.study_pk.in_(studies))
    elif level is Level.STUDY:
        row = conn.execute(select(Study.pk, Study.patient_pk)
                           .where(Study.study_instance_uid == uid)).first()
        if row is None:
            return None
        study_pk, patient_pk = row
        studies = select(Study.pk).where(Study.pk == study_pk)
        series = select(Series.pk).where(Series.study_pk == study_pk)
    elif level is Level.SERIES:
        row = conn.execute(select(Series.pk, Series.study_pk, Study.patient_pk)
                           .join(Study, Study.pk == Series.study_pk)
                           .where(Series.series_instance_uid == uid)).first()
        if row is None:
            return None
        series_pk, study_pk, patient_pk = row
        studies = select(Study.pk).where(Study.pk.is_(None))  # none, unless left empty below
        series = select(Series.pk).where(Series.pk == series_pk)
    else:
        raise ValueError(f"cannot delete at {level} level")
    keys = tuple(conn.execute(
        select(Instance.storage_key).where(Instance.series_pk.in_(series))
        .order_by(Instance.pk)).scalars())
    conn.execute(delete(Instance).where(Instance.series_pk.in_(series)))
    # Value rows go with their owner (ON DELETE CASCADE), as the writer relies on too. The
    # series go before the studies their subquery reads.
    n_series = conn.execute(delete(Series).where(Series.pk.in_(series))).rowcount
    n_studies = conn.execute(delete(Study).where(Study.pk.in_(studies))).rowcount
    if level is Level.SERIES and not _has_child(conn, Series.study_pk, study_pk):
        n_studies += conn.execute(delete(Study).where(Study.pk == study_pk)).rowcount
    n_patients = 0
    if not _has_child(conn, Study.patient_pk, patient_pk):
        n_patients = conn.execute(delete(Patient).where(Patient.pk == patient_pk)).rowcount
    return Deleted(keys, n_patients, n_studies, n_series)


def delete_instances(engine: Engine, keys: Iterable[str]) -> set[str]:
    """Delete the instance rows of these files, and parents left empty; the keys deleted.

    For rows whose file is gone for good (``db check --repair``): a retrieve would fail.
    """
    wanted = sorted(set(keys))

    def work(conn: Connection) -> set[str]:
        done: set[str] = set()
        for key in wanted:
            row = conn.execute(select(Instance.pk, Instance.series_pk, Series.study_pk,
                                      Study.patient_pk)
                               .join(Series, Series.pk == Instance.series_pk)
                               .join(Study, Study.pk == Series.study_pk)
                               .where(Instance.storage_key == key)).first()
            if row is None:
                continue
            pk, series_pk, study_pk, patient_pk = row
            conn.execute(delete(Instance).where(Instance.pk == pk))
            for model, fk, parent in ((Series, Instance.series_pk, series_pk),
                                      (Study, Series.study_pk, study_pk),
                                      (Patient, Study.patient_pk, patient_pk)):
                if _has_child(conn, fk, parent):
                    break
                conn.execute(delete(model).where(model.pk == parent))
            done.add(key)
        return done

    return write_transaction(engine, work, what="delete instances") if wanted else set()


def _has_child(conn: Connection, foreign_key: InstrumentedAttribute[int],
               pk: int | None) -> bool:
    return bool(conn.execute(select(exists().where(foreign_key == pk))).scalar())


def clear_index(engine: Engine) -> RowCounts:
    """Delete every row of every level in one transaction; returns what was there."""

    def clear(conn: Connection) -> RowCounts:
        before = _count(conn)
        for model in _ALL_TABLES:
            conn.execute(delete(model))
        return before

    return write_transaction(engine, clear, what="clear")


# --- backup ---------------------------------------------------------------------------


def sqlite_path(url: str | URL) -> Path | None:
    """The database file of an SQLite URL; None for other databases and memory."""
    parsed = sync_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def backup_sqlite(engine: Engine, dest: Path) -> RowCounts:
    """Copy the live database to `dest` with SQLite's online backup API, atomically.

    Copying a WAL database's file while it is in use can miss committed pages still in the
    -wal file, or catch a checkpoint half-way; the backup API copies one consistent
    snapshot (in a single step, so concurrent writers neither restart nor wait on it). The
    copy is written to ``<dest>.tmp``, checked, made a self-contained rollback-journal file,
    fsynced and renamed over `dest`. Returns the row counts of the copy.
    """
    source_path = sqlite_path(engine.url)
    if source_path is None:
        raise NotSqliteError(
            f"online backup needs an SQLite database file, not {engine.url.render_as_string()}")
    dest = Path(dest)
    if dest.resolve() == source_path.resolve():
        raise ValueError(f"{dest} is the database itself")
    tmp = dest.with_name(dest.name + ".tmp")
    for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
        leftover.unlink(missing_ok=True)
    raw = engine.raw_connection()
    try:
        source = raw.driver_connection
        assert isinstance(source, sqlite3.Connection)
        target = sqlite3.connect(tmp, isolation_level=None)
        try:
            source.backup(target)  # pages=-1: the whole database in one step
            # The copy inherits the WAL flag; a backup should be a single file.
            target.execute("PRAGMA journal_mode = DELETE")
            check = target.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise sqlite3.DatabaseError(f"backup failed its check: {check[:3]}")
            counts = RowCounts(*(
                int(target.execute(f"SELECT count(*) FROM {model.__tablename__}").fetchone()[0])
                for model in (Patient, Study, Series, Instance)
            ))
        finally:
            target.close()
        _fsync(tmp)
        os.replace(tmp, dest)
        _fsync(dest.parent, directory=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        raw.close()
    return counts


def _fsync(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
