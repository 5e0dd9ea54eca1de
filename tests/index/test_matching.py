"""C-FIND matching rules of PS3.4 C.2.2.2 on a real SQLite index, filled by the writer."""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.datadict import tag_for_keyword
from sqlalchemy import Engine, func, select

from minipacs.index import IndexWriter, SqlQueryIndex
from minipacs.index.engine import (
    LIKE_ESCAPE,
    glob_pattern,
    like_pattern,
    make_engine,
    successor,
)
from minipacs.index.matching import MAX_LIST_PATTERNS
from minipacs.index.models import Study
from minipacs.index.query import MAX_LIST_VALUES, MAX_PATTERN_LENGTH
from minipacs.ports import (
    Condition,
    DataSetError,
    FindQuery,
    JsonDataset,
    MatchKind,
    QueryLevel,
)
from tests.databases import BACKENDS, Databases
from tests.index.dicomdata import CT_IMAGE_STORAGE, attributes, make_dataset, record, uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
JAPANESE = "Yamada^Tarou=山田^太郎=やまだ^たろう"


def tag(keyword: str) -> int:
    value = tag_for_keyword(keyword)
    assert value is not None, keyword
    return value


@dataclass(frozen=True)
class StudySpec:
    """One study of the fixture: its patient, study attributes and series."""

    n: int
    patient: tuple[str, str | None, str | None]  # PatientID, Issuer, PatientName (None: absent)
    study: dict[str, Any]  # keyword → value (None: absent)
    series: tuple[tuple[str, str, int], ...]  # (Modality, SOP Class UID, instances)
    charset: str = "ISO_IR 192"
    patient_extra: dict[str, Any] = field(default_factory=dict)


def study(desc: Any, date: str | None, time: str | None, acc: str | None) -> dict[str, Any]:
    return {"StudyDescription": desc, "StudyDate": date, "StudyTime": time,
            "AccessionNumber": acc}


CT = ("CT", CT_IMAGE_STORAGE, 1)
MR = ("MR", MR_IMAGE_STORAGE, 1)
SPECS = (
    StudySpec(1, ("PID1", None, "SMITH^JOHN"), study("Chest", "20240102", "123000", "ACC1"),
              (("CT", CT_IMAGE_STORAGE, 2), MR), patient_extra={"OtherPatientIDs": "ALT1"}),
    StudySpec(2, ("PID1", None, "SMITH^JOHN"), study("CHEST", "20240103", "080000", "ACC2"),
              (CT,), patient_extra={"OtherPatientIDs": "ALT1"}),
    StudySpec(3, ("PID1", "ISSUER_B", "SMITH^JOHN"),
              study("100% done", "20231231", "233000", "ACC3"), (CT,)),
    StudySpec(4, ("PID2", None, "Smithers^Anna"), study("a_b", "20240101", "013000", "ACC4"),
              (MR,)),
    StudySpec(5, ("PID2", None, "Smithers^Anna"), study("axb", "20240101", None, "ACC5"),
              (("US", US_IMAGE_STORAGE, 1),)),
    StudySpec(6, ("PID4", None, JAPANESE),
              {**study("[bracket]", "20240301", "120000.5", "ACC6"),
               "PhysiciansOfRecord": ["Adams^Amy", "Baker^Bob"]}, (CT,)),
    StudySpec(7, ("PID5", None, None), study(None, None, None, None), (CT,)),
    StudySpec(8, ("PID6", None, "smith^jane"),
              study(["A", "B"], "20240410", "235959.999999", "ACC8"), (CT,)),
    StudySpec(9, ("PID7", None, "Müller^Jürgen"), study("Schädel", "20240501", "000000", "ACC9"),
              (MR,), charset="ISO_IR 100"),
)
ALL = {spec.n for spec in SPECS}


def datasets() -> Iterator[Any]:
    for spec in SPECS:
        pid, issuer, name = spec.patient
        for s, (modality, sop_class, count) in enumerate(spec.series, start=1):
            for i in range(1, count + 1):
                ds = make_dataset(i, study=spec.n, series=s, patient_id=pid, issuer=issuer,
                                  name=name or "", charset=spec.charset)
                for keyword, value in {**spec.study, **spec.patient_extra}.items():
                    if value is None:
                        delattr(ds, keyword)
                    else:
                        setattr(ds, keyword, value)
                if name is None:
                    del ds.PatientName
                ds.Modality, ds.SOPClassUID = modality, sop_class
                yield ds


