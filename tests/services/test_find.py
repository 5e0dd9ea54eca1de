"""FindService (PS3.4 C.4.1 C-FIND SCP) against an in-memory QueryIndex and Channel.

The fake index matches in Python just enough to drive the service, and records every
FindQuery it is given, so each test can say exactly which conditions the identifier became.
Identifiers and answers are real pydicom-encoded data sets in real transfer syntaxes.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from minipacs.ports import (
    AssociationInfo,
    Condition,
    DataSetError,
    FindPage,
    FindQuery,
    JsonDataset,
    MatchKind,
    QueryLevel,
    Request,
)
from minipacs.proto.dimse import CFindRQ, CFindRSP, DimseMessage
from minipacs.proto.negotiation import AcceptedContext, Negotiated
from minipacs.proto.sop import PATIENT_ROOT_QR_FIND, STUDY_ROOT_QR_FIND
from minipacs.proto.status import Status
from minipacs.services.find import (
    SEND_BATCH,
    FindService,
    answer_extended_negotiation,
    negotiated_options,
)

AE_TITLE: Final = "MINIPACS"
CONTEXT_ID: Final = 1
UID: Final = "1.2.826.0.1.3680043.8.498.4242.70"
TAG_PATIENT_NAME: Final = 0x00100010
TAG_PATIENT_ID: Final = 0x00100020
TAG_STUDY_DATE: Final = 0x00080020
TAG_STUDY_TIME: Final = 0x00080030
TAG_STUDY_UID: Final = 0x0020000D
TAG_SERIES_UID: Final = 0x0020000E
TAG_SOP_INSTANCE_UID: Final = 0x00080018
TAG_MODALITY: Final = 0x00080060
TAG_ACCESSION: Final = 0x00080050
TAG_STUDY_DESCRIPTION: Final = 0x00081030
TAG_INSTITUTION_NAME: Final = 0x00080080
TAG_PROCEDURE_CODE_SEQUENCE: Final = 0x00081032

# What the fake index can match at each level (the level and the ones above), as the SQL
# index announces it; Study Description and Institution Name are deliberately return-only.
MATCHABLE: Final = {
    QueryLevel.PATIENT: frozenset({TAG_PATIENT_NAME, TAG_PATIENT_ID}),
    QueryLevel.STUDY: frozenset({TAG_PATIENT_NAME, TAG_PATIENT_ID, TAG_STUDY_DATE,
                                 TAG_STUDY_TIME, TAG_STUDY_UID, TAG_ACCESSION}),
}
MATCHABLE[QueryLevel.SERIES] = MATCHABLE[QueryLevel.STUDY] | {TAG_SERIES_UID, TAG_MODALITY}
MATCHABLE[QueryLevel.IMAGE] = MATCHABLE[QueryLevel.SERIES] | {TAG_SOP_INSTANCE_UID}


# --- data -------------------------------------------------------------------------------------


def study_json(n: int, *, name: str = "Doe^John", date: str = "20240105",
               description: str | None = "CT head", **extra: Any) -> dict[str, Any]:
    """An answer at STUDY level as the SQL index gives it: DICOM JSON, patient and study."""
    ds = Dataset()
    ds.PatientName = name
    ds.PatientID = f"P{n}"
    ds.StudyInstanceUID = f"{UID}.{n}"
    ds.StudyDate = date
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"A{n}"
    if description is not None:
        ds.StudyDescription = description
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds.to_json_dict()


def identifier(level: str | None, *, charset: str | list[str] | None = None,
               **keys: Any) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    if level is not None:
        ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def encode(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = transfer_syntax != ExplicitVRBigEndian
    fp.is_implicit_VR = transfer_syntax == ImplicitVRLittleEndian
    write_dataset(fp, ds)
    data = fp.getvalue()
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
    return data


def decode(data: bytes, transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        data = zlib.decompress(data, -zlib.MAX_WBITS)
    fp = DicomBytesIO(data)
    big = transfer_syntax == ExplicitVRBigEndian
    fp.is_little_endian = not big
    fp.is_implicit_VR = transfer_syntax == ImplicitVRLittleEndian
    return read_dataset(fp, fp.is_implicit_VR, not big)


# --- fakes ------------------------------------------------------------------------------------


def _strings(element: Mapping[str, Any] | None) -> list[str]:
    out = []
    for value in (element or {}).get("Value") or ():
        out.append(value.get("Alphabetic", "") if isinstance(value, dict) else str(value))
    return out


def _matches(cond: Condition, answer: JsonDataset) -> bool:
    values = _strings(answer.get(f"{cond.tag:08X}"))
    fold = str.casefold if cond.vr == "PN" else (lambda s: s)
    match cond.kind:
        case MatchKind.SINGLE | MatchKind.LIST:
            return any(fold(v) in {fold(c) for c in cond.values} for v in values)
        case MatchKind.WILDCARD:
            pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in fold(cond.values[0]))
            return any(re.fullmatch(pattern, fold(v), re.DOTALL) for v in values)
        case MatchKind.EMPTY:
            return not values
        case MatchKind.RANGE:
            low, high = cond.values
            return any((not low or v >= low[:8]) and (not high or v <= high[:8]) for v in values)
    return True


@dataclass
class FakeQueryIndex:
    """`ports.QueryIndex` over a list of answers; records every query and page asked."""

    answers: list[JsonDataset] = field(default_factory=list)
    matchable_tags: Mapping[QueryLevel, frozenset[int]] = field(default_factory=lambda: MATCHABLE)
    fail: Exception | None = None
    queries: list[FindQuery] = field(default_factory=list)
    pages: list[tuple[object | None, int]] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def matchable(self, level: QueryLevel) -> frozenset[int]:
        return self.matchable_tags[level]

    def _matching(self, query: FindQuery) -> list[JsonDataset]:
        return [a for a in self.answers if all(_matches(c, a) for c in query.conditions)]

    async def find(self, query: FindQuery, *, after: object | None, limit: int) -> FindPage:
        if self.fail is not None:
            raise self.fail
        self.queries.append(query)
        self.pages.append((after, limit))
        start = 0 if after is None else int(after)  # type: ignore[call-overload]
        found = self._matching(query)[start:start + limit]
        end = start + len(found)
        return FindPage(tuple(found), end if end < len(self._matching(query)) else None)

    async def count(self, query: FindQuery, *, cap: int) -> int:
        self.counts.append(cap)
        return min(len(self._matching(query)), cap + 1)


class FakeStream:
    """`ports.DataStream` over bytes, handed out in 16 KiB fragments."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), 16384):
            yield self.data[start:start + 16384]
        self.read = True

    async def read_all(self, limit: int) -> bytes:
        out = b"".join([chunk async for chunk in self])
        if len(out) > limit:
            raise ValueError(f"data set larger than {limit} bytes")
        return out

    async def drain(self) -> None:
        async for _ in self:
            pass


