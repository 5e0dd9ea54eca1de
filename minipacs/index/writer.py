"""The index's single writer: group commit from one task, one thread hop per batch.

DESIGN principle 11. Callers ``await writer.submit(record)``; the task takes every queued
record (up to ``max_batch``) as soon as it is free — no linger timer, so a lone association
is never delayed — and writes them in one transaction on its own thread, so a bad record
fails alone: a batch of one needs no SAVEPOINT (its transaction is the record's), a larger
batch takes one per record that goes the full way. The usual record, another instance of a
series already indexed whose patient, study and series attributes it repeats, is one
INSERT ... SELECT that checks all that in SQL (`statements.INSERT_INTO_KNOWN_SERIES`):
nothing is cached, so other processes' deletes and writes are always seen. A waiter
cancelled before its record is taken is skipped; one cancelled after is written anyway (its
result is dropped): callers that must know, shield the call. Lock and serialization
failures retry the batch (``engine.write_transaction``); a record that met another
process's concurrent insert of one of its keys (PostgreSQL) is written again (`_raced`).

Rules (README and conformance statement):
- duplicate SOP Instance UID (config ``storage.duplicates``, default ``keep-first``):
  ``keep-first``, or ``replace`` (the row is repointed to the new file and the old key is
  returned, to be deleted only after this commit, and recorded in ``unreferenced_file`` by
  it, so a crash before the unlink is recovered at start);
- patient/study/series attributes: merged, the latest instance wins for each attribute it
  carries, attributes it lacks keep their value; changed key values are logged;
- patient identity is (Patient ID, Issuer of Patient ID), a missing issuer being ""; an
  empty Patient ID never merges patients: the instance joins its study's patient, or a new
  patient is made for the new study;
- a study arriving under another patient than before (config ``storage.patient_conflict``,
  default ``refuse``): the instance is refused, or (``keep-apart``) joins the study, which
  stays with its patient; a study is never moved to another patient. A series (instance)
  arriving under another study (series) moves there, logged as a warning; a parent left
  empty is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine, delete, exists, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from ..ports import (
    AddOutcome,
    AddResult,
    DuplicatePolicy,
    IndexWriteError,
    InstanceAttributes,
    InstanceRecord,
    OutOfResources,
    PatientConflict,
    PatientConflictPolicy,
)
from .engine import DEFAULT_RETRY, Prepared, RetryPolicy, dialect_of, write_transaction
from .models import Level, UnreferencedFile, key_values, multi_values
from .statements import (
    CLEAR_OTHER_IDS,
    INSERT_INSTANCE,
    INSERT_INTO_KNOWN_SERIES,
    INSERT_OTHER_IDS,
    INSTANCE_BY_UID,
    PATIENT,
    PATIENT_BY_ID,
    PATIENT_OF_STUDY,
    SERIES,
    STUDY,
    UPDATE_INSTANCE,
    LevelSpec,
)

__all__ = ["IndexWriter"]

log = logging.getLogger("minipacs.index")

TAG_OTHER_PATIENT_IDS: Final = "00101000"  # retired LO, VM 1-n
TAG_OTHER_PATIENT_IDS_SEQUENCE: Final = "00101002"
TAG_PATIENT_ID: Final = "00100020"
TAG_ISSUER_OF_PATIENT_ID: Final = "00100021"

def _dumps(json_ds: Mapping[str, Any]) -> str:
    return json.dumps(json_ds, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class _JsonCache:
    """The serialised level JSON of the series (studies, patients) seen last.

    Every instance of a series repeats its patient, study and series attributes; comparing
    the parsed dictionaries with the last ones is cheaper than serialising them again.
    """

    SIZE: Final = 64

    def __init__(self) -> None:
        self._last: dict[object, tuple[Mapping[str, Any], str]] = {}

    def dumps(self, key: object, json_ds: Mapping[str, Any]) -> str:
        hit = self._last.get(key)
        if hit is not None and hit[0] == json_ds:
            return hit[1]
        text = _dumps(json_ds)
        if len(self._last) >= self.SIZE:
            del self._last[next(iter(self._last))]  # the oldest
        self._last[key] = (json_ds, text)
        return text


@dataclass(slots=True)
class _Item:
    record: InstanceRecord
    future: asyncio.Future[AddResult]
    loop: asyncio.AbstractEventLoop
    durable: Future[None] | None  # the file's sync: the commit waits for it


class _FilesNotDurable(Exception):
    """Some records' files failed to sync: their rows must not commit."""

    def __init__(self, failed: dict[int, BaseException]) -> None:
        super().__init__(f"{len(failed)} file(s) not durable")
        self.failed = failed