@pytest.fixture(scope="module", params=BACKENDS)
def engine(request: pytest.FixtureRequest, databases: Databases) -> Iterator[Engine]:
    """One index per backend for the module, filled through the real writer."""
    url = databases.create(request.param)
    engine = make_engine(url)

    async def fill() -> None:
        writer = IndexWriter(engine)
        await writer.start()
        try:
            for ds in datasets():
                await writer.submit(record(attributes(ds)))
        finally:
            await writer.aclose()

    asyncio.run(fill())
    yield engine
    engine.dispose()
    databases.drop(url)


@pytest.fixture
def index(engine: Engine) -> SqlQueryIndex:
    return SqlQueryIndex(engine)


def cond(keyword: str, kind: MatchKind, *values: str, vr: str = "LO",
         combined_with: str | None = None) -> Condition:
    partner = tag(combined_with) if combined_with else None
    return Condition(tag(keyword), vr, kind, tuple(values), combined_with=partner)


def single(keyword: str, value: str) -> Condition:
    return cond(keyword, MatchKind.SINGLE, value)


def wild(keyword: str, value: str) -> Condition:
    return cond(keyword, MatchKind.WILDCARD, value)


def span(keyword: str, low: str, high: str, **kw: Any) -> Condition:
    return cond(keyword, MatchKind.RANGE, low, high, **kw)


def empty(keyword: str) -> Condition:
    return cond(keyword, MatchKind.EMPTY)


async def answers(index: SqlQueryIndex, level: QueryLevel, *conds: Condition
                  ) -> list[JsonDataset]:
    out: list[JsonDataset] = []
    after: object | None = None
    while True:
        page = await index.find(FindQuery(level, conds), after=after, limit=100)
        out += page.answers
        if page.after is None:
            return out
        after = page.after


def value(answer: JsonDataset, keyword: str) -> Any:
    return (answer.get(f"{tag(keyword):08X}", {}).get("Value") or [None])[0]


async def studies(index: SqlQueryIndex, *conds: Condition) -> set[int]:
    found = [int(value(a, "StudyInstanceUID").rsplit(".", 1)[1])
             for a in await answers(index, QueryLevel.STUDY, *conds)]
    assert len(found) == len(set(found)), "one answer per study"
    return set(found)


async def patients(index: SqlQueryIndex, *conds: Condition) -> list[tuple[str, str | None]]:
    found = await answers(index, QueryLevel.PATIENT, *conds)
    pairs = [(value(a, "PatientID"), value(a, "IssuerOfPatientID")) for a in found]
    return sorted(pairs, key=lambda pair: (pair[0], pair[1] or ""))


# --- C.2.2.2.1 single value ----------------------------------------------------------------


async def test_single_value_is_exact_and_case_sensitive(index: SqlQueryIndex) -> None:
    assert await studies(index, single("StudyDescription", "Chest")) == {1}
    assert await studies(index, single("StudyDescription", "CHEST")) == {2}
    assert await studies(index, single("StudyDescription", "chest")) == set()
    assert await studies(index, single("StudyDescription", "Ches")) == set()
    assert await studies(index, single("AccessionNumber", "ACC4")) == {4}


async def test_person_name_single_value_ignores_case(index: SqlQueryIndex) -> None:
    assert await studies(index, single("PatientName", "smith^john")) == {1, 2, 3}
    assert await patients(index, single("PatientName", "SMITH^JANE")) == [("PID6", None)]
    assert await patients(index, single("PatientName", "smith")) == []


async def test_non_ascii_values(index: SqlQueryIndex) -> None:
    assert await patients(index, single("PatientName", "müller^jürgen")) == [("PID7", None)]
    assert await patients(index, wild("PatientName", "MÜLLER*")) == [("PID7", None)]
    assert await studies(index, single("StudyDescription", "Schädel")) == {9}
    assert await studies(index, wild("StudyDescription", "Sch?del")) == {9}  # ? is one character


