"""C-MOVE / C-GET on the SQL index: the instances under selected entities, paged by keyset."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from sqlalchemy import Engine

from minipacs.index import SqlIndex
from minipacs.ports import Condition, FindQuery, InstanceLocation, MatchKind, QueryLevel
from tests.index.dicomdata import EXPLICIT_LE, IMPLICIT_LE, attributes, make_dataset, record, uid

TAG_STUDY_INSTANCE_UID = 0x0020000D
TAG_SERIES_INSTANCE_UID = 0x0020000E
TAG_PATIENT_ID = 0x00100020
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def study_query(*study_uids: str) -> FindQuery:
    kind = MatchKind.LIST if len(study_uids) > 1 else MatchKind.SINGLE
    return FindQuery(QueryLevel.STUDY,
                     (Condition(TAG_STUDY_INSTANCE_UID, "UI", kind, study_uids),))


@pytest.fixture
async def index(engine: Engine) -> AsyncIterator[SqlIndex]:
    """Study 1: 2 series of 5 and 3 instances (one Implicit VR LE, one SC); study 2: 2."""
    async with SqlIndex(engine) as index:
        for series, count in ((1, 5), (2, 3)):
            for n in range(1, count + 1):
                rec = record(attributes(make_dataset(n, study=1, series=series)))
                if (series, n) == (2, 3):
                    rec = replace(rec, transfer_syntax_uid=IMPLICIT_LE)
                await index.add_instance(rec)
        for n in (1, 2):
            await index.add_instance(record(attributes(make_dataset(n, study=2))))
        ds = make_dataset(9, study=1, series=3)
        ds.SOPClassUID = SECONDARY_CAPTURE
        await index.add_instance(record(attributes(ds)))
        yield index


async def all_pages(index: SqlIndex, query: FindQuery, limit: int
                    ) -> tuple[list[InstanceLocation], int]:
    found: list[InstanceLocation] = []
    after: object | None = None
    for pages in range(1, 100):  # bounded: far more pages than any case here has
        page = await index.instances(query, after=after, limit=limit)
        found += page.instances
        after = page.after
        if after is None:
            return found, pages
    raise AssertionError("paging never ended")


async def test_pages_cover_every_instance_once_in_order(index: SqlIndex) -> None:
    found, pages = await all_pages(index, study_query(uid(1)), limit=3)
    assert pages == 3  # 9 instances, 3 per page, the last page says it is the last
    uids = [loc.sop_instance_uid for loc in found]
    assert len(uids) == len(set(uids)) == 9
    assert set(uids) == {uid(1, s, n) for s, count in ((1, 5), (2, 3)) for n in
                         range(1, count + 1)} | {uid(1, 3, 9)}
    first = next(loc for loc in found if loc.sop_instance_uid == uid(1, 1, 1))
    assert (first.transfer_syntax_uid, first.dataset_offset, first.file_size) == (
        EXPLICIT_LE, 300, 1234)
    assert first.storage_key.endswith(".dcm")


@pytest.mark.parametrize("limit", [1, 4, 11, 100])
async def test_any_page_size_gives_the_same_instances(index: SqlIndex, limit: int) -> None:
    found, _ = await all_pages(index, study_query(uid(1), uid(2)), limit=limit)
    assert len({loc.sop_instance_uid for loc in found}) == len(found) == 11


async def test_series_and_patient_levels_select_their_instances(index: SqlIndex) -> None:
    series = FindQuery(QueryLevel.SERIES, (
        Condition(TAG_STUDY_INSTANCE_UID, "UI", MatchKind.SINGLE, (uid(1),)),
        Condition(TAG_SERIES_INSTANCE_UID, "UI", MatchKind.SINGLE, (uid(1, 2),))))
    found, _ = await all_pages(index, series, limit=2)
    assert sorted(loc.sop_instance_uid for loc in found) == [uid(1, 2, n) for n in (1, 2, 3)]
    patient = FindQuery(QueryLevel.PATIENT,
                        (Condition(TAG_PATIENT_ID, "LO", MatchKind.SINGLE, ("PID1",)),))
    found, _ = await all_pages(index, patient, limit=5)
    assert len(found) == 11
    nobody = FindQuery(QueryLevel.PATIENT,
                       (Condition(TAG_PATIENT_ID, "LO", MatchKind.SINGLE, ("NOBODY",)),))
    assert (await index.instances(nobody, after=None, limit=5)).instances == ()


async def test_instance_kinds_are_distinct_and_stable(index: SqlIndex) -> None:
    assert await index.instance_kinds(study_query(uid(1))) == (
        ("1.2.840.10008.5.1.4.1.1.2", IMPLICIT_LE),
        ("1.2.840.10008.5.1.4.1.1.2", EXPLICIT_LE),
        (SECONDARY_CAPTURE, EXPLICIT_LE),
    )
    assert await index.instance_kinds(study_query(uid(2))) == (
        ("1.2.840.10008.5.1.4.1.1.2", EXPLICIT_LE),)


async def test_count_is_of_entities_and_capped(index: SqlIndex) -> None:
    assert await index.count(study_query(uid(1), uid(2)), cap=10) == 2
    everything = FindQuery(QueryLevel.IMAGE, ())
    assert await index.count(everything, cap=3) == 4  # counting stops at cap + 1
