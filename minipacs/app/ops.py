"""Index maintenance: db upgrade/check/rebuild/backup and delete."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import getpass
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Concatenate, Final, ParamSpec, TypeVar

from ..config import Config
from ..index import SqlIndex, maintenance
from ..index.engine import make_engine
from ..index.extract import read_attributes
from ..index.migrate import upgrade
from ..index.models import Level
from ..ports import (
    AddOutcome,
    AuditEvent,
    DataDeleted,
    DataSetError,
    DuplicatePolicy,
    InstanceRecord,
    MaintenanceRun,
    StorageError,
)
from ..storage import file_checksum, inventory
from . import OperationFailed, UsageError, loop_factory
from .daemon import build_storage
from .recovery import finish_interrupted_deletes, recover
from .security import open_audit

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger("minipacs")


# --- operations: minipacs db upgrade|check|rebuild|backup, minipacs delete ------------------
# Blocking, for the CLI. They may run beside a serving process: the index functions retry on
# "database is locked", and every step is ordered so that no row ever points to a missing file.


RowCounts = maintenance.RowCounts
Deleted = maintenance.Deleted


class OpsUsageError(UsageError):
    """An operation refused as asked (exit code 2): ambiguous patient, unsupported database."""


class OpsFailed(OperationFailed):
    """An operation that could not be done (exit code 1)."""


@dataclass(frozen=True, slots=True)
class UpgradeResult:
    before: str | None  # Alembic revisions; None = an empty database
    after: str | None


class ProblemKind(enum.StrEnum):
    MISSING = "missing file"
    SIZE = "size mismatch"
    CHECKSUM = "checksum mismatch"
    ORPHAN = "orphan file"


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    key: str
    detail: str


@dataclass(frozen=True, slots=True)
class CheckReport:
    instances: int  # index rows checked
    files: int  # files found in the store
    problems: tuple[Problem, ...]  # what is left (after repairs, with --repair)
    pending_deletes: int  # files listed by interrupted deletes
    repaired: tuple[Problem, ...] = ()  # with --repair: orphans set aside, dead rows deleted


@dataclass(frozen=True, slots=True)
class RebuildResult:
    backup: Path | None
    removed: maintenance.RowCounts  # rows of the index before
    files: int
    indexed: int
    duplicates: int  # files of an instance indexed from another file (db check: orphans)
    skipped: tuple[tuple[str, str], ...]  # (file, reason): left alone
    counts: maintenance.RowCounts


@dataclass(frozen=True, slots=True)
class DeleteTarget:
    """What `delete` removes; `issuer` None: the Patient ID's only issuer."""

    level: Level
    uid: str
    issuer: str | None = None

    def __str__(self) -> str:
        if self.level is not Level.PATIENT:
            return f"{self.level.value.lower()} {self.uid}"
        issuer = "" if self.issuer is None else f" (issuer {self.issuer or 'none'})"
        return f"patient {self.uid}{issuer}"


@dataclass(frozen=True, slots=True)
class DeleteResult:
    target: DeleteTarget
    deleted: maintenance.Deleted
    files_removed: int
    errors: tuple[str, ...]  # files that could not be removed (db check: orphans)
    recovered: int  # files of interrupted deletes removed first


# --- the audit trail of maintenance (logging.audit) ----------------------------------------

P = ParamSpec("P")
R = TypeVar("R")