async def test_person_name_component_groups(index: SqlQueryIndex) -> None:
    japanese = [("PID4", None)]
    for query in ("Yamada^Tarou", "YAMADA^TAROU=山田^太郎", JAPANESE, "=山田^太郎",
                  "Yamada^Tarou==やまだ^たろう"):
        assert await patients(index, single("PatientName", query)) == japanese, query
    for query in ("Yamada*", "=山田*", "*=山田^太郎=*"):
        assert await patients(index, wild("PatientName", query)) == japanese, query
    assert await patients(index, single("PatientName", "Yamada^Tarou=Wrong")) == []
    assert await patients(index, single("PatientName", "山田^太郎")) == []  # not Alphabetic
    [answer] = await answers(index, QueryLevel.PATIENT, single("PatientName", "yamada^tarou"))
    assert value(answer, "PatientName") == {
        "Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}


# --- C.2.2.2.3 universal, C.2.2.2.4 wildcard ------------------------------------------------


async def test_star_alone_is_universal_and_matches_entities_without_value(
        index: SqlQueryIndex) -> None:
    assert await studies(index, wild("StudyDescription", "*")) == ALL
    assert await studies(index, wild("StudyDescription", "**")) == ALL
    assert ("PID5", None) in await patients(index, wild("PatientName", "*"))
    assert len(await patients(index, wild("PatientName", "*"))) == 7
    # Anything more than `*` needs a value.
    assert 7 not in await studies(index, wild("StudyDescription", "*?"))


async def test_star_and_question_mark_positions(index: SqlQueryIndex) -> None:
    cases = {
        "Ch?st": {1}, "?hest": {1}, "Ches?": {1}, "C*t": {1}, "*EST": {2}, "Ch*": {1},
        "C*": {1, 2}, "*e*": {1, 3, 6, 9}, "???": {4, 5, 8}, "?": set(), "a?b": {4, 5},
        "*d?l": {9}, "Chest*": {1}, "*Chest": {1}, "C?*T": {2},
    }
    for pattern, expected in cases.items():
        assert await studies(index, wild("StudyDescription", pattern)) == expected, pattern


async def test_sql_metacharacters_in_values_are_literal(index: SqlQueryIndex) -> None:
    cases = {
        "100%*": {3}, "%": set(), "*%*": {3}, "a_*": {4}, "_*": set(), "*_*": {4},
        "[b*": {6}, "*]": {6}, "[[]*": set(), "[a-z]*": set(), "A\\*": {8}, "*\\?": {8},
        "\\*": set(), "*\\%": set(),
    }
    for pattern, expected in cases.items():
        assert await studies(index, wild("StudyDescription", pattern)) == expected, pattern
    for literal, expected in {"a_b": {4}, "100% done": {3}, "[bracket]": {6}, "A\\B": {8},
                              "a%b": set(), "a\\_b": set()}.items():
        assert await studies(index, single("StudyDescription", literal)) == expected, literal


async def test_person_name_wildcards_ignore_case(index: SqlQueryIndex) -> None:
    assert await patients(index, wild("PatientName", "SMITH*")) == [
        ("PID1", None), ("PID1", "ISSUER_B"), ("PID2", None), ("PID6", None)]
    assert await patients(index, wild("PatientName", "sm?th^j*")) == [
        ("PID1", None), ("PID1", "ISSUER_B"), ("PID6", None)]
    assert await patients(index, wild("PatientName", "*^ANNA")) == [("PID2", None)]


# --- C.2.2.2.5 range ------------------------------------------------------------------------


async def test_date_ranges(index: SqlQueryIndex) -> None:
    assert await studies(index, span("StudyDate", "20240101", "20240102")) == {1, 4, 5}
    assert await studies(index, span("StudyDate", "", "20231231")) == {3}
    assert await studies(index, span("StudyDate", "20240301", "")) == {6, 8, 9}
    assert await studies(index, span("StudyDate", "19000101", "")) == ALL - {7}  # needs a date
    assert await studies(index, single("StudyDate", "20240101")) == {4, 5}
    assert await patients(index, span("PatientBirthDate", "19700101", "19700101")) != []


async def test_time_ranges_cover_the_precision_of_their_bounds(index: SqlQueryIndex) -> None:
    cases = {
        ("1200", "1300"): {1, 6}, ("", "0800"): {2, 4, 9}, ("", "12"): {1, 2, 4, 6, 9},
        ("12", "12"): {1, 6}, ("2359", ""): {8}, ("235959.999999", ""): {8},
        ("1230", "1230"): {1}, ("120000.5", "120000.5"): {6}, ("120001", "1229"): set(),
    }
    for (low, high), expected in cases.items():
        assert await studies(index, span("StudyTime", low, high)) == expected, (low, high)
    assert await studies(index, single("StudyTime", "1230")) == {1}
    assert await studies(index, single("StudyTime", "12")) == {1, 6}


async def test_combined_date_time_range_crosses_midnight(index: SqlQueryIndex) -> None:
    def combined(low: str, high: str) -> Condition:
        return span("StudyDate", low, high, combined_with="StudyTime")

    # 5 has a date and no time: its whole day meets the range.
    assert await studies(index, combined("202312312300", "202401010200")) == {3, 4, 5}
    assert await studies(index, combined("202401021230", "20240103080000")) == {1, 2}
    assert await studies(index, combined("20240102", "")) == {1, 2, 6, 8, 9}
    assert await studies(index, combined("", "202312312330")) == {3}
    assert await studies(index, combined("", "202312312329")) == set()
    # Without combined matching each key is its own range; a TM range cannot cross midnight.
    assert await studies(index, span("StudyDate", "20231231", "20240101"),
                         span("StudyTime", "2300", "0200")) == set()


# --- C.2.2.2.2 list of UIDs, C.2.2.2.6 empty value ------------------------------------------


async def test_list_of_uids(index: SqlQueryIndex) -> None:
    one = cond("StudyInstanceUID", MatchKind.LIST, uid(3))
    assert await studies(index, one) == {3}
    many = [uid(1), uid(6)] + [uid(1000 + n) for n in range(1998)]
    assert await studies(index, cond("StudyInstanceUID", MatchKind.LIST, *many)) == {1, 6}
    images = await answers(index, QueryLevel.IMAGE,
                           cond("SOPInstanceUID", MatchKind.LIST, uid(1, 1, 2), uid(9, 1, 1)))
    assert sorted(value(a, "SOPInstanceUID") for a in images) == [uid(1, 1, 2), uid(9, 1, 1)]


async def test_lists_of_other_values_match_each_value_by_its_own_rules(
        index: SqlQueryIndex) -> None:
    def listed(keyword: str, *values: str) -> Condition:
        return cond(keyword, MatchKind.LIST, *values)

    assert await studies(index, listed("AccessionNumber", "ACC1", "ACC4", "NONE")) == {1, 4}
    assert await studies(index, listed("StudyDescription", "Chest", "a?b")) == {1, 4, 5}
    # PN: case folded, component groups and wildcards per value.
    assert await studies(index, listed("PatientName", "smith^john", "Yamada^Tarou")) == \
        {1, 2, 3, 6}
    assert await studies(index, listed("PatientName", "müller*", "SMITH^J?NE")) == {8, 9}
    assert await studies(index, listed("PhysiciansOfRecord", "nobody", "BAKER^*")) == {6}
    assert await studies(index, listed("StudyDate", "20240102", "20240501")) == {1, 9}
    assert await studies(index, listed("ModalitiesInStudy", "US", "M?")) == {1, 4, 5, 9}
    # A value of only "*" matches everything, entities without a value too.
    assert await studies(index, listed("AccessionNumber", "NONE", "*")) == ALL
    images = await answers(index, QueryLevel.IMAGE, listed("InstanceNumber", "2", "7"))
    assert {value(a, "InstanceNumber") for a in images} == {2}


async def test_empty_value_matching(index: SqlQueryIndex) -> None:
    assert await studies(index, empty("StudyDescription")) == {7}
    assert await studies(index, empty("AccessionNumber")) == {7}
    assert await patients(index, empty("PatientName")) == [("PID5", None)]
    assert await patients(index, single("PatientID", "PID1"), empty("IssuerOfPatientID")) == [
        ("PID1", None)]
    assert await studies(index, empty("PhysiciansOfRecord")) == ALL - {6}


# --- C.2.2.3 multiple values, C.4.1.3.2 relational -------------------------------------------


async def test_multi_valued_keys_match_any_value(index: SqlQueryIndex) -> None:
    assert await studies(index, single("PhysiciansOfRecord", "baker^bob")) == {6}
    assert await studies(index, wild("PhysiciansOfRecord", "AD*")) == {6}
    assert await studies(index, single("ModalitiesInStudy", "CT")) == {1, 2, 3, 6, 7, 8}
    assert await studies(index, single("ModalitiesInStudy", "MR")) == {1, 4, 9}
    assert await studies(index, wild("ModalitiesInStudy", "U*")) == {5}
    assert await studies(index, single("SOPClassesInStudy", MR_IMAGE_STORAGE)) == {1, 4, 9}
    listed = cond("SOPClassesInStudy", MatchKind.LIST, US_IMAGE_STORAGE, MR_IMAGE_STORAGE)
    assert await studies(index, listed) == {1, 4, 5, 9}
    assert await patients(index, single("OtherPatientIDs", "ALT1")) == [("PID1", None)]


async def test_relational_keys_below_the_level(index: SqlQueryIndex) -> None:
    assert await studies(index, single("Modality", "MR")) == {1, 4, 9}
    assert await studies(index, single("SOPInstanceUID", uid(1, 2, 1))) == {1}
    # One descendant must match every lower key: study 1 has CT images and MR images, but
    # no CT series holding an MR image.
    assert await studies(index, single("Modality", "CT"),
                         single("SOPClassUID", MR_IMAGE_STORAGE)) == set()
    assert await studies(index, single("Modality", "MR"),
                         single("SOPClassUID", MR_IMAGE_STORAGE)) == {1, 4, 9}
    assert await patients(index, single("StudyDescription", "a_b")) == [("PID2", None)]
    assert await patients(index, single("Modality", "US")) == [("PID2", None)]
    # Multi-valued and derived keys of a lower level: EXISTS inside the relational EXISTS.
    assert await patients(index, single("PhysiciansOfRecord", "baker^bob")) == [("PID4", None)]
    assert await patients(index, single("ModalitiesInStudy", "US")) == [("PID2", None)]
    assert await patients(index, single("ModalitiesInStudy", "MR"),
                          single("StudyDescription", "CHEST")) == []  # not the same study
    assert await patients(index, single("ModalitiesInStudy", "MR"),
                          single("StudyDescription", "Chest")) == [("PID1", None)]
    ct_series = await answers(index, QueryLevel.SERIES, single("ModalitiesInStudy", "MR"),
                              single("Modality", "CT"))  # CT series of studies with MR
    assert sorted(value(a, "SeriesInstanceUID") for a in ct_series) == [uid(1, 1)]
    series = await answers(index, QueryLevel.SERIES, single("StudyInstanceUID", uid(1)),
                           single("SOPClassUID", CT_IMAGE_STORAGE))
    assert [value(a, "SeriesInstanceUID") for a in series] == [uid(1, 1)]


async def test_patient_identity_is_id_and_issuer(index: SqlQueryIndex) -> None:
    assert await patients(index, single("PatientID", "PID1")) == [
        ("PID1", None), ("PID1", "ISSUER_B")]
    assert await patients(index, single("PatientID", "PID1"),
                          single("IssuerOfPatientID", "ISSUER_B")) == [("PID1", "ISSUER_B")]
    assert await studies(index, single("PatientID", "PID1")) == {1, 2, 3}
    assert await studies(index, single("PatientID", "PID1"),
                         single("IssuerOfPatientID", "ISSUER_B")) == {3}


async def test_integer_and_image_level_keys(index: SqlQueryIndex) -> None:
    series = await answers(index, QueryLevel.SERIES, single("StudyInstanceUID", uid(1)),
                           single("SeriesNumber", "2"))
    assert [value(a, "Modality") for a in series] == ["MR"]
    images = await answers(index, QueryLevel.IMAGE, single("SeriesInstanceUID", uid(1, 1)),
                           single("InstanceNumber", "2"))
    assert [value(a, "SOPInstanceUID") for a in images] == [uid(1, 1, 2)]
    assert await studies(index, span("ContentDate", "20240102", "20240102")) == ALL


# --- hostile and unsupported identifiers ---------------------------------------------------


async def test_hostile_values_are_bound_parameters(index: SqlQueryIndex, engine: Engine) -> None:
    hostile = ["'; DROP TABLE study; --", "\" OR 1=1 --", "x' OR '1'='1", "%' OR 1=1 --",
               "A" * MAX_PATTERN_LENGTH, "ü" * (MAX_PATTERN_LENGTH - 2)]
    for text in hostile:
        assert await studies(index, single("StudyDescription", text)) == set()
        assert await studies(index, wild("StudyDescription", text[:-1] + "*")) == set()
        assert await studies(index, wild("PatientName", "*" + text[2:] + "?")) == set()
        assert await studies(index, cond("StudyInstanceUID", MatchKind.LIST, text, uid(2))) == {2}
    huge = "A" * 65536
    assert await studies(index, single("StudyDescription", huge)) == set()
    assert await studies(index, single("PatientName", huge)) == set()
    for kind in (MatchKind.SINGLE, MatchKind.LIST):
        assert await studies(index, cond("StudyInstanceUID", kind, huge)) == set()
    with pytest.raises(DataSetError, match="over 4096 characters"):
        await studies(index, wild("StudyDescription", huge + "*"))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Study)).scalar_one() == len(SPECS)


