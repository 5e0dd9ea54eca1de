"""The group-commit writer on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from minipacs.config import StorageConfig, load_config
from minipacs.index import IndexWriter
from minipacs.index.engine import RetryPolicy, make_engine
from minipacs.index.models import (
    Instance,
    Patient,
    PatientOtherId,
    PatientValue,
    Series,
    Study,
    StudyValue,
    UnreferencedFile,
)
from minipacs.ports import (
    AddOutcome,
    DuplicatePolicy,
    IndexWriteError,
    PatientConflict,
    PatientConflictPolicy,
    StorageError,
)
from tests.databases import sqlite_file, sqlite_only
from tests.index.dicomdata import attributes, make_dataset, other_ids, record

WAIT = 10.0  # bound on any wait that should end promptly


def count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def rows(engine: Engine, *columns: object) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(*columns))]  # type: ignore[call-overload]


@contextlib.contextmanager
def write_lock(db_url: str) -> Iterator[sqlite3.Connection]:
    """Another process's writer holding SQLite's write lock."""
    conn = sqlite3.connect(sqlite_file(db_url), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()


class RetryHook:
    """The writer's injected retry clock: says when a batch has failed on the lock in its
    thread, and holds the retry until the test lets it go (no sleeping on either side)."""

    def __init__(self, *, hold: bool = True) -> None:
        self.retried = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        if not hold:
            self.release.set()

    def sleep(self, _delay: float) -> None:
        self.calls += 1
        self.retried.set()
        assert self.release.wait(WAIT), "the test never released the retry"

    async def wait_retried(self) -> None:
        assert await asyncio.to_thread(self.retried.wait, WAIT), "no retry happened"

    def policy(self, retries: int) -> RetryPolicy:
        return RetryPolicy(retries=retries, delay=0.0, sleep=self.sleep)


async def test_concurrent_submits_are_committed_once_in_few_batches(
    writer: IndexWriter, engine: Engine
) -> None:
    recs = [record(attributes(make_dataset(n, series=n % 5, patient_id=f"P{n % 2}",
                                            study=n % 2)))
            for n in range(50)]
    results = await asyncio.gather(*(writer.submit(r) for r in recs))
    assert [r.outcome for r in results] == [AddOutcome.ADDED] * 50
    assert writer.batches < 50 and writer.records == 50
    assert count(engine, Instance) == 50
    assert count(engine, Series) == 10 and count(engine, Study) == 2
    assert count(engine, Patient) == 2
    uids = {u for (u,) in rows(engine, Instance.sop_instance_uid)}
    assert uids == {r.attributes.sop_instance_uid for r in recs}


async def test_one_bad_row_fails_alone(writer: IndexWriter, engine: Engine) -> None:
    first = record(attributes(make_dataset(1)))
    await writer.submit(first)
    good = [record(attributes(make_dataset(n))) for n in (2, 3)]
    # Same storage key as an indexed instance: violates the unique constraint in SQL.
    bad = replace(record(attributes(make_dataset(4))), stored=first.stored)
    batches = writer.batches
    results = await asyncio.gather(writer.submit(good[0]), writer.submit(bad),
                                   writer.submit(good[1]), return_exceptions=True)
    assert writer.batches == batches + 1  # all three in one transaction
    assert isinstance(results[1], IndexWriteError)
    assert [results[0].outcome, results[2].outcome] == [AddOutcome.ADDED] * 2  # type: ignore[union-attr]
    assert {u for (u,) in rows(engine, Instance.sop_instance_uid)} == {
        first.attributes.sop_instance_uid, *(g.attributes.sop_instance_uid for g in good)}


@sqlite_only
async def test_cancelled_waiters_do_not_crash_the_writer(db_url: str) -> None:
    engine = make_engine(db_url, busy_timeout_ms=10)
    hook = RetryHook()
    writer = IndexWriter(engine, retry=hook.policy(retries=1))
    await writer.start()
    a, b, c, d = (record(attributes(make_dataset(n))) for n in range(4))
    try:
        with write_lock(db_url):
            task_a = asyncio.create_task(writer.submit(a))
            await hook.wait_retried()  # A's batch failed on the lock in the writer thread
            task_b = asyncio.create_task(writer.submit(b))
            task_c = asyncio.create_task(writer.submit(c))
            await asyncio.sleep(0)  # one turn: both submits queue their record
            assert writer.queue_depth == 2
            task_a.cancel()  # after its record was taken: written, result dropped
            task_c.cancel()  # before: skipped
        hook.release.set()  # the lock is gone: A's retry succeeds
        assert (await task_b).outcome is AddOutcome.ADDED
        for task in (task_a, task_c):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert (await writer.submit(d)).outcome is AddOutcome.ADDED
    finally:
        hook.release.set()
        await writer.aclose()
        engine.dispose()
    written = {u for (u,) in rows(engine, Instance.sop_instance_uid)}
    assert written == {r.attributes.sop_instance_uid for r in (a, b, d)}


@sqlite_only
async def test_locked_database_is_retried(db_url: str) -> None:
    engine = make_engine(db_url, busy_timeout_ms=10)
    hook = RetryHook()
    writer = IndexWriter(engine, retry=hook.policy(retries=3))
    await writer.start()
    try:
        with write_lock(db_url):
            task = asyncio.create_task(writer.submit(record(attributes(make_dataset()))))
            await hook.wait_retried()
            assert not task.done()
        hook.release.set()
        assert (await task).outcome is AddOutcome.ADDED
        assert hook.calls == 1
    finally:
        hook.release.set()
        await writer.aclose()
        engine.dispose()


@sqlite_only
async def test_lock_held_too_long_fails_the_batch(db_url: str) -> None:
    engine = make_engine(db_url, busy_timeout_ms=10)
    hook = RetryHook(hold=False)
    writer = IndexWriter(engine, retry=hook.policy(retries=2))
    await writer.start()
    try:
        with write_lock(db_url), pytest.raises(IndexWriteError, match="locked"):
            await writer.submit(record(attributes(make_dataset())))
        assert hook.calls == 2  # bounded: two retries, then the batch fails
        assert (await writer.submit(record(attributes(make_dataset(2))))).outcome is (
            AddOutcome.ADDED)
    finally:
        await writer.aclose()
        engine.dispose()


class FileSync(Future[None]):
    """A file's sync as the store hands it to the writer; says when the writer waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.awaited = threading.Event()

    def result(self, timeout: float | None = None) -> None:
        self.awaited.set()
        return super().result(WAIT if timeout is None else timeout)


