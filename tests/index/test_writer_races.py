"""Two index writers (two processes) writing the same keys at once, on PostgreSQL.

SQLite's writers take turns (``BEGIN IMMEDIATE``), so only PostgreSQL lets two transactions
insert the same unique key concurrently: the second blocks on the unique index until the
first commits, then fails with a unique violation (SQLSTATE 23505). The writer must index
its record again and see the committed row, never fail it (issue 15: several processes).

Each writer has its own engine, as two `minipacs serve` processes would. The first writer's
commit is held in its thread (an engine event) until the second is seen waiting for its lock
in ``pg_stat_activity``, so the race happens every time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text

from minipacs.index import IndexWriter
from minipacs.index.engine import make_engine
from minipacs.index.models import Instance, Patient, Series, Study
from minipacs.ports import AddOutcome, AddResult, DuplicatePolicy, InstanceRecord
from tests.databases import postgresql_only
from tests.index.dicomdata import attributes, make_dataset, record

WAIT = 10.0

pytestmark = postgresql_only


class CommitGate:
    """Holds the first commit on `engine` in its thread until `release` is set."""

    def __init__(self, engine: Engine) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        event.listen(engine, "commit", self._on_commit)

    def _on_commit(self, _conn: Any) -> None:
        self.reached.set()
        assert self.release.wait(WAIT), "the test never released the commit"


def count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def wait_for_lock_waiter(engine: Engine) -> None:
    """Until a session of this database waits for a lock (bounded)."""
    deadline = time.monotonic() + WAIT
    query = text("SELECT count(*) FROM pg_stat_activity "
                 "WHERE datname = current_database() AND wait_event_type = 'Lock'")
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query).scalar_one():
                return
        time.sleep(0.01)
    pytest.fail("the second writer never waited for the first one's lock")


@pytest.fixture
def engines(db_url: str) -> Iterator[tuple[Engine, Engine]]:
    first, second = make_engine(db_url), make_engine(db_url)
    yield first, second
    first.dispose()
    second.dispose()


@pytest.fixture
async def writers(engines: tuple[Engine, Engine], request: pytest.FixtureRequest
                  ) -> AsyncIterator[tuple[IndexWriter, IndexWriter]]:
    policy = getattr(request, "param", DuplicatePolicy.KEEP_FIRST)
    pair = IndexWriter(engines[0], duplicate_policy=policy), IndexWriter(
        engines[1], duplicate_policy=policy)
    for writer in pair:
        await writer.start()
    yield pair
    for writer in pair:
        await writer.aclose()


async def race(engines: tuple[Engine, Engine], writers: tuple[IndexWriter, IndexWriter],
               first: InstanceRecord, *second: InstanceRecord) -> list[AddResult]:
    """`first` through one writer, its commit held until the other's `second` records wait
    for its locks; the results of all, in order."""
    gate = CommitGate(engines[0])
    try:
        task = asyncio.create_task(writers[0].submit(first))
        assert await asyncio.to_thread(gate.reached.wait, WAIT)
        others = [asyncio.create_task(writers[1].submit(r)) for r in second]
        await asyncio.to_thread(wait_for_lock_waiter, engines[1])
    finally:
        gate.release.set()
    return [await task, *[await other for other in others]]


def two_copies() -> tuple[InstanceRecord, InstanceRecord]:
    """One instance as two processes received it: the same data set, each its own file."""
    attrs = attributes(make_dataset(1))
    return (record(attrs, "aa/aa/" + "a" * 32 + ".dcm"),
            record(attrs, "bb/bb/" + "b" * 32 + ".dcm"))


@pytest.mark.parametrize(("writers", "outcome", "kept"), [
    (DuplicatePolicy.KEEP_FIRST, AddOutcome.KEPT_FIRST, 0),
    (DuplicatePolicy.REPLACE, AddOutcome.REPLACED, 1),
], indirect=["writers"])
async def test_the_same_instance_at_once_is_indexed_once_by_the_policy(
        engines: tuple[Engine, Engine], writers: tuple[IndexWriter, IndexWriter],
        outcome: AddOutcome, kept: int) -> None:
    copies = two_copies()
    results = await race(engines, writers, *copies)
    assert [r.outcome for r in results] == [AddOutcome.ADDED, outcome]
    if outcome is AddOutcome.REPLACED:
        assert results[1].replaced_key == copies[0].stored.key
    with engines[0].connect() as conn:
        assert conn.execute(select(Instance.storage_key)).scalars().all() == [
            copies[kept].stored.key]
    assert [count(engines[0], m) for m in (Patient, Study, Series)] == [1, 1, 1]


async def test_a_new_study_arriving_at_two_writers_is_one_study(
        engines: tuple[Engine, Engine], writers: tuple[IndexWriter, IndexWriter]) -> None:
    """Two instances of one new patient's new study: one patient, study and series."""
    one, two = (record(attributes(make_dataset(n))) for n in (1, 2))
    results = await race(engines, writers, one, two)
    assert [r.outcome for r in results] == [AddOutcome.ADDED] * 2
    assert [count(engines[0], m) for m in (Patient, Study, Series, Instance)] == [1, 1, 1, 2]


async def test_a_batch_with_a_racing_record_loses_nothing(
        engines: tuple[Engine, Engine], writers: tuple[IndexWriter, IndexWriter]) -> None:
    """The racing record is in a batch with another: both are written, in one batch."""
    racing, again = two_copies()
    other = record(attributes(make_dataset(1, study=2, patient_id="PID2")))
    batches = writers[1].batches
    results = await race(engines, writers, racing, again, other)
    assert [r.outcome for r in results] == [AddOutcome.ADDED, AddOutcome.KEPT_FIRST,
                                            AddOutcome.ADDED]
    assert writers[1].batches == batches + 1
    assert [count(engines[0], m) for m in (Patient, Study, Series, Instance)] == [2, 2, 2, 2]