def operator() -> str:
    """Who runs the command: the operating-system user (PS3.15 A.5.2 UserID)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): the numeric id
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def record(config: Config, event: AuditEvent) -> None:
    """One event in the audit trail of `config`, written before returning (if configured)."""
    audit = open_audit(config)
    try:
        audit.record(event)
    finally:
        audit.close()


def audited(command: str) -> Callable[[Callable[Concatenate[Config, P], R]],
                                      Callable[Concatenate[Config, P], R]]:
    """Record a maintenance command and how it ended in the audit trail."""

    def wrap(operation: Callable[Concatenate[Config, P], R]
             ) -> Callable[Concatenate[Config, P], R]:
        @functools.wraps(operation)
        def run(config: Config, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                result = operation(config, *args, **kwargs)
            except Exception as exc:
                record(config, MaintenanceRun(operator(), command, False, str(exc)))
                raise
            record(config, MaintenanceRun(operator(), command, True))
            return result

        return run

    return wrap


def unmigrated_reason(config: Config, engine: Engine) -> str | None:
    """Why the index is not one `db upgrade` has made (missing, older revision), or None."""
    path = maintenance.sqlite_path(config.database.url)
    if path is not None and not path.exists():
        return f"no index database at {path} (minipacs db upgrade creates it)"
    if (rev := maintenance.current_revision(engine)) != (
            head := maintenance.head_revision(engine)):
        return f"index database at revision {rev or 'none'}, not {head}: run minipacs db upgrade"
    return None


@contextlib.contextmanager
def _index_engine(config: Config, *, migrated: bool = True) -> Iterator[Engine]:
    """The index's engine; `migrated`: refuse a database that `db upgrade` has not made."""
    try:
        engine = make_engine(config.database.url)
    except Exception as exc:  # e.g. the URL's driver is not installed
        raise OpsFailed(f"cannot open {config.database.url}: {exc}") from exc
    try:
        with _failures():
            if migrated and (reason := unmigrated_reason(config, engine)) is not None:
                raise OpsFailed(reason)
        yield engine
    finally:
        engine.dispose()


@contextlib.contextmanager
def _failures() -> Iterator[None]:
    """Database and file errors as one line (OpsFailed)."""
    try:
        yield
    except (maintenance.IndexDatabaseError, StorageError, OSError, sqlite3.Error) as exc:
        raise OpsFailed(str(getattr(exc, "orig", None) or exc)) from exc


@audited("db upgrade")
def db_upgrade(config: Config) -> UpgradeResult:
    """Apply the index's migrations (Alembic), creating the database if need be."""
    with _index_engine(config, migrated=False) as engine, _failures():
        path = maintenance.sqlite_path(config.database.url)
        before = None if path and not path.exists() else maintenance.current_revision(engine)
        try:
            upgrade(config.database.url)
        except Exception as exc:  # Alembic's and the driver's errors alike: one line
            raise OpsFailed(f"cannot upgrade {config.database.url}: {exc}") from exc
        return UpgradeResult(before, maintenance.current_revision(engine))


@audited("db check")
def db_check(config: Config, *, repair: bool = False) -> CheckReport:
    """Compare the index with the store: missing, orphan, resized and altered files.

    `repair`: finish interrupted deletes, move orphan files to ``<root>/.orphans/`` (nothing
    is lost) and delete the rows of missing files; altered files are only reported.
    """
    root = config.storage.root
    with _index_engine(config) as engine, _failures():
        if repair and root.is_dir():
            recover(engine, build_storage(config))
        # Files first, rows second: a file stored meanwhile then has its row (or is re-checked).
        files = {e.key: e for e in inventory.iter_files(root)} if root.is_dir() else {}
        referenced: set[str] = set()
        problems = []
        for row in maintenance.iter_instance_files(engine):
            referenced.add(row.key)
            if (problem := _check_file(root, row)) is not None:
                problems.append(problem)
        # A server may have replaced or deleted since: keep what still holds now.
        now = maintenance.instance_files_by_key(engine, [p.key for p in problems])
        rechecked = (_check_file(root, now[p.key]) for p in problems if p.key in now)
        problems = [p for p in rechecked if p is not None]
        journaled = sum(len(j.keys) for j in inventory.read_journals(root))
        # Replaced files recorded for deletion at the next start are known, not orphans.
        known = set(maintenance.unreferenced_keys(engine))
        orphans = [key for key in files if key not in referenced and key not in known]
        now = maintenance.instance_files_by_key(engine, orphans)
        problems += [Problem(ProblemKind.ORPHAN, key, f"{files[key].size} bytes, no index row")
                     for key in orphans if key not in now and (root / key).exists()]
        repaired: list[Problem] = []
        if repair:
            repaired = _repair(engine, root, problems)
            problems = [p for p in problems if p not in repaired]
        return CheckReport(len(referenced), len(files), tuple(problems), journaled,
                           tuple(repaired))