async def test_the_row_commits_only_once_its_file_is_durable(
    writer: IndexWriter, engine: Engine
) -> None:
    sync = FileSync()
    rec = record(attributes(make_dataset()))
    task = asyncio.create_task(writer.submit(rec, durable=sync))
    # The row is written in the writer's transaction; the commit waits for the file.
    assert await asyncio.to_thread(sync.awaited.wait, WAIT)
    assert count(engine, Instance) == 0 and not task.done()
    sync.set_result(None)
    assert (await task).outcome is AddOutcome.ADDED
    assert count(engine, Instance) == 1


async def test_a_file_that_fails_to_sync_leaves_no_row_and_fails_alone(
    writer: IndexWriter, engine: Engine
) -> None:
    failing, fine = FileSync(), FileSync()
    failing.set_exception(StorageError("cannot make the file durable: I/O error"))
    fine.set_result(None)
    bad, good = (record(attributes(make_dataset(n))) for n in (1, 2))
    results = await asyncio.gather(writer.submit(bad, durable=failing),
                                   writer.submit(good, durable=fine), return_exceptions=True)
    assert isinstance(results[0], StorageError)
    assert results[1].outcome is AddOutcome.ADDED  # type: ignore[union-attr]
    assert rows(engine, Instance.sop_instance_uid) == [(good.attributes.sop_instance_uid,)]


async def test_submit_after_close_is_refused(writer: IndexWriter) -> None:
    await writer.aclose()
    with pytest.raises(IndexWriteError):
        await writer.submit(record(attributes(make_dataset())))


@pytest.fixture
async def replacing(engine: Engine) -> AsyncIterator[IndexWriter]:
    writer = IndexWriter(engine, duplicate_policy=DuplicatePolicy.REPLACE)
    await writer.start()
    yield writer
    await writer.aclose()


async def test_replace_policy_repoints_and_returns_the_old_key(
    replacing: IndexWriter, engine: Engine
) -> None:
    writer = replacing
    attrs = attributes(make_dataset())
    old = record(attrs, "aa/bb/" + "a" * 32 + ".dcm")
    new = record(attrs, "cc/dd/" + "c" * 32 + ".dcm")
    assert (await writer.submit(old)).outcome is AddOutcome.ADDED
    result = await writer.submit(new)
    assert result.outcome is AddOutcome.REPLACED and result.replaced_key == old.stored.key
    assert rows(engine, Instance.storage_key) == [(new.stored.key,)]
    # Recorded in the same transaction: a crash before the unlink is settled at start.
    assert rows(engine, UnreferencedFile.storage_key) == [(old.stored.key,)]