@dataclass
class Sent:
    message: CFindRSP
    dataset: bytes | None


class FakeChannel:
    """The part of `ports.Channel` a C-FIND handler uses: info, and send for pendings."""

    def __init__(self, sop_class: str, transfer_syntax: str, extended: bytes = b"",
                 cancel_after: int | None = None) -> None:
        context = AcceptedContext(CONTEXT_ID, sop_class, transfer_syntax)
        self._info = AssociationInfo("VIEWER", AE_TITLE, "192.0.2.7", 40000, Negotiated(
            {CONTEXT_ID: context}, 16384, extended={sop_class: extended} if extended else {}))
        self.sent: list[Sent] = []
        self.batches: list[int] = []  # messages per send_many
        self.cancel_after = cancel_after
        self.request: Request | None = None

    @property
    def info(self) -> AssociationInfo:
        return self._info

    async def send(self, context_id: int, message: DimseMessage,
                   dataset: bytes | AsyncIterable[bytes] | None = None) -> None:
        assert context_id == CONTEXT_ID
        assert isinstance(message, CFindRSP) and isinstance(dataset, bytes | None)
        self.sent.append(Sent(message, dataset))
        if self.cancel_after is not None and len(self.sent) == self.cancel_after:
            assert self.request is not None
            self.request.cancelled.set()  # as the connection does on C-CANCEL-RQ
        await asyncio.sleep(0)

    async def send_many(self, context_id: int,
                        messages: Sequence[tuple[DimseMessage, bytes | None]]) -> None:
        self.batches.append(len(messages))
        for message, dataset in messages:
            await self.send(context_id, message, dataset)


@dataclass
class Result:
    final: CFindRSP
    pendings: list[Sent]
    transfer_syntax: str

    @property
    def answers(self) -> list[Dataset]:
        return [decode(s.dataset or b"", self.transfer_syntax) for s in self.pendings]

    @property
    def statuses(self) -> list[int]:
        return [s.message.status for s in self.pendings]


async def run_find(index: FakeQueryIndex, ident: Dataset | bytes, *,
                   sop_class: str = STUDY_ROOT_QR_FIND,
                   transfer_syntax: str = ExplicitVRLittleEndian, extended: bytes = b"",
                   cancel_after: int | None = None, max_results: int = 0,
                   page_size: int = 100, strict_hierarchy: bool = False,
                   batches: list[int] | None = None) -> Result:
    channel = FakeChannel(sop_class, transfer_syntax, extended, cancel_after)
    if batches is not None:
        channel.batches = batches  # the caller sees how the pendings were written
    data = ident if isinstance(ident, bytes) else encode(ident, transfer_syntax)
    message = CFindRQ(message_id=11, affected_sop_class_uid=sop_class)
    request = Request(AcceptedContext(CONTEXT_ID, sop_class, transfer_syntax), message,
                      FakeStream(data))
    channel.request = request
    service = FindService(index, ae_title=AE_TITLE, max_results=max_results,
                          page_size=page_size, strict_hierarchy=strict_hierarchy)
    outcome = await service(channel, request)
    final = outcome.message
    assert isinstance(final, CFindRSP) and outcome.dataset is None
    assert final.message_id_being_responded_to == 11
    assert final.affected_sop_class_uid == sop_class
    for sent in channel.sent:
        assert sent.message.has_dataset and sent.dataset
        assert sent.message.message_id_being_responded_to == 11
    return Result(final, channel.sent, transfer_syntax)