def _repair(engine: Engine, root: Path, problems: list[Problem]) -> list[Problem]:
    """Orphans to ``.orphans/``, rows of missing files deleted; returns what was repaired."""
    orphans = [p for p in problems if p.kind is ProblemKind.ORPHAN]
    for problem in orphans:
        inventory.set_aside(root, problem.key)
    missing = [p for p in problems if p.kind is ProblemKind.MISSING]
    gone = maintenance.delete_instances(engine, [p.key for p in missing
                                                 if not (root / p.key).exists()])
    return orphans + [p for p in missing if p.key in gone]


def _check_file(root: Path, row: maintenance.InstanceFile) -> Problem | None:
    path = root / row.key
    try:
        size = path.stat().st_size
        if size != row.size:
            return Problem(ProblemKind.SIZE, row.key, f"{size} bytes, index says {row.size}")
        if file_checksum(path) != row.checksum:
            return Problem(ProblemKind.CHECKSUM, row.key, f"instance {row.sop_instance_uid}")
    except FileNotFoundError:
        return Problem(ProblemKind.MISSING, row.key, f"instance {row.sop_instance_uid}")
    return None


@audited("db rebuild")
def db_rebuild(config: Config, *, backup: bool = True) -> RebuildResult:
    """Re-index the store into an emptied index, the old one backed up first."""
    root = config.storage.root
    if not root.is_dir():
        raise OpsFailed(f"no store folder at {root}")
    db_upgrade(config)
    with _index_engine(config) as engine, _failures():
        before = maintenance.count_rows(engine)
        backup_path = None
        if before.patients and backup:  # an empty index has nothing to lose
            path = maintenance.sqlite_path(config.database.url)
            if path is None:
                raise OpsUsageError("only an SQLite index can be backed up here: back it up "
                                    "yourself, then run with --no-backup")
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            backup_path = path.with_name(f"{path.name}.bak-{stamp}")
            maintenance.backup_sqlite(engine, backup_path)
        removed = maintenance.clear_index(engine)
        # Walked after clearing: a file a server stores meanwhile is indexed by one or both.
        # Received order (mtime), so the duplicate policy picks the file it picked at ingest.
        entries = sorted(inventory.iter_files(root), key=lambda e: (e.modified, e.key))
        keys = [e.key for e in entries if inventory.is_storage_key(e.key)]
        skipped = [(e.key, "not a storage key") for e in entries
                   if not inventory.is_storage_key(e.key)]
        policy = config.storage.duplicates
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            indexed, duplicates, failed = runner.run(_reindex(engine, root, keys, policy))
        return RebuildResult(backup_path, removed, len(entries), indexed, duplicates,
                             tuple(skipped + failed), maintenance.count_rows(engine))


REBUILD_BATCH: Final = 256


async def _reindex(engine: Engine, root: Path, keys: list[str], policy: DuplicatePolicy
                   ) -> tuple[int, int, list[tuple[str, str]]]:
    """Parse each file (in a thread) and add it through the index writer (group commit)."""
    indexed = duplicates = 0
    failed: list[tuple[str, str]] = []
    async with SqlIndex(engine, duplicate_policy=policy) as index:
        for start in range(0, len(keys), REBUILD_BATCH):
            chunk = keys[start:start + REBUILD_BATCH]
            records = await asyncio.to_thread(_read_records, root, chunk, index, failed)
            results = await asyncio.gather(*(index.add_instance(r) for r in records),
                                           return_exceptions=True)
            for record, result in zip(records, results, strict=True):
                if isinstance(result, BaseException):
                    failed.append((record.stored.key, str(result)))
                elif result.outcome is AddOutcome.ADDED:
                    indexed += 1
                else:  # never delete a file here: the superseded one stays, an orphan
                    duplicates += 1
    return indexed, duplicates, failed