async def test_keep_first_policy(engine: Engine) -> None:
    writer = IndexWriter(engine)  # keep-first is the default (DuplicatePolicy.default())
    await writer.start()
    try:
        attrs = attributes(make_dataset())
        first = record(attrs, "aa/bb/" + "a" * 32 + ".dcm")
        await writer.submit(first)
        result = await writer.submit(record(attrs, "cc/dd/" + "c" * 32 + ".dcm"))
        assert result.outcome is AddOutcome.KEPT_FIRST and result.replaced_key is None
        assert rows(engine, Instance.storage_key) == [(first.stored.key,)]
    finally:
        await writer.aclose()


async def test_patient_identity_includes_the_issuer(writer: IndexWriter, engine: Engine) -> None:
    await writer.submit(record(attributes(make_dataset(1, study=1, issuer="HOSP_A"))))
    await writer.submit(record(attributes(make_dataset(1, study=2, issuer="HOSP_B"))))
    await writer.submit(record(attributes(make_dataset(1, study=3))))  # no issuer
    await writer.submit(record(attributes(make_dataset(1, study=4))))  # same as the one above
    assert sorted(rows(engine, Patient.patient_id, Patient.issuer_of_patient_id)) == [
        ("PID1", ""), ("PID1", "HOSP_A"), ("PID1", "HOSP_B")]


async def test_empty_patient_id_never_merges(writer: IndexWriter, engine: Engine) -> None:
    await writer.submit(record(attributes(make_dataset(1, study=1, patient_id=""))))
    await writer.submit(record(attributes(make_dataset(2, study=1, patient_id=""))))
    await writer.submit(record(attributes(make_dataset(1, study=2, patient_id=""))))
    assert count(engine, Patient) == 2  # one per study
    assert count(engine, Study) == 2


async def test_a_study_under_a_second_patient_is_refused_never_moved(
    writer: IndexWriter, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    await writer.submit(record(attributes(make_dataset(1, patient_id="FIRST"))))
    with caplog.at_level(logging.WARNING, logger="minipacs.index"), pytest.raises(
            PatientConflict, match="Patient ID differs") as refused:
        await writer.submit(record(attributes(make_dataset(2, patient_id="SECOND"))))
    assert len(refused.value.comment) <= 64
    assert "'FIRST'" in caplog.text and "'SECOND'" in caplog.text
    with engine.connect() as conn:
        owner = conn.execute(select(Patient.patient_id).join(Study)).scalar_one()
    assert owner == "FIRST" and rows(engine, Patient.patient_id) == [("FIRST",)]
    assert count(engine, Instance) == 1
    # The same study under the same patient, and an instance without a Patient ID, are fine.
    await writer.submit(record(attributes(make_dataset(3, patient_id="FIRST"))))
    await writer.submit(record(attributes(make_dataset(4, patient_id=""))))
    assert count(engine, Instance) == 3


async def test_keep_apart_indexes_the_instance_and_leaves_the_study_where_it_is(
    engine: Engine
) -> None:
    writer = IndexWriter(engine, patient_conflict=PatientConflictPolicy.KEEP_APART)
    await writer.start()
    try:
        await writer.submit(record(attributes(make_dataset(1, patient_id="FIRST"))))
        second = make_dataset(2, patient_id="SECOND")
        second.PatientName = "Other^Name"
        result = await writer.submit(record(attributes(second)))
    finally:
        await writer.aclose()
    assert result.outcome is AddOutcome.ADDED
    assert count(engine, Instance) == 2
    # No second patient, no re-parenting, no merge of the other patient's attributes.
    assert rows(engine, Patient.patient_id, Patient.patient_name) == [("FIRST", "Doe^John")]


async def test_the_patient_conflict_default_is_one(engine: Engine, tmp_path: Path) -> None:
    default = PatientConflictPolicy.default()
    assert default is PatientConflictPolicy.REFUSE
    assert IndexWriter(engine).patient_conflict is default
    assert StorageConfig(root=tmp_path).patient_conflict == default
    assert load_config(None).storage.patient_conflict == default


async def test_replaced_instance_in_another_series_leaves_no_empty_series(
    replacing: IndexWriter, engine: Engine
) -> None:
    writer = replacing
    ds = make_dataset(1, series=1)
    await writer.submit(record(attributes(ds), "aa/bb/" + "a" * 32 + ".dcm"))
    ds.SeriesInstanceUID = "1.2.3.4.5"
    await writer.submit(record(attributes(ds), "cc/dd/" + "c" * 32 + ".dcm"))
    assert rows(engine, Series.series_instance_uid) == [("1.2.3.4.5",)]


async def test_level_attributes_merge_latest_wins(
    writer: IndexWriter, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    ds = make_dataset(1)
    await writer.submit(record(attributes(ds)))
    ds2 = make_dataset(2)
    ds2.StudyDescription = "Chest and abdomen"
    del ds2.ReferringPhysicianName
    with caplog.at_level(logging.INFO, logger="minipacs.index"):
        await writer.submit(record(attributes(ds2)))
    assert "'Chest' -> 'Chest and abdomen'" in caplog.text
    assert rows(engine, Study.study_description, Study.referring_physician_name) == [
        ("Chest and abdomen", "Welby^Marcus")]  # absent in the latest: kept


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 100", "Müller^Jürgen"),
        ("ISO_IR 192", "Ωμέγα^Ελένη"),
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    ],
)
async def test_names_are_unicode_in_the_index(
    writer: IndexWriter, engine: Engine, charset: str | list[str], name: str
) -> None:
    await writer.submit(record(attributes(make_dataset(charset=charset, name=name))))
    assert rows(engine, Patient.patient_name, Patient.patient_name_folded) == [
        (name, name.casefold())]