@pytest.mark.parametrize("condition", [
    single("StudyDate", "2024-01-01"),
    single("StudyTime", "25:00:00x"),
    span("StudyDate", "2024", ""),
    span("StudyDescription", "A", "B"),
    wild("StudyDate", "2024*"),
    single("SeriesNumber", "two"),
    cond("StudyInstanceUID", MatchKind.LIST),
    cond("StudyInstanceUID", MatchKind.LIST, *(["1.2"] * (MAX_LIST_VALUES + 1))),
    cond("PatientName", MatchKind.LIST, *(f"N{n}" for n in range(MAX_LIST_PATTERNS + 1))),
    cond("StudyDescription", MatchKind.LIST, "x", "A" * (MAX_PATTERN_LENGTH + 1) + "*"),
    cond("StudyDate", MatchKind.LIST, "20240101", "yesterday"),
    Condition(tag("ReferencedStudySequence"), "SQ", MatchKind.SEQUENCE,
              items=(single("ReferencedSOPInstanceUID", "1.2"),)),
    single("ProtocolName", "not a key"),
    wild("StudyDescription", "*\x00?"),  # SQLite would cut the pattern at the NUL
    cond("StudyInstanceUID", MatchKind.LIST, "1.2\x00"),
    span("StudyDate", "20240101", "", combined_with="AccessionNumber"),
])
async def test_unmatchable_conditions_raise_data_set_error(
        index: SqlQueryIndex, condition: Condition) -> None:
    with pytest.raises(DataSetError) as caught:
        await index.find(FindQuery(QueryLevel.STUDY, (condition,)), after=None, limit=10)
    assert 0 < len(caught.value.comment) <= 64


