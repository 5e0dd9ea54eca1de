"""The writer's one-statement path for a known, unchanged series, and its fallbacks.

The path must give exactly what the full path gives, and must see what other processes
(`minipacs delete`, another writer) did to the index since this writer last wrote.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from minipacs.index import IndexWriter
from minipacs.index.engine import make_engine
from minipacs.index.maintenance import delete_rows
from minipacs.index.models import Instance, Level, Patient, Series, Study
from minipacs.ports import AddOutcome, DuplicatePolicy, InstanceRecord
from tests.databases import SQLITE, Databases
from tests.index.dicomdata import attributes, make_dataset, record


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends, in order."""
    sent: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement.split(None, 1)[0].upper())

    event.listen(engine, "before_cursor_execute", before)
    yield sent
    event.remove(engine, "before_cursor_execute", before)


def instance_rows(engine: Engine) -> list[tuple[object, ...]]:
    """Every instance column but the primary key, with its series, study and patient."""
    columns = [c for c in Instance.__table__.c if c.name not in ("pk", "series_pk")]
    query = (select(*columns, Series.series_instance_uid, Study.study_instance_uid,
                    Patient.patient_id)
             .join(Series, Series.pk == Instance.series_pk)
             .join(Study, Study.pk == Series.study_pk)
             .join(Patient, Patient.pk == Study.patient_pk)
             .order_by(Instance.sop_instance_uid))
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def level_rows(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(Series.series_instance_uid, Series.attributes, Study.attributes,
                   Patient.attributes)
            .join(Study, Study.pk == Series.study_pk)
            .join(Patient, Patient.pk == Study.patient_pk)
            .order_by(Series.series_instance_uid))]


def mixed_records() -> list[InstanceRecord]:
    """Instances of 3 series over 2 patients, one re-sent, one with changed series data."""
    recs = [record(attributes(make_dataset(n, series=n % 3, patient_id=f"P{n % 2}",
                                           study=n % 2)))
            for n in range(12)]
    changed = make_dataset(20, series=1, patient_id="P1", study=1)
    changed.SeriesDescription = "Renamed"
    resent = make_dataset(3, series=0, patient_id="P1", study=1)
    return [*recs, record(attributes(changed)),
            record(attributes(resent), "ab/cd/" + "e" * 32 + ".dcm")]


async def test_next_instance_of_a_known_series_is_one_insert(
    writer: IndexWriter, engine: Engine, statements: list[str], backend: str
) -> None:
    await writer.submit(record(attributes(make_dataset(1))))
    statements.clear()
    result = await writer.submit(record(attributes(make_dataset(2))))
    assert result.outcome is AddOutcome.ADDED
    assert writer.fast_records == 1
    # A batch of one: no SAVEPOINT; the one INSERT checks the levels itself. (SQLite's
    # BEGIN IMMEDIATE is ours; psycopg begins its transactions without a statement.)
    assert statements == (["BEGIN", "INSERT"] if backend == SQLITE else ["INSERT"])
    assert len(instance_rows(engine)) == 2


@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "in-one-batch"])
async def test_same_rows_as_the_full_path(db_url: str, databases: Databases, backend: str,
                                          together: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    recs = mixed_records()

    async def index(url: str, fast: bool) -> tuple[list[tuple[object, ...]], list[Any], int]:
        engine = make_engine(url)
        writer = IndexWriter(engine, duplicate_policy=DuplicatePolicy.REPLACE)
        if not fast:
            monkeypatch.setattr(writer._rows, "add_fast", lambda conn, rec: None)
        await writer.start()
        try:
            if together:
                results = await asyncio.gather(*(writer.submit(r) for r in recs))
            else:
                results = [await writer.submit(r) for r in recs]
            return instance_rows(engine) + level_rows(engine), results, writer.fast_records
        finally:
            await writer.aclose()
            engine.dispose()

    other = databases.create(backend)
    fast_rows, fast_results, fast_count = await index(db_url, fast=True)
    full_rows, full_results, full_count = await index(other, fast=False)
    assert fast_count > 0 and full_count == 0
    assert fast_rows == full_rows
    assert fast_results == full_results
    assert AddOutcome.REPLACED in {r.outcome for r in fast_results}
    databases.drop(other)


async def test_changed_series_attributes_take_the_full_path(
    writer: IndexWriter, engine: Engine
) -> None:
    await writer.submit(record(attributes(make_dataset(1))))
    ds = make_dataset(2)
    ds.SeriesDescription = "Renamed"
    await writer.submit(record(attributes(ds)))
    assert writer.fast_records == 0
    with engine.connect() as conn:
        assert conn.execute(select(Series.series_description)).scalar_one() == "Renamed"


async def test_series_deleted_by_another_process_is_recreated(
    writer: IndexWriter, engine: Engine, db_url: str
) -> None:
    await writer.submit(record(attributes(make_dataset(1))))
    await writer.submit(record(attributes(make_dataset(2))))
    other = make_engine(db_url)  # `minipacs delete` runs in another process
    try:
        series_uid = attributes(make_dataset(1)).series_instance_uid
        assert delete_rows(other, Level.SERIES, series_uid) is not None
    finally:
        other.dispose()
    result = await writer.submit(record(attributes(make_dataset(3))))
    assert result.outcome is AddOutcome.ADDED
    assert [(r[0], r[-3]) for r in instance_rows(engine)] == [
        (attributes(make_dataset(3)).sop_instance_uid, series_uid)]


async def test_reused_primary_keys_never_misfile_an_instance(
    writer: IndexWriter, engine: Engine, db_url: str
) -> None:
    # Everything deleted elsewhere, then another writer makes a different patient, study
    # and series, which SQLite may give the same primary keys: the next instance of the
    # first series must not land in the new one.
    await writer.submit(record(attributes(make_dataset(1, study=1, patient_id="A"))))
    other = make_engine(db_url)
    try:
        delete_rows(other, Level.PATIENT, "A")
        stranger = IndexWriter(other)
        await stranger.start()
        try:
            await stranger.submit(record(attributes(make_dataset(1, study=2, patient_id="B"))))
        finally:
            await stranger.aclose()
    finally:
        other.dispose()
    await writer.submit(record(attributes(make_dataset(2, study=1, patient_id="A"))))
    assert writer.fast_records == 0
    placed = {(r[0], r[-2], r[-1]) for r in instance_rows(engine)}
    assert placed == {
        (attributes(make_dataset(1, study=2)).sop_instance_uid,
         attributes(make_dataset(1, study=2)).study_instance_uid, "B"),
        (attributes(make_dataset(2, study=1)).sop_instance_uid,
         attributes(make_dataset(2, study=1)).study_instance_uid, "A"),
    }