async def test_typed_keys_and_multi_valued_keys(writer: IndexWriter, engine: Engine) -> None:
    ds = make_dataset(1)
    ds.StudyDate = "2024.01.02"  # ACR-NEMA form
    ds.StudyTime = "0930"
    ds.OtherPatientIDsSequence = other_ids(("X1", "OTHER"), ("X2", ""))
    ds.OtherPatientNames = ["Roe^Jane", "Doe^J"]
    ds.NameOfPhysiciansReadingStudy = ["House^Greg", "Wilson^James"]
    await writer.submit(record(attributes(ds)))
    assert rows(engine, Study.study_date, Study.study_time) == [("20240102", "093000.000000")]
    assert rows(engine, Instance.instance_number, Instance.content_time) == [
        (1, "123456.500000")]
    assert sorted(rows(engine, PatientOtherId.other_patient_id,
                       PatientOtherId.issuer_of_patient_id)) == [("X1", "OTHER"), ("X2", "")]
    assert sorted(rows(engine, PatientValue.value, PatientValue.value_folded)) == [
        ("Doe^J", "doe^j"), ("Roe^Jane", "roe^jane")]
    assert sorted(v for (v,) in rows(engine, StudyValue.value)) == ["House^Greg", "Wilson^James"]


async def test_a_file_replaced_twice_is_recorded_once(engine: Engine) -> None:
    """Rebuilding from files can replace the same old file again: no duplicate-key failure."""
    writer = IndexWriter(engine, duplicate_policy=DuplicatePolicy.REPLACE)
    await writer.start()
    attrs = attributes(make_dataset())
    a, b = (record(attrs, f"{c}{c}/{c}{c}/" + c * 32 + ".dcm") for c in "ab")
    try:
        outcomes = [(await writer.submit(r)).outcome for r in (a, b, a, b)]
    finally:
        await writer.aclose()
    assert outcomes == [AddOutcome.ADDED] + [AddOutcome.REPLACED] * 3
    assert sorted(rows(engine, UnreferencedFile.storage_key)) == sorted(
        [(a.stored.key,), (b.stored.key,)])


async def test_over_long_key_values_are_indexed_on_every_backend(
    writer: IndexWriter, engine: Engine
) -> None:
    """Values longer than their VR allows occur in the field: the index must not refuse them
    on a backend that enforces column lengths (PostgreSQL), where SQLite would not."""
    ds = make_dataset(1)
    ds.AccessionNumber = "A" * 40  # SH: 16 at most
    ds.Modality = "CT\\PT\\MR\\US\\NM"  # CS, VM 1: kept whole where it fits
    ds.OperatorsName = ["Operator^" + "X" * 400]  # PN: the value column holds 324
    result = await writer.submit(record(attributes(ds)))
    assert result.outcome is AddOutcome.ADDED
    assert rows(engine, Study.accession_number) == [("A" * 16,)]  # cut to the column
    with engine.connect() as conn:
        stored = conn.execute(select(Study.attributes)).scalar_one()
    assert "A" * 40 in stored  # the whole value stays in the data set answers come from
