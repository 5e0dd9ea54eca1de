"""The index's single writer: group commit on one thread with its own connection.

DESIGN principle 11. Callers ``await writer.submit(record)``; the thread takes every queued
record (up to ``max_batch``) as soon as it is free — no linger timer, so a lone association
is never delayed — and writes them in one transaction, committed once their files synced,
so a bad record fails alone: a batch of one needs no SAVEPOINT (its transaction is the
record's), a larger batch takes one per record that goes the full way (the one-statement
path of a known series needs none). A waiter cancelled before its record is taken is
skipped; one cancelled after is written anyway (its result is dropped): callers that must
know, shield the call. Lock and serialization failures retry the batch
(``engine.write_transaction``); a record that met another process's concurrent insert of
one of its keys (PostgreSQL) is written again (`_raced`).

What each record writes, and the rules it follows: `records.RecordWriter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from ..ports import (
    AddResult,
    DuplicatePolicy,
    IndexWriteError,
    InstanceRecord,
    OutOfResources,
    PatientConflict,
    PatientConflictPolicy,
)
from .engine import DEFAULT_RETRY, RetryPolicy, dialect_of, write_transaction
from .records import RecordWriter

__all__ = ["IndexWriter"]

log = logging.getLogger("minipacs.index")

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
        self._rows = RecordWriter(
            engine, duplicate_policy=duplicate_policy or DuplicatePolicy.default(),
            patient_conflict=patient_conflict or PatientConflictPolicy.default())
        self._max_batch = max_batch
        self._retry = retry
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closing = False
        self._conn: Connection | None = None  # the thread's own, kept between batches
        # Counters for monitoring and benchmarks.
        self.batches = 0
        self.records = 0

    @property
    def duplicate_policy(self) -> DuplicatePolicy:
        return self._rows.duplicate_policy

    @property
    def patient_conflict(self) -> PatientConflictPolicy:
        return self._rows.patient_conflict

    @property
    def fast_records(self) -> int:
        """Records written by the one-statement path."""
        return self._rows.fast_records

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
            results = [self._rows.add_fast(conn, record) or self._add_guarded(conn, record)
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
                    self._engine, lambda conn: durable([self._rows.add_fast(conn, record)
                                                        or self._rows.add(conn, record)])[0],
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
                result = self._rows.add(conn, record)
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