def conditions(index: FakeQueryIndex) -> dict[int, Condition]:
    (query,) = {q: None for q in index.queries}  # one query, possibly asked page by page
    return {c.tag: c for c in query.conditions}


def assert_refused(result: Result, status: Status, *words: str) -> None:
    assert result.final.status == status, hex(result.final.status)
    assert result.pendings == []
    comment = result.final.error_comment or ""
    assert 0 < len(comment) <= 64
    for word in words:
        assert word in comment, comment


# --- answers ----------------------------------------------------------------------------------


async def test_study_query_answers_every_requested_key_then_success() -> None:
    index = FakeQueryIndex([study_json(1), study_json(2, name="Roe^Jane", description=None)])
    ident = identifier("STUDY", PatientName="DOE*", StudyDate="", StudyDescription="",
                       ModalitiesInStudy="", StudyInstanceUID="")
    result = await run_find(index, ident)
    assert result.final.status == Status.SUCCESS
    assert result.statuses == [Status.PENDING]
    (answer,) = result.answers
    assert answer.QueryRetrieveLevel == "STUDY"
    assert answer.RetrieveAETitle == AE_TITLE
    assert answer.PatientName == "Doe^John"
    assert answer.StudyDate == "20240105"
    assert answer.StudyDescription == "CT head"
    assert answer.StudyInstanceUID == f"{UID}.1"
    # A requested key the entity has no value for is there, zero length (C.4.1.1.3.2).
    assert "ModalitiesInStudy" in answer and answer["ModalitiesInStudy"].is_empty
    # Not requested, not answered; no character set for a plain ASCII answer.
    assert "AccessionNumber" not in answer and "PatientID" not in answer
    assert "SpecificCharacterSet" not in answer
    assert conditions(index) == {TAG_PATIENT_NAME: Condition(
        TAG_PATIENT_NAME, "PN", MatchKind.WILDCARD, ("DOE*",))}


async def test_no_match_is_a_single_success() -> None:
    result = await run_find(FakeQueryIndex([study_json(1)]),
                            identifier("STUDY", PatientID="NOBODY"))
    assert result.final.status == Status.SUCCESS
    assert result.pendings == []


async def test_answers_are_paged_one_response_per_entity() -> None:
    index = FakeQueryIndex([study_json(n) for n in range(7)])
    result = await run_find(index, identifier("STUDY", StudyInstanceUID=""), page_size=3)
    assert [a.StudyInstanceUID for a in result.answers] == [f"{UID}.{n}" for n in range(7)]
    assert index.pages == [(None, 3), (3, 3), (6, 3)]


async def test_patient_root_series_answer_carries_the_unique_keys_above() -> None:
    answer = study_json(1, Modality="CT", SeriesInstanceUID=f"{UID}.1.1")
    index = FakeQueryIndex([answer])
    ident = identifier("SERIES", PatientID="P1", StudyInstanceUID=f"{UID}.1", Modality="")
    result = await run_find(index, ident, sop_class=PATIENT_ROOT_QR_FIND)
    (got,) = result.answers
    assert (got.PatientID, got.StudyInstanceUID, got.SeriesInstanceUID, got.Modality) == (
        "P1", f"{UID}.1", f"{UID}.1.1", "CT")
    assert got.QueryRetrieveLevel == "SERIES"