def _read_records(root: Path, keys: list[str], index: SqlIndex,
                  failed: list[tuple[str, str]]) -> list[InstanceRecord]:
    records = []
    for key in keys:
        try:
            found = inventory.read_stored(root, key)
            meta = found.meta
            with open(root / key, "rb") as fp:
                fp.seek(found.stored.dataset_offset)
                attributes = read_attributes(fp, meta.transfer_syntax_uid)
        except (StorageError, DataSetError, OSError) as exc:
            failed.append((key, str(exc)))
            continue
        records.append(InstanceRecord(attributes, found.stored, meta.transfer_syntax_uid,
                                      meta.sending_ae_title, meta.receiving_ae_title,
                                      found.received_at))
    return records


@audited("db backup")
def db_backup(config: Config, dest: Path) -> maintenance.RowCounts:
    """A consistent copy of the live SQLite index (online backup API), written atomically."""
    if maintenance.sqlite_path(config.database.url) is None:
        raise OpsUsageError(f"{config.database.url} is not an SQLite database file: use the "
                            "database's own backup tools")
    with _index_engine(config) as engine, _failures():
        try:
            return maintenance.backup_sqlite(engine, dest)
        except ValueError as exc:  # the destination is the database itself
            raise OpsUsageError(str(exc)) from exc


def resolve_delete(config: Config, target: DeleteTarget) -> DeleteTarget:
    """The target with its patient's issuer settled; OpsUsageError when it is ambiguous."""
    if target.level is not Level.PATIENT or target.issuer is not None:
        return target
    with _index_engine(config) as engine, _failures():
        issuers = maintenance.issuers_of_patient(engine, target.uid)
    if len(issuers) > 1:
        listed = ", ".join(repr(i) if i else "(none)" for i in issuers)
        raise OpsUsageError(f"patient {target.uid} exists under {len(issuers)} issuers: "
                            f"{listed}; choose one with --issuer")
    if not issuers:
        raise OpsFailed(f"no {target} in the index")
    return dataclasses.replace(target, issuer=issuers[0])


def delete(config: Config, target: DeleteTarget) -> DeleteResult:
    """Delete rows (one transaction, committed), then their files; audited (DICOM Study
    Deleted, PS3.15 A.5.3.8).

    A delete journal lists the files before the commit and goes after the last unlink, so a
    crash in between leaves orphan files (never rows without files) that the next delete
    removes first.
    """
    level = target.level.value.upper()
    try:
        result = _delete(config, target)
    except Exception as exc:
        record(config, DataDeleted(operator(), level, (target.uid,), 0, False, str(exc)))
        raise
    record(config, DataDeleted(operator(), level, (target.uid,), result.deleted.instances,
                               not result.errors, "; ".join(result.errors)))
    return result


def _delete(config: Config, target: DeleteTarget) -> DeleteResult:
    target = resolve_delete(config, target)
    storage = build_storage(config)
    journals: list[inventory.DeleteJournal] = []
    with _index_engine(config) as engine, _failures():
        recovered = finish_interrupted_deletes(engine, storage)
        try:
            deleted = maintenance.delete_rows(
                engine, target.level, target.uid, target.issuer or "",
                before_commit=lambda keys: journals.append(
                    inventory.write_journal(storage.root, keys)))
        except BaseException:  # rolled back: the rows, and so the files, stay
            for journal in journals:
                inventory.remove_journal(journal)
            raise
    if deleted is None:
        raise OpsFailed(f"no {target} in the index")
    errors = []
    for key in deleted.keys:
        try:
            storage.delete(key)
        except StorageError as exc:
            errors.append(str(exc))
    # A retried transaction journaled more than once: every journal lists committed keys or
    # still-referenced ones, so all go (or all stay for the next delete, on errors).
    for journal in journals:
        (inventory.release_journal if errors else inventory.remove_journal)(journal)
    return DeleteResult(target, deleted, len(deleted.keys) - len(errors), tuple(errors),
                        recovered)
