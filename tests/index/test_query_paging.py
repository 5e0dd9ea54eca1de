"""C-FIND answers from the SQL index: keyset pages, short transactions, computed keys, plans."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from sqlalchemy import Engine, event

from minipacs.index import SqlIndex
from minipacs.ports import Condition, FindQuery, JsonDataset, MatchKind, QueryLevel
from tests.databases import sqlite_file, sqlite_only
from tests.index.dicomdata import CT_IMAGE_STORAGE, attributes, make_dataset, record, uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
PAGED = 50


def tag(keyword: str) -> int:
    value = tag_for_keyword(keyword)
    assert value is not None, keyword
    return value


def key(keyword: str) -> str:
    return f"{tag(keyword):08X}"


def value(answer: JsonDataset, keyword: str) -> Any:
    return (answer.get(key(keyword), {}).get("Value") or [None])[0]


def single(keyword: str, text: str) -> Condition:
    return Condition(tag(keyword), "LO", MatchKind.SINGLE, (text,))


PAGED_QUERY = FindQuery(QueryLevel.STUDY, (single("StudyDescription", "Paged"),))


def paged_study(n: int, description: str = "Paged") -> Dataset:
    ds = make_dataset(1, study=n, patient_id=f"PID{n % 3}")
    ds.StudyDescription = description
    return ds


@pytest.fixture
async def index(engine: Engine) -> AsyncIterator[SqlIndex]:
    async with SqlIndex(engine) as index:
        yield index


async def add(index: SqlIndex, *datasets: Dataset) -> None:
    for ds in datasets:
        await index.add_instance(record(attributes(ds)))


@pytest.fixture
async def paged(index: SqlIndex) -> SqlIndex:
    """50 matching studies in insertion order, and a few that do not match."""
    await add(index, *(paged_study(n) for n in range(1, PAGED + 1)))
    await add(index, *(paged_study(n, "Other") for n in range(100, 105)))
    return index


def study_number(answer: JsonDataset) -> int:
    return int(value(answer, "StudyInstanceUID").rsplit(".", 1)[1])


async def test_pages_return_every_match_once_in_order(paged: SqlIndex) -> None:
    sizes, found, after = [], [], None
    while True:
        page = await paged.find(PAGED_QUERY, after=after, limit=7)
        sizes.append(len(page.answers))
        found += [study_number(a) for a in page.answers]
        if page.after is None:
            break
        after = page.after
    assert sizes == [7] * 7 + [1]
    assert found == list(range(1, PAGED + 1))


async def test_the_last_full_page_says_it_is_the_last(paged: SqlIndex) -> None:
    afters = []
    after = None
    for _ in range(5):
        page = await paged.find(PAGED_QUERY, after=after, limit=10)
        assert len(page.answers) == 10
        afters.append(after := page.after)
    assert afters[-1] is None and None not in afters[:-1]  # no empty sixth page


async def test_rows_committed_between_pages_do_not_break_paging(paged: SqlIndex) -> None:
    found = []
    page = await paged.find(PAGED_QUERY, after=None, limit=7)
    found += [study_number(a) for a in page.answers]
    # Meanwhile: a new matching study, an update of a study already returned, and of one
    # still to come (a merged attribute; its row keeps its primary key).
    changed = paged_study(3)
    changed.ReferringPhysicianName = "Other^Doctor"
    later = paged_study(40)
    later.StudyID = "changed"
    await add(paged, paged_study(PAGED + 1), changed, later)
    after = page.after
    while after is not None:
        page = await paged.find(PAGED_QUERY, after=after, limit=7)
        found += [study_number(a) for a in page.answers]
        after = page.after
    assert found == [*range(1, PAGED + 1), PAGED + 1]


@sqlite_only
async def test_no_read_transaction_outlives_a_page(paged: SqlIndex, db_url: str) -> None:
    """A held snapshot pins SQLite's WAL: a TRUNCATE checkpoint could not finish."""
    path = sqlite_file(db_url)

    def checkpoint_busy() -> int:
        conn = sqlite3.connect(path, timeout=0.2)  # a blocked checkpoint waits this long
        try:
            return int(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
        finally:
            conn.close()

    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM study").fetchone()
    await add(paged, paged_study(200))  # a commit the open snapshot does not see
    assert checkpoint_busy() == 1  # the check works: an open read transaction blocks it
    reader.execute("COMMIT")
    reader.close()

    page = await paged.find(PAGED_QUERY, after=None, limit=7)  # between two pages...
    await add(paged, paged_study(201))
    assert checkpoint_busy() == 0  # ...nothing holds the WAL
    assert (await paged.find(PAGED_QUERY, after=page.after, limit=7)).answers


async def test_count_is_capped(paged: SqlIndex) -> None:
    assert await paged.count(PAGED_QUERY, cap=10) == 11
    assert await paged.count(PAGED_QUERY, cap=PAGED) == PAGED
    assert await paged.count(PAGED_QUERY, cap=1000) == PAGED
    assert await paged.count(FindQuery(QueryLevel.STUDY, ()), cap=1000) == PAGED + 5
    nothing = FindQuery(QueryLevel.STUDY, (single("StudyDescription", "none"),))
    assert await paged.count(nothing, cap=10) == 0


async def test_bad_cursor_or_limit(paged: SqlIndex) -> None:
    with pytest.raises(TypeError):
        await paged.find(PAGED_QUERY, after="7", limit=7)
    with pytest.raises(ValueError):
        await paged.find(PAGED_QUERY, after=None, limit=0)


# --- answers ------------------------------------------------------------------------------


@pytest.fixture
async def hospital(index: SqlIndex) -> SqlIndex:
    """Patient PID1/ISSUER: study 1 (CT x3, MR x2), study 2 (US x1); PID-less study 3."""
    for series, modality, sop_class, count in ((1, "CT", CT_IMAGE_STORAGE, 3),
                                               (2, "MR", MR_IMAGE_STORAGE, 2)):
        for n in range(1, count + 1):
            ds = make_dataset(n, study=1, series=series, patient_id="PID1", issuer="ISSUER")
            ds.Modality, ds.SOPClassUID = modality, sop_class
            await add(index, ds)
    us = make_dataset(1, study=2, patient_id="PID1", issuer="ISSUER")
    us.Modality, us.SOPClassUID = "US", US_IMAGE_STORAGE
    anonymous = make_dataset(1, study=3, patient_id="", name="Nobody^Known")
    await add(index, us, anonymous)
    return index


async def find_all(index: SqlIndex, level: QueryLevel, *conds: Condition) -> list[JsonDataset]:
    page = await index.find(FindQuery(level, conds), after=None, limit=100)
    assert page.after is None
    return list(page.answers)


async def test_computed_keys_of_each_level(hospital: SqlIndex) -> None:
    pid = single("PatientID", "PID1")
    [patient] = await find_all(hospital, QueryLevel.PATIENT, pid)
    assert [value(patient, k) for k in ("NumberOfPatientRelatedStudies",
                                        "NumberOfPatientRelatedSeries",
                                        "NumberOfPatientRelatedInstances")] == [2, 3, 6]
    first, second = await find_all(hospital, QueryLevel.STUDY, pid)
    assert (value(first, "NumberOfStudyRelatedSeries"),
            value(first, "NumberOfStudyRelatedInstances")) == (2, 5)
    assert first[key("ModalitiesInStudy")] == {"vr": "CS", "Value": ["CT", "MR"]}
    assert first[key("SOPClassesInStudy")] == {
        "vr": "UI", "Value": sorted([CT_IMAGE_STORAGE, MR_IMAGE_STORAGE])}
    assert second[key("ModalitiesInStudy")]["Value"] == ["US"]
    assert value(second, "NumberOfStudyRelatedInstances") == 1
    series = await find_all(hospital, QueryLevel.SERIES, single("StudyInstanceUID", uid(1)))
    assert [(value(s, "Modality"), value(s, "NumberOfSeriesRelatedInstances"))
            for s in series] == [("CT", 3), ("MR", 2)]


async def test_answers_carry_the_unique_keys_of_the_levels_above(hospital: SqlIndex) -> None:
    images = await find_all(hospital, QueryLevel.IMAGE, single("SeriesInstanceUID", uid(1, 2)))
    assert len(images) == 2
    image = images[0]
    assert {k: value(image, k) for k in ("PatientID", "IssuerOfPatientID", "StudyInstanceUID",
                                         "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
            } == {"PatientID": "PID1", "IssuerOfPatientID": "ISSUER",
                  "StudyInstanceUID": uid(1), "SeriesInstanceUID": uid(1, 2),
                  "SOPInstanceUID": uid(1, 2, 1), "SOPClassUID": MR_IMAGE_STORAGE}
    # Attributes of every level above, as DICOM JSON pydicom reads; nothing but tags.
    assert value(image, "PatientName") == {"Alphabetic": "Doe^John"}
    assert (value(image, "StudyDate"), value(image, "Modality")) == ("20240102", "MR")
    assert all(len(k) == 8 and int(k, 16) >= 0 for k in image)
    ds = Dataset.from_json(dict(image))
    assert ds.SOPInstanceUID == uid(1, 2, 1) and ds.InstanceNumber == 1


async def test_patients_without_id_or_issuer(hospital: SqlIndex) -> None:
    [anonymous] = await find_all(hospital, QueryLevel.PATIENT,
                                 single("PatientName", "nobody^known"))
    assert anonymous[key("PatientID")] == {"vr": "LO"}  # zero-length: the entity has none
    assert key("IssuerOfPatientID") not in anonymous
    [study] = await find_all(hospital, QueryLevel.STUDY, single("PatientName", "NOBODY^KNOWN"))
    assert study_number(study) == 3 and study[key("PatientID")] == {"vr": "LO"}


# --- query plans --------------------------------------------------------------------------


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every SQL statement run, with its parameters, as the driver received it."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    yield seen
    event.remove(engine, "before_cursor_execute", capture)


def explain(db_url: str, statement: str, parameters: Any) -> list[str]:
    conn = sqlite3.connect(sqlite_file(db_url))
    try:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, parameters)]
    finally:
        conn.close()