def test_matchable_keys_per_level(index: SqlQueryIndex) -> None:
    patient = index.matchable(QueryLevel.PATIENT)
    study = index.matchable(QueryLevel.STUDY)
    image = index.matchable(QueryLevel.IMAGE)
    assert {tag("PatientName"), tag("PatientID"), tag("IssuerOfPatientID"),
            tag("OtherPatientIDs")} <= patient
    assert tag("StudyDate") not in patient
    assert patient < study < index.matchable(QueryLevel.SERIES) < image
    assert {tag("ModalitiesInStudy"), tag("SOPClassesInStudy"), tag("StudyInstanceUID"),
            tag("PhysiciansOfRecord"), tag("PatientBirthDate")} <= study
    assert tag("Modality") not in study and tag("Modality") in image
    assert {tag("SOPInstanceUID"), tag("SOPClassUID"), tag("InstanceNumber")} <= image
    # Sequences are return-only (C.2.2.2.7 is not offered).
    assert tag("OtherPatientIDsSequence") not in image
    assert tag("ReferencedStudySequence") not in image


# --- the wildcard translations, against a reference matcher --------------------------------


def reference(pattern: str, text: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


def test_glob_and_like_translations_agree_with_the_standard(tmp_path: Path) -> None:
    """SQLite GLOB, and the PostgreSQL LIKE form run with SQLite's case-sensitive LIKE."""
    rng = random.Random(4)
    alphabet = "aA_%[]\\*?^=ü山-"
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.execute("PRAGMA case_sensitive_like = ON")  # as PostgreSQL's LIKE
    checked = 0
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 6)))
        text = text.replace("*", "x").replace("?", "y")  # stored values are plain text
        pattern = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 6)))
        if rng.random() < 0.5 and text:  # make matches frequent: a pattern built from the text
            pattern = "".join("?" if rng.random() < 0.3 else c for c in text)
            pattern = pattern[:2] + "*" + pattern[3:]
        expected = reference(pattern, text)
        glob, like = conn.execute(
            "SELECT ? GLOB ?, ? LIKE ? ESCAPE ?",
            (text, glob_pattern(pattern), text, like_pattern(pattern), LIKE_ESCAPE)).fetchone()
        assert (bool(glob), bool(like)) == (expected, expected), (pattern, text)
        checked += expected
    conn.close()
    assert checked > 300  # the sample exercised matches, not only misses


def test_prefix_successor() -> None:
    assert successor("smi") == "smj"
    assert successor("a\U0010ffff") == "b"
    assert successor("\U0010ffff") is None
    assert successor("a\ud7ff") == "a\ue000"  # surrogates are skipped
    assert successor("") is None