@pytest.mark.parametrize("transfer_syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian,
                                             ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
async def test_identifier_and_answers_use_the_context_transfer_syntax(
        transfer_syntax: str) -> None:
    index = FakeQueryIndex([study_json(1)])
    ident = identifier("STUDY", PatientID="P1", PatientName="", NumberOfStudyRelatedInstances="")
    result = await run_find(index, ident, transfer_syntax=transfer_syntax)
    (answer,) = result.answers
    assert answer.PatientName == "Doe^John"
    assert answer.PatientID == "P1"
    assert conditions(index)[TAG_PATIENT_ID].values == ("P1",)


async def test_instance_availability_is_online_when_asked() -> None:
    index = FakeQueryIndex([study_json(1)])
    result = await run_find(index, identifier("STUDY", InstanceAvailability=""))
    assert result.answers[0].InstanceAvailability == "ONLINE"


async def test_sequence_return_key_returns_the_requested_item_keys() -> None:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "X1", "99T", "Head"
    index = FakeQueryIndex([study_json(1, ProcedureCodeSequence=[code])])
    item = Dataset()
    item.CodeValue = ""
    item.CodeMeaning = ""
    result = await run_find(index, identifier("STUDY", ProcedureCodeSequence=[item]))
    (answer,) = result.answers
    (got,) = answer.ProcedureCodeSequence
    assert (got.CodeValue, got.CodeMeaning) == ("X1", "Head")
    assert "CodingSchemeDesignator" not in got  # not requested
    assert result.statuses == [Status.PENDING]


# --- matching types ----------------------------------------------------------------------------


async def test_each_matching_type_becomes_its_condition() -> None:
    index = FakeQueryIndex()
    ident = identifier("STUDY", PatientName="SMITH^JOHN^^", PatientID='""',
                       StudyDate="20240101-20240131", StudyTime="1800",
                       StudyInstanceUID=f"{UID}.1\\{UID}.2", AccessionNumber="*")
    await run_find(index, ident)
    got = conditions(index)
    assert got[TAG_PATIENT_NAME] == Condition(TAG_PATIENT_NAME, "PN", MatchKind.SINGLE,
                                              ("SMITH^JOHN",))
    assert got[TAG_PATIENT_ID].kind is MatchKind.EMPTY  # C.2.2.2.7 ""
    assert got[TAG_STUDY_DATE] == Condition(TAG_STUDY_DATE, "DA", MatchKind.RANGE,
                                            ("20240101", "20240131"))
    # A TM value covers its precision (C.2.2.2.5.2).
    assert got[TAG_STUDY_TIME] == Condition(TAG_STUDY_TIME, "TM", MatchKind.RANGE,
                                            ("180000.000000", "180059.999999"))
    assert got[TAG_STUDY_UID] == Condition(TAG_STUDY_UID, "UI", MatchKind.LIST,
                                           (f"{UID}.1", f"{UID}.2"))
    assert TAG_ACCESSION not in got  # "*" alone is universal matching: no condition


@pytest.mark.parametrize(("keyword", "vr", "value", "expected"), [
    ("AccessionNumber", "SH", "A1\\A3 ", ("A1", "A3")),
    ("PatientID", "LO", "P1\\ P2", ("P1", "P2")),
    ("PatientName", "PN", "SMITH^JOHN^^\\doe*", ("SMITH^JOHN", "doe*")),
    ("Modality", "CS", "CT\\MR\\CT", ("CT", "MR")),
    ("RetrieveAETitle", "AE", "AE1\\AE2", None),  # never matched (C.4.1.1.3.1)
    ("SeriesNumber", "IS", "1\\+2", ("1", "+2")),
    ("PatientWeight", "DS", "70.5\\8E1", ("70.5", "8E1")),
    ("StudyInstanceUID", "UI", f"{UID}.1\\{UID}.2", (f"{UID}.1", f"{UID}.2")),
    ("StudyDate", "DA", "20240101\\2024.02.01", ("20240101", "20240201")),
], ids=["SH", "LO", "PN", "CS", "AE", "IS", "DS", "UI", "DA"])
async def test_value_lists_become_one_list_condition(keyword: str, vr: str, value: str,
                                                     expected: tuple[str, ...] | None) -> None:
    tag = Dataset()
    setattr(tag, keyword, "")
    (key,) = tag.keys()
    matchable = {level: tags | {int(key)} for level, tags in MATCHABLE.items()}
    index = FakeQueryIndex(matchable_tags=matchable)
    level = "SERIES" if keyword in ("Modality", "SeriesNumber") else "STUDY"
    extra = {"StudyInstanceUID": f"{UID}.1"} if level == "SERIES" else {}
    result = await run_find(index, identifier(level, **extra, **{keyword: value}),
                            extended=b"\x01")
    assert result.final.status == Status.SUCCESS
    got = conditions(index).get(int(key))
    if expected is None:
        assert got is None
    else:
        assert got == Condition(int(key), vr, MatchKind.LIST, expected)


@pytest.mark.parametrize(("value", "expected"), [
    ("20240101-", ("20240101", "")), ("-20240101", ("", "20240101")),
    ("2024.01.01-2024.02.01", ("20240101", "20240201")),
])
async def test_open_date_ranges(value: str, expected: tuple[str, str]) -> None:
    index = FakeQueryIndex()
    await run_find(index, identifier("STUDY", StudyDate=value))
    assert conditions(index)[TAG_STUDY_DATE].values == expected


async def test_combined_date_time_only_when_negotiated() -> None:
    keys = {"StudyDate": "20060705-20060707", "StudyTime": "1000-1800"}
    plain = FakeQueryIndex()
    await run_find(plain, identifier("STUDY", **keys))
    assert set(conditions(plain)) == {TAG_STUDY_DATE, TAG_STUDY_TIME}
    combined = FakeQueryIndex()
    await run_find(combined, identifier("STUDY", **keys), extended=bytes([0, 1]))
    assert conditions(combined) == {TAG_STUDY_DATE: Condition(
        TAG_STUDY_DATE, "DA", MatchKind.RANGE,
        ("20060705100000.000000", "20060707180059.999999"), combined_with=TAG_STUDY_TIME)}


async def test_combined_date_time_needs_the_same_range_form() -> None:
    index = FakeQueryIndex()
    await run_find(index, identifier("STUDY", StudyDate="20060705-", StudyTime="-1800"),
                   extended=bytes([0, 1]))
    got = conditions(index)
    assert got[TAG_STUDY_DATE].combined_with is None
    assert got[TAG_STUDY_TIME].values == ("", "180059.999999")


# --- 0xA900: the identifier does not match the SOP class ------------------------------------


@pytest.mark.parametrize(("sop_class", "keys", "named"), [
    (PATIENT_ROOT_QR_FIND, {"QueryRetrieveLevel": "STUDY"}, "PatientID"),
    (PATIENT_ROOT_QR_FIND, {"QueryRetrieveLevel": "SERIES", "PatientID": "P1"},
     "StudyInstanceUID"),
    (PATIENT_ROOT_QR_FIND, {"QueryRetrieveLevel": "IMAGE", "PatientID": "P1",
                            "StudyInstanceUID": f"{UID}.1"}, "SeriesInstanceUID"),
    (STUDY_ROOT_QR_FIND, {"QueryRetrieveLevel": "SERIES"}, "StudyInstanceUID"),
    (STUDY_ROOT_QR_FIND, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": f"{UID}.1"},
     "SeriesInstanceUID"),
    # A unique key above must be one value, not a wildcard or a list (C.4.1.3.1.1).
    (PATIENT_ROOT_QR_FIND, {"QueryRetrieveLevel": "STUDY", "PatientID": "P*"}, "PatientID"),
    (STUDY_ROOT_QR_FIND, {"QueryRetrieveLevel": "SERIES",
                          "StudyInstanceUID": f"{UID}.1\\{UID}.2"}, "StudyInstanceUID"),
    (STUDY_ROOT_QR_FIND, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": ""},
     "StudyInstanceUID"),
], ids=["P-study", "P-series", "P-image", "S-series", "S-image", "wildcard", "list", "empty"])
async def test_missing_unique_key_above_is_a900_when_strict(sop_class: str, keys: dict[str, str],
                                                            named: str) -> None:
    index = FakeQueryIndex([study_json(1)])
    result = await run_find(index, identifier(None, **keys), sop_class=sop_class,
                            strict_hierarchy=True)
    assert_refused(result, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, named)
    assert index.queries == []


async def test_lenient_hierarchy_answers_without_the_unique_keys_above() -> None:
    # A workstation's series query across studies (Orthanc's REST /query sends it).
    index = FakeQueryIndex([study_json(1, Modality="MR"), study_json(2, Modality="CT")])
    result = await run_find(index, identifier("SERIES", Modality="MR", SeriesInstanceUID=""))
    assert result.final.status == Status.SUCCESS
    assert [str(a.StudyInstanceUID) for a in result.answers] == [f"{UID}.1"]
    assert set(conditions(index)) == {TAG_MODALITY}
    # A wildcard or a list above the level is matched as such (as if relational).
    index = FakeQueryIndex([study_json(1), study_json(2), study_json(3)])
    await run_find(index, identifier("IMAGE", StudyInstanceUID=f"{UID}.1\\{UID}.3",
                                     SOPInstanceUID=""))
    assert conditions(index)[TAG_STUDY_UID].kind is MatchKind.LIST
    # Keys below the level still need relational queries; PATIENT on Study Root stays out.
    below = await run_find(FakeQueryIndex(), identifier("STUDY", Modality="CT"))
    assert_refused(below, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "Modality")
    patient = await run_find(FakeQueryIndex(), identifier("PATIENT", PatientID=""))
    assert_refused(patient, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "PATIENT")


@pytest.mark.parametrize(("sop_class", "keys", "named"), [
    (PATIENT_ROOT_QR_FIND, {"QueryRetrieveLevel": "PATIENT", "StudyDate": ""}, "StudyDate"),
    (PATIENT_ROOT_QR_FIND, {"QueryRetrieveLevel": "STUDY", "PatientID": "P1",
                            "Modality": "CT"}, "Modality"),
    (PATIENT_ROOT_QR_FIND, {"QueryRetrieveLevel": "SERIES", "PatientID": "P1",
                            "StudyInstanceUID": f"{UID}.1", "InstanceNumber": ""},
     "InstanceNumber"),
    (STUDY_ROOT_QR_FIND, {"QueryRetrieveLevel": "STUDY", "SeriesInstanceUID": ""},
     "SeriesInstanceUID"),
    (STUDY_ROOT_QR_FIND, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": f"{UID}.1",
                          "SOPInstanceUID": ""}, "SOPInstanceUID"),
], ids=["P-patient", "P-study", "P-series", "S-study", "S-series"])
async def test_key_below_the_level_is_a900_without_relational(
        sop_class: str, keys: dict[str, str], named: str) -> None:
    result = await run_find(FakeQueryIndex(), identifier(None, **keys), sop_class=sop_class)
    assert_refused(result, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, named, "below")
    assert result.final.offending_element is not None