@sqlite_only  # SQLite's EXPLAIN QUERY PLAN
@pytest.mark.parametrize(("level", "condition", "index_name"), [
    (QueryLevel.STUDY, single("PatientID", "PID1"), "uq_patient_identity"),
    (QueryLevel.STUDY, Condition(tag("PatientName"), "PN", MatchKind.WILDCARD, ("DOE*",)),
     "ix_patient_patient_name_folded"),
    (QueryLevel.STUDY, Condition(tag("StudyDate"), "DA", MatchKind.RANGE,
                                 ("20240101", "20240131")), "ix_study_study_date"),
    (QueryLevel.STUDY, single("AccessionNumber", "ACC7"), "ix_study_accession_number"),
    (QueryLevel.SERIES, single("StudyInstanceUID", uid(7)), "ix_series_study_pk"),
    (QueryLevel.IMAGE, single("SeriesInstanceUID", uid(7, 1)),
     "ix_instance_series_pk_sop_class_uid"),
])
async def test_benchmark_queries_search_an_index(
        paged: SqlIndex, statements: list[tuple[str, Any]], db_url: str,
        level: QueryLevel, condition: Condition, index_name: str) -> None:
    """Plans without statistics (no ANALYZE) are the plans of any index size."""
    for after in (None, 0):  # the first page, and any later one (WHERE pk > :after)
        statements.clear()
        page = await paged.find(FindQuery(level, (condition,)), after=after, limit=100)
        assert page.answers
        assert len(statements) >= 2  # the keyset, then rows and computed keys by primary key
        keyset, parameters = statements[0]
        plan = explain(db_url, keyset, parameters)
        assert any(index_name in line for line in plan), plan
        assert not any(line.startswith("SCAN") for line in plan), plan
        for statement, parameters in statements[1:]:
            assert not any(line.startswith("SCAN")
                           for line in explain(db_url, statement, parameters)), statement