_STOP: Final = object()
# Writes of one record again after another process's concurrent insert of one of its keys
# (each needs another commit of the same keys: a few processes at most).
RACE_RETRIES: Final = 3


class IndexWriter:
    """One thread that owns every index write (DESIGN principle 11).

    Callers on the event loop queue a record and await a future; the thread takes every
    queued record (group commit), writes them on its own long-lived connection, and wakes
    the waiters of a batch with one callback. No asyncio task sits between the two: a record
    costs the loop one wake-up, not a task switch and an executor round trip per batch.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        duplicate_policy: DuplicatePolicy | None = None,
        patient_conflict: PatientConflictPolicy | None = None,
        max_batch: int = 256,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self._engine = engine
        self._dialect = dialect_of(engine)
        self.duplicate_policy = duplicate_policy or DuplicatePolicy.default()
        self.patient_conflict = patient_conflict or PatientConflictPolicy.default()
        self._max_batch = max_batch
        self._retry = retry
        # A key may be recorded already (an index rebuilt from files since): once is enough.
        self._unreferenced = self._dialect.insert_ignoring_duplicates(UnreferencedFile.__table__)
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closing = False
        self._conn: Connection | None = None  # the thread's own, kept between batches
        self._json = _JsonCache()
        self._insert_known = Prepared(INSERT_INTO_KNOWN_SERIES, engine)
        # Counters for monitoring and benchmarks.
        self.batches = 0
        self.records = 0
        self.fast_records = 0  # records written by the one-statement path

    @property
    def queue_depth(self) -> int:
        """Records submitted and not yet taken into a batch."""
        return self._queue.qsize()

    async def start(self) -> None:
        if self._thread is not None:
            return
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(loop, self._stopped),
                                        name="index-writer", daemon=True)
        self._thread.start()

    async def aclose(self) -> None:
        """Write what is queued, then stop."""
        if self._thread is None or self._closing:
            return
        self._closing = True
        self._queue.put(_STOP)
        assert self._stopped is not None
        await asyncio.shield(self._stopped)

    async def submit(self, record: InstanceRecord, *,
                     durable: Future[None] | None = None) -> AddResult:
        """Queue `record`; returns once it is committed. Raises IndexWriteError/OutOfResources.

        `durable` (the file's sync, under way): the transaction holding the row commits only
        after it succeeded; if it failed, the row is not written and its error is raised.
        Either way this returns only once `durable` is done.
        """
        if self._thread is None or self._closing:
            if durable is not None:
                await asyncio.wrap_future(durable)  # nothing may outlive the call
            raise IndexWriteError("the index writer is not running")
        loop = asyncio.get_running_loop()
        item = _Item(record, loop.create_future(), loop, durable)
        self._queue.put(item)
        return await item.future

    # --- the thread ---------------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop, stopped: asyncio.Future[None]) -> None:
        stopping = False
        try:
            while not stopping:
                first = self._queue.get()
                stopping = first is _STOP
                batch: list[_Item] = [] if stopping else [first]  # type: ignore[list-item]
                while len(batch) < self._max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                        break
                    batch.append(item)  # type: ignore[arg-type]
                # A waiter cancelled before this point is skipped: nothing is written.
                # (Reading `done()` from here races only with a cancellation, which then
                # finds its record written anyway: the documented case below.)
                batch = [item for item in batch if not item.future.done()]
                if not batch:
                    continue
                try:
                    results = self._write_durable(batch)
                except Exception as exc:
                    results = [self._batch_error(exc)] * len(batch)
                finally:
                    _settle(batch)  # no waiter is woken while its file is still syncing
                _wake(batch, results)
        finally:
            self._close_connection()
            # Whatever is left (a submit racing the stop): nobody may wait forever.
            leftover = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Item):
                    leftover.append(item)
            if leftover:
                _settle(leftover)
                _wake(leftover, [IndexWriteError("the index writer stopped")] * len(leftover))
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_set_done, stopped)

    def _batch_error(self, exc: Exception) -> Exception:
        if self._dialect.is_full(exc):
            return OutOfResources(f"index database: {exc}")
        log.error("index batch failed: %s", exc)
        error = IndexWriteError(f"index write failed: {exc}")
        error.__cause__ = exc
        return error

    # --- the thread ---------------------------------------------------------------------

    def _write_durable(self, batch: list[_Item]) -> list[AddResult | Exception]:
        """`_write`, committing only rows whose files synced; a failed sync's record gets
        that error and the batch is written again without it (DESIGN principle 10)."""
        results: list[AddResult | Exception | None] = [None] * len(batch)
        todo = list(range(len(batch)))
        while todo:
            durables = [batch[i].durable for i in todo]
            try:
                written = self._write([batch[i].record for i in todo], durables)
            except _FilesNotDurable as exc:
                for position, error in exc.failed.items():
                    index = todo[position]
                    results[index] = error if isinstance(error, Exception) else \
                        IndexWriteError(f"file not durable: {error!r}")
                todo = [i for position, i in enumerate(todo) if position not in exc.failed]
                continue
            for index, result in zip(todo, written, strict=True):
                results[index] = result
            todo = []
        return results  # type: ignore[return-value]

    def _write(self, records: list[InstanceRecord],
               durables: list[Future[None] | None] | None = None
               ) -> list[AddResult | Exception]:
        """One transaction for the batch (retried on lock or serialization failures),
        committed once every file in `durables` synced (else `_FilesNotDurable`, rolled back).

        A batch of one needs no SAVEPOINT: its transaction is the record's, so a failure of
        the record (not of the database) rolls back only it and becomes its result.
        """
        if self._conn is None:
            self._conn = self._engine.connect()
        waits = [d for d in durables or () if d is not None]

        def durable(results: list[AddResult | Exception]) -> list[AddResult | Exception]:
            if waits:
                failed = {i: error for i, d in enumerate(durables or ())
                          if d is not None and (error := _outcome(d)) is not None}
                if failed:
                    raise _FilesNotDurable(failed)  # rolls the transaction back
            return results

        try:
            if len(records) == 1:
                record = records[0]
                try:
                    results: list[AddResult | Exception] = [self._write_one(record, durable)]
                except (OperationalError, _FilesNotDurable):
                    raise  # the database or the file, not the record: the batch fails
                except Exception as exc:
                    results = [self._record_error(record, exc)]
            else:
                results = write_transaction(
                    self._engine, lambda conn: durable(self._write_batch(conn, records)),
                    retry=self._retry, connection=self._conn)
        except DBAPIError as exc:
            if exc.connection_invalidated or self._conn.invalidated:
                self._close_connection()  # a new one next time (a database restart)
            raise
        self.batches += 1
        self.records += len(records)
        return results

    def _close_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _write_batch(self, conn: Connection,
                     records: list[InstanceRecord]) -> list[AddResult | Exception]:
        """Several records in the caller's transaction, in order; one bad record fails alone.

        The one-statement path runs unguarded inside one SAVEPOINT for the batch; the full
        path runs inside a SAVEPOINT per record, so a record that fails there fails alone.
        Should a one-statement insert fail, the batch's SAVEPOINT is rolled back and every
        record is written again under its own.
        """
        batch = conn.begin_nested()
        try:
            results = [self._add_fast(conn, record) or self._add_guarded(conn, record)
                       for record in records]
        except OperationalError:
            batch.rollback()
            raise  # the database, not a record: the batch fails or retries
        except Exception:
            batch.rollback()
            return [self._add_guarded(conn, record) for record in records]
        batch.commit()
        return results

    def _write_one(self, record: InstanceRecord,
                   durable: Callable[[list[AddResult | Exception]], list[AddResult | Exception]]
                   ) -> AddResult | Exception:
        """One record, its own transaction on the writer's connection, committed once
        `durable` let it; written again after a race (`_raced`)."""
        attempt = 0
        while True:
            try:
                return write_transaction(
                    self._engine, lambda conn: durable([self._add_fast(conn, record)
                                                        or self._add(conn, record)])[0],
                    retry=self._retry, connection=self._conn)
            except IntegrityError as exc:
                if not self._raced(record, exc, attempt):
                    raise
            attempt += 1

    def _add_guarded(self, conn: Connection, record: InstanceRecord) -> AddResult | Exception:
        """The full path under its own SAVEPOINT: a failure undoes this record only."""
        attempt = 0
        while True:
            savepoint = conn.begin_nested()
            try:
                result = self._add(conn, record)
            except OperationalError:
                savepoint.rollback()
                raise
            except Exception as exc:
                savepoint.rollback()
                if not self._raced(record, exc, attempt):
                    return self._record_error(record, exc)
                attempt += 1
                continue
            savepoint.commit()
            return result

    def _raced(self, record: InstanceRecord, exc: Exception, attempt: int) -> bool:
        """Whether to write `record` again: another process committed one of its keys
        (patient, study, series, instance) while we were inserting it (PostgreSQL)."""
        if attempt >= RACE_RETRIES or not self._dialect.is_unique_race(exc):
            return False
        log.info("instance %s: another writer indexed the same keys meanwhile; writing it "
                 "again", record.attributes.sop_instance_uid)
        return True

    @staticmethod
    def _record_error(record: InstanceRecord, exc: Exception) -> Exception:
        log.warning("instance %s not indexed: %s", record.attributes.sop_instance_uid, exc)
        if isinstance(exc, PatientConflict):
            return exc
        error = IndexWriteError(f"cannot index instance: {exc}")
        error.__cause__ = exc
        return error

    def _instance_values(self, record: InstanceRecord) -> dict[str, Any]:
        """The instance row's columns but the series and the UID (PS3.4 C.6.1.1.5 keys)."""
        attrs = record.attributes
        stored = record.stored
        return {
            "sop_class_uid": attrs.sop_class_uid,
            "storage_key": stored.key,
            "file_size": stored.size,
            "checksum": stored.checksum,
            "dataset_offset": stored.dataset_offset,
            "transfer_syntax_uid": record.transfer_syntax_uid,
            "received_at": record.received_at,
            "calling_ae_title": record.calling_ae_title,
            "called_ae_title": record.called_ae_title,
            "attributes": _dumps(attrs.instance),
            **key_values(Level.IMAGE, attrs.instance),
        }

    def _add_fast(self, conn: Connection, record: InstanceRecord) -> AddResult | None:
        """A new instance of a known, unchanged series in one statement; None: not that case."""
        attrs = record.attributes
        values = {"sop_instance_uid": attrs.sop_instance_uid, **self._instance_values(record)}
        inserted = self._insert_known.execute(conn, {
            **{f"v_{name}": value for name, value in values.items()},
            "k_instance": attrs.sop_instance_uid,
            "k_series": attrs.series_instance_uid,
            "k_series_json": self._json.dumps(("series", attrs.series_instance_uid),
                                              attrs.series),
            "k_study": attrs.study_instance_uid,
            "k_study_json": self._json.dumps(("study", attrs.study_instance_uid), attrs.study),
            "k_patient_id": attrs.patient_id,
            "k_issuer": attrs.issuer_of_patient_id,
            "k_patient_json": self._json.dumps(
                ("patient", attrs.patient_id, attrs.issuer_of_patient_id), attrs.patient),
        })
        if inserted != 1:
            return None
        self.fast_records += 1
        return AddResult(AddOutcome.ADDED)

    def _add(self, conn: Connection, record: InstanceRecord) -> AddResult:
        attrs = record.attributes
        existing = conn.execute(INSTANCE_BY_UID, {"uid": attrs.sop_instance_uid}).first()
        if existing is not None and self.duplicate_policy is DuplicatePolicy.KEEP_FIRST:
            log.debug("instance %s received again: first copy kept", attrs.sop_instance_uid)
            return AddResult(AddOutcome.KEPT_FIRST)
        patient_pk = self._study_patient(conn, attrs)
        if patient_pk is None:
            patient_pk = self._patient(conn, attrs)
        study_pk = self._upsert(conn, STUDY, attrs.study_instance_uid, patient_pk, attrs.study)
        series_pk = self._upsert(
            conn, SERIES, attrs.series_instance_uid, study_pk, attrs.series
        )
        values = {"series_pk": series_pk, **self._instance_values(record)}
        if existing is None:
            conn.execute(INSERT_INSTANCE, {"sop_instance_uid": attrs.sop_instance_uid, **values})
            return AddResult(AddOutcome.ADDED)
        conn.execute(UPDATE_INSTANCE, {"b_pk": existing.pk, **values})
        # In this transaction: a crash before the caller unlinks the old file leaves a record.
        conn.execute(self._unreferenced, {"storage_key": existing.storage_key,
                                           "since": record.received_at})
        if existing.series_pk != series_pk:
            log.warning("instance %s moved to series %s", attrs.sop_instance_uid,
                        attrs.series_instance_uid)
            self._drop_if_empty(conn, SERIES, existing.series_pk)
        log.debug("instance %s replaced (old file %s)", attrs.sop_instance_uid,
                  existing.storage_key)
        return AddResult(AddOutcome.REPLACED, existing.storage_key)

    def _study_patient(self, conn: Connection, attrs: InstanceAttributes) -> int | None:
        """The patient of the instance's study when it must stay there; None: no such study,
        or the instance names the same patient (it goes through `_patient` then).

        A study indexed under another (Patient ID, Issuer) is refused or kept where it is
        (`patient_conflict`), never moved. An instance without a Patient ID joins its
        study's patient (module docstring), which is no conflict.
        """
        if not attrs.patient_id:
            return None
        row = conn.execute(PATIENT_OF_STUDY, {"uid": attrs.study_instance_uid}).first()
        if row is None or (row.patient_id, row.issuer_of_patient_id) == (
                attrs.patient_id, attrs.issuer_of_patient_id):
            return None
        log.warning("study %s is indexed under patient %r (issuer %r), instance %s names "
                    "patient %r (issuer %r): %s", attrs.study_instance_uid, row.patient_id,
                    row.issuer_of_patient_id, attrs.sop_instance_uid, attrs.patient_id,
                    attrs.issuer_of_patient_id, self.patient_conflict)
        if self.patient_conflict is PatientConflictPolicy.REFUSE:
            raise PatientConflict("Patient ID differs from the study's patient in the archive")
        return int(row.pk)

    def _patient(self, conn: Connection, attrs: InstanceAttributes) -> int:
        """The patient row of `attrs`, created or updated (identity rule: module docstring)."""
        if attrs.patient_id:
            row = conn.execute(
                PATIENT_BY_ID, {"pid": attrs.patient_id, "issuer": attrs.issuer_of_patient_id}
            ).first()
            if row is not None:
                self._merge(conn, PATIENT, row.pk, row.attributes, attrs.patient, attrs.patient_id)
                return int(row.pk)
        else:
            row = conn.execute(PATIENT_OF_STUDY, {"uid": attrs.study_instance_uid}).first()
            if row is not None:
                if not row.patient_id:  # never let an ID-less instance rewrite a known patient
                    self._merge(conn, PATIENT, row.pk, row.attributes, attrs.patient, "")
                return int(row.pk)
        pk = conn.execute(PATIENT.insert, {
            "patient_id": attrs.patient_id,
            "issuer_of_patient_id": attrs.issuer_of_patient_id,
            "attributes": _dumps(attrs.patient),
            **key_values(Level.PATIENT, attrs.patient),
        }).inserted_primary_key[0]
        self._set_values(conn, PATIENT, pk, attrs.patient)
        return int(pk)

    def _upsert(self, conn: Connection, spec: LevelSpec, uid: str, parent_pk: int,
                json_ds: Mapping[str, Any]) -> int:
        """The study or series row `uid`, created, moved under `parent_pk` or merged."""
        assert spec.find is not None
        row = conn.execute(spec.find, {"uid": uid}).first()
        if row is None:
            pk = conn.execute(spec.insert, {
                spec.uid_column: uid, spec.parent_column: parent_pk,
                "attributes": _dumps(json_ds), **key_values(spec.level, json_ds),
            }).inserted_primary_key[0]
            self._set_values(conn, spec, pk, json_ds)
            return int(pk)
        if row.parent_pk != parent_pk:
            log.warning("%s %s moved from %s pk %d to pk %d", spec.level.value.lower(), uid,
                        spec.parent_column.removesuffix("_pk"), row.parent_pk, parent_pk)
            conn.execute(spec.update, {"b_pk": row.pk, spec.parent_column: parent_pk})
            assert spec.parent_level is not None
            self._drop_if_empty(conn, spec.parent_level, row.parent_pk)
        self._merge(conn, spec, row.pk, row.attributes, json_ds, uid)
        return int(row.pk)

    def _merge(self, conn: Connection, spec: LevelSpec, pk: int, stored: str,
               json_ds: Mapping[str, Any], uid: str) -> None:
        """Latest wins per attribute; attributes the instance lacks keep their value."""
        if _dumps(json_ds) == stored:
            return  # the common case: every instance of a series repeats its attributes
        old = json.loads(stored)
        merged = {**old, **json_ds}
        if merged == old:
            return
        before, after = key_values(spec.level, old), key_values(spec.level, merged)
        changed = {k: (before[k], v) for k, v in after.items() if before[k] != v}
        if changed:
            log.info("%s %s: %s", spec.level.value.lower(), uid,
                     ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        conn.execute(spec.update, {"b_pk": pk, "attributes": _dumps(merged), **after})
        self._set_values(conn, spec, pk, merged)

    def _set_values(self, conn: Connection, spec: LevelSpec, pk: int,
                    json_ds: Mapping[str, Any]) -> None:
        """Replace the child rows of multi-valued keys (and Other Patient IDs)."""
        conn.execute(spec.clear_values, {"b_pk": pk})
        rows = [{"owner_pk": pk, "tag": tag, "value": value, "value_folded": folded}
                for tag, value, folded in multi_values(spec.level, json_ds)]
        if rows:
            conn.execute(spec.insert_values, rows)
        if spec is PATIENT:
            conn.execute(CLEAR_OTHER_IDS, {"b_pk": pk})
            others = [{"patient_pk": pk, "other_patient_id": pid, "issuer_of_patient_id": issuer}
                      for pid, issuer in _other_patient_ids(json_ds)]
            if others:
                conn.execute(INSERT_OTHER_IDS, others)

    def _drop_if_empty(self, conn: Connection, spec: LevelSpec, pk: int) -> None:
        """Delete a patient, study or series row left without children, then its parent."""
        if conn.execute(select(exists().where(spec.child_fk == pk))).scalar():
            return
        table = spec.table
        parent_pk = None
        if spec.parent_level is not None:
            parent_pk = conn.execute(
                select(table.c[spec.parent_column]).where(table.c.pk == pk)
            ).scalar_one()
        conn.execute(delete(table).where(table.c.pk == pk))  # child value rows: ON DELETE CASCADE
        log.info("empty %s pk %d removed", spec.level.value.lower(), pk)
        if spec.parent_level is not None and parent_pk is not None:
            self._drop_if_empty(conn, spec.parent_level, parent_pk)


def _wake(batch: Sequence[_Item], results: Sequence[AddResult | Exception]) -> None:
    """Resolve a batch's futures on their loops: one callback per loop, not per record."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Item, AddResult | Exception]]] = {}
    for item, result in zip(batch, results, strict=True):
        by_loop.setdefault(item.loop, []).append((item, result))
    for loop, pairs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there
            loop.call_soon_threadsafe(_resolve, pairs)


def _resolve(pairs: list[tuple[_Item, AddResult | Exception]]) -> None:
    """On the loop: hand each waiter its result (one cancelled meanwhile is skipped)."""
    for item, result in pairs:
        if item.future.done():
            continue  # cancelled while its batch was being written: written anyway
        if isinstance(result, BaseException):
            item.future.set_exception(result)
        else:
            item.future.set_result(result)


def _outcome(durable: Future[None]) -> BaseException | None:
    """Wait for a file's sync; its error, or None when the file is durable."""
    try:
        durable.result()
    except BaseException as exc:  # the record fails with it, whatever it is
        return exc
    return None


def _settle(batch: Sequence[_Item]) -> None:
    """Wait until every file of the batch is done syncing (whatever happened to its row)."""
    for item in batch:
        if item.durable is not None:
            _outcome(item.durable)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _other_patient_ids(json_ds: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(ID, issuer) pairs of Other Patient IDs Sequence (0010,1002) and (0010,1000)."""
    pairs = set()
    for item in json_ds.get(TAG_OTHER_PATIENT_IDS_SEQUENCE, {}).get("Value") or ():
        pid = (item.get(TAG_PATIENT_ID, {}).get("Value") or [""])[0] or ""
        issuer = (item.get(TAG_ISSUER_OF_PATIENT_ID, {}).get("Value") or [""])[0] or ""
        if pid.strip():
            pairs.add((pid.strip(), issuer.strip()))
    for pid in json_ds.get(TAG_OTHER_PATIENT_IDS, {}).get("Value") or ():
        if pid and pid.strip():
            pairs.add((pid.strip(), ""))
    return pairs