async def test_relational_allows_keys_below_and_missing_unique_keys() -> None:
    index = FakeQueryIndex([study_json(1, Modality="CT")])
    ident = identifier("SERIES", Modality="CT", SOPInstanceUID=f"{UID}.9")
    for extended in (b"", bytes([0])):  # not negotiated, or turned down: hierarchical
        refused = await run_find(FakeQueryIndex(), ident, extended=extended)
        assert refused.final.status == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    result = await run_find(index, ident, extended=bytes([1]))
    assert result.final.status == Status.SUCCESS
    assert set(conditions(index)) == {TAG_MODALITY, TAG_SOP_INSTANCE_UID}


@pytest.mark.parametrize(("sop_class", "level", "words"), [
    (STUDY_ROOT_QR_FIND, None, ("missing",)),
    (STUDY_ROOT_QR_FIND, "PATIENT", ("PATIENT", "Study Root")),
    (PATIENT_ROOT_QR_FIND, "WORKLIST", ("WORKLIST",)),
])
async def test_bad_query_retrieve_level_is_a900(sop_class: str, level: str | None,
                                                words: tuple[str, ...]) -> None:
    result = await run_find(FakeQueryIndex(), identifier(level, PatientName="X"),
                            sop_class=sop_class)
    assert_refused(result, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, *words)


@pytest.mark.parametrize(("keys", "named"), [
    ({"StudyDate": "2024*"}, "StudyDate"),  # C.2.2.2.4: no wildcards on DA
    ({"StudyDate": "20241340"}, "StudyDate"),
    ({"StudyTime": "25"}, "StudyTime"),
    ({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
    ({"StudyInstanceUID": "1.2.*"}, "StudyInstanceUID"),
    ({"AccessionNumber": "A" * 70000}, "AccessionNumber"),
    ({"StudyDate": "20240101\\2024*"}, "StudyDate"),
    ({"StudyDate": "20240101\\20240102-"}, "StudyDate"),
    ({"StudyTime": "10\\11"}, "StudyTime"),
    ({"AccessionNumber": "A1\\\"\""}, "AccessionNumber"),
], ids=["wildcard-DA", "bad-DA", "bad-TM", "bad-UI", "wildcard-UI", "64KiB", "list-wildcard",
        "list-range", "list-TM", "list-empty-value"])
async def test_bad_values_are_a900_naming_the_key(keys: dict[str, str], named: str) -> None:
    index = FakeQueryIndex()
    result = await run_find(index, identifier("STUDY", **keys))
    assert_refused(result, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, named)
    assert index.queries == []


async def test_sql_metacharacters_are_just_values() -> None:
    hostile = "x'; DROP TABLE study; --%_\\"
    index = FakeQueryIndex([study_json(1)])
    result = await run_find(index, identifier("STUDY", PatientID=hostile.replace("\\", "")))
    assert result.final.status == Status.SUCCESS
    assert conditions(index)[TAG_PATIENT_ID].values == (hostile.replace("\\", ""),)


# --- 0xC000: unable to process ----------------------------------------------------------------


@pytest.mark.parametrize(("data", "transfer_syntax"), [
    (b"", ExplicitVRLittleEndian),
    (b"\x08\x00\x52\x00CS\x06\x00ST", ExplicitVRLittleEndian),  # truncated value
    (b"garbage that is not a data set at all", ExplicitVRLittleEndian),
    (b"\xff" * 64, ExplicitVRLittleEndian),
    (b"not deflate data", DeflatedExplicitVRLittleEndian),
    # Found by scripts/fuzz: a VR pydicom does not know, inside a sequence item (converted
    # lazily, it raised NotImplementedError in the parser: 0110 and a traceback).
    (b"\x08\x00\x52\x00CS\x06\x00STUDY "  # QueryRetrieveLevel
     b"\x08\x00\x10\x11SQ\x00\x00\x12\x00\x00\x00"  # Referenced Study Sequence, 18 bytes
     b"\xfe\xff\x00\xe0\x0a\x00\x00\x00"  # its item, 10 bytes
     b"\x08\x00\x55\x11U\x00\x02\x001\x00", ExplicitVRLittleEndian),  # VR "U\0"
], ids=["empty", "truncated", "text", "ff", "bad-deflate", "bad-vr-in-item"])
async def test_undecodable_identifier_is_c000(data: bytes, transfer_syntax: str) -> None:
    result = await run_find(FakeQueryIndex(), data, transfer_syntax=transfer_syntax)
    assert_refused(result, Status.UNABLE_TO_PROCESS)


async def test_deflate_bomb_is_c000_without_inflating_it() -> None:
    bomb = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    data = bomb.compress(encode(identifier("STUDY")) + bytes(64 << 20)) + bomb.flush()
    result = await run_find(FakeQueryIndex(), data,
                            transfer_syntax=DeflatedExplicitVRLittleEndian)
    assert_refused(result, Status.UNABLE_TO_PROCESS, "inflates")


async def test_index_refusing_a_condition_is_c000() -> None:
    index = FakeQueryIndex(fail=DataSetError("(0008,0020): not a date"))
    result = await run_find(index, identifier("STUDY", StudyDate="20240101"))
    assert_refused(result, Status.UNABLE_TO_PROCESS, "not a date")


async def test_index_failure_is_c000_not_a_crash() -> None:
    index = FakeQueryIndex(fail=RuntimeError("database is locked"))
    result = await run_find(index, identifier("STUDY", StudyDate="20240101"))
    assert_refused(result, Status.UNABLE_TO_PROCESS, "RuntimeError")


# --- 0xFF01: optional keys not supported ----------------------------------------------------


async def test_value_on_a_return_only_key_answers_ff01() -> None:
    index = FakeQueryIndex([study_json(1)])
    result = await run_find(index, identifier("STUDY", StudyDescription="CT*",
                                              PatientName=""))
    assert result.final.status == Status.SUCCESS
    assert result.statuses == [Status.PENDING_WARNING]
    assert result.answers[0].StudyDescription == "CT head"  # still returned
    assert TAG_STUDY_DESCRIPTION not in conditions(index)


async def test_private_key_is_omitted_with_ff01() -> None:
    ident = identifier("STUDY", PatientName="")
    ident.add_new(0x00090010, "LO", "ACME")
    ident.add_new(0x00091001, "LO", "")
    result = await run_find(FakeQueryIndex([study_json(1)]), ident)
    assert result.statuses == [Status.PENDING_WARNING]
    assert 0x00091001 not in result.answers[0]


async def test_sequence_matching_not_offered_answers_ff01() -> None:
    item = Dataset()
    item.CodeValue = "X1"
    index = FakeQueryIndex([study_json(1)])
    result = await run_find(index, identifier("STUDY", ProcedureCodeSequence=[item]))
    assert result.statuses == [Status.PENDING_WARNING]
    assert TAG_PROCEDURE_CODE_SEQUENCE not in conditions(index)


async def test_unknown_level_key_is_returned_not_refused() -> None:
    # Institution Name is "another attribute" of no Q/R level table: never refused as below.
    index = FakeQueryIndex([study_json(1)])
    result = await run_find(index, identifier("STUDY", InstitutionName=""))
    assert result.statuses == [Status.PENDING]
    assert result.answers[0]["InstitutionName"].is_empty


# --- cancel and the result limit --------------------------------------------------------------


async def test_cancel_stops_the_stream_with_fe00() -> None:
    index = FakeQueryIndex([study_json(n) for n in range(50)])
    result = await run_find(index, identifier("STUDY", StudyInstanceUID=""), cancel_after=3,
                            page_size=10)
    assert result.final.status == Status.CANCEL
    assert len(result.pendings) == 10  # the batch under way when the C-CANCEL came
    assert len(index.pages) == 1  # no page read after the cancel


async def test_pending_responses_go_out_in_batches() -> None:
    index = FakeQueryIndex([study_json(n) for n in range(2 * SEND_BATCH + 3)])
    channel_batches: list[int] = []
    result = await run_find(index, identifier("STUDY", StudyInstanceUID=""),
                            batches=channel_batches)
    assert len(result.pendings) == 2 * SEND_BATCH + 3
    assert channel_batches == [SEND_BATCH, SEND_BATCH, 3]  # one write each, not one per answer
    cancelled = await run_find(index, identifier("STUDY", StudyInstanceUID=""),
                               cancel_after=1)
    assert len(cancelled.pendings) == SEND_BATCH  # stopped at the first batch's end


async def test_max_results_refuses_before_any_pending() -> None:
    index = FakeQueryIndex([study_json(n) for n in range(5)])
    result = await run_find(index, identifier("STUDY", StudyInstanceUID=""), max_results=4)
    assert_refused(result, Status.OUT_OF_RESOURCES, "more than 4 matches")
    assert index.counts == [4]
    assert index.queries == []


async def test_max_results_at_the_limit_answers_all() -> None:
    index = FakeQueryIndex([study_json(n) for n in range(4)])
    result = await run_find(index, identifier("STUDY", StudyInstanceUID=""), max_results=4)
    assert result.final.status == Status.SUCCESS
    assert len(result.pendings) == 4


# --- character sets ---------------------------------------------------------------------------

JAPANESE: Final = "Yamada^Tarou=山田^太郎=やまだ^たろう"
ISO2022_JP: Final = ["ISO 2022 IR 6", "ISO 2022 IR 87"]


async def test_latin1_query_is_decoded_and_answered_in_latin1() -> None:
    index = FakeQueryIndex([study_json(1, name="Müller^Jürgen"), study_json(2)])
    ident = identifier("STUDY", charset="ISO_IR 100", PatientName="müller*")
    raw = encode(ident)
    assert "müller".encode("latin-1") in raw
    result = await run_find(index, raw)
    assert conditions(index)[TAG_PATIENT_NAME].values == ("müller*",)
    (sent,) = result.pendings
    assert "Müller^Jürgen".encode("latin-1") in (sent.dataset or b"")
    answer = result.answers[0]
    assert answer.SpecificCharacterSet == "ISO_IR 100"
    assert answer.PatientName == "Müller^Jürgen"


async def test_answer_that_does_not_fit_the_query_charset_is_utf8() -> None:
    index = FakeQueryIndex([study_json(1, name=JAPANESE)])
    result = await run_find(index, identifier("STUDY", charset="ISO_IR 100", PatientName=""))
    (sent,) = result.pendings
    assert "山田".encode() in (sent.dataset or b"")
    answer = result.answers[0]
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert answer.PatientName == JAPANESE


async def test_non_ascii_answer_to_a_default_charset_query_is_utf8() -> None:
    index = FakeQueryIndex([study_json(1, name="Ñúñez^Ana")])
    result = await run_find(index, identifier("STUDY", PatientName=""))
    answer = result.answers[0]
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert answer.PatientName == "Ñúñez^Ana"


async def test_japanese_query_round_trip_in_iso2022() -> None:
    index = FakeQueryIndex([study_json(1, name=JAPANESE), study_json(2)])
    ident = identifier("STUDY", charset=ISO2022_JP, PatientName="Yamada^Tarou=山田^太郎")
    raw = encode(ident)
    assert b"\x1b$B" in raw  # JIS X 0208 escape sequence on the wire
    result = await run_find(index, raw)
    assert conditions(index)[TAG_PATIENT_NAME].values == ("Yamada^Tarou=山田^太郎",)
    index.answers = [study_json(1, name=JAPANESE)]
    index.queries.clear()
    result = await run_find(index, identifier("STUDY", charset=ISO2022_JP, PatientName=""))
    (sent,) = result.pendings
    assert b"\x1b$B" in (sent.dataset or b"")
    answer = result.answers[0]
    assert list(answer.SpecificCharacterSet) == ISO2022_JP
    assert answer.PatientName == JAPANESE


async def test_unknown_query_charset_answers_in_utf8() -> None:
    index = FakeQueryIndex([study_json(1, name="Ébène^Zoé")])
    result = await run_find(index, identifier("STUDY", charset="ISO_IR 999", PatientName=""))
    assert result.answers[0].SpecificCharacterSet == "ISO_IR 192"


# --- extended negotiation ---------------------------------------------------------------------


@pytest.mark.parametrize(("proposed", "answered"), [
    (b"\x01", b"\x01"),
    (b"\x01\x01", b"\x01\x01"),
    (b"\x00\x01", b"\x00\x01"),
    (b"\x01\x01\x01\x01\x01", b"\x01\x01\x00\x00\x00"),  # fuzzy, timezone, enhanced: no
    (b"\x02\x01", b"\x00\x01"),  # only the value 1 asks for an option
])
def test_extended_negotiation_answers_byte_for_byte(proposed: bytes, answered: bytes) -> None:
    assert answer_extended_negotiation(proposed) == answered


def test_extended_negotiation_without_bytes_is_not_answered() -> None:
    assert answer_extended_negotiation(b"") is None


@pytest.mark.parametrize(("agreed", "options"), [
    (b"", (False, False)), (b"\x01", (True, False)), (b"\x00\x01", (False, True)),
    (b"\x01\x01\x00", (True, True)),
])
def test_negotiated_options_read_from_the_association(agreed: bytes,
                                                      options: tuple[bool, bool]) -> None:
    channel = FakeChannel(STUDY_ROOT_QR_FIND, ExplicitVRLittleEndian, agreed)
    assert negotiated_options(channel, STUDY_ROOT_QR_FIND) == options  # type: ignore[arg-type]
