"""C-FIND SCP over real sockets: DCMTK findscu and pynetdicom against the whole server.

The server (`app.open_server`, SQL index on a real SQLite file) is populated by C-STORE from
pynetdicom with small generated data sets: five patients whose names need ASCII, Latin-1,
UTF-8 and ISO 2022 Japanese, and one with SQL meta-characters in its ID. The cancel tests
fill the index directly (1,500 instances) so that a stream is long enough to be cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    UltrasoundImageStorage,
)

from minipacs.app.daemon import open_server
from minipacs.index import SqlIndex
from minipacs.index.engine import make_engine
from minipacs.index.extract import read_attributes
from minipacs.index.migrate import upgrade
from minipacs.net.client import association
from minipacs.ports import InstanceRecord, StoredFile
from minipacs.proto.dimse import CEchoRQ, CFindRQ, CFindRSP
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.sop import PATIENT_ROOT_QR_FIND, STUDY_ROOT_QR_FIND, VERIFICATION
from minipacs.proto.status import Status
from tests.support import (
    LOOPBACK,
    TEST_LIMITS,
    WAIT,
    encode_implicit_le,
    make_config,
    pynetdicom_ae,
    pynetdicom_find,
    run_dcmtk,
)

SERVER_AE: Final = "MINIPACS"
ROOT: Final = "1.2.826.0.1.3680043.8.498.4242.80"
ISO2022_JP: Final = ["", "ISO 2022 IR 87"]
JAPANESE: Final = "Yamada^Tarou=山田^太郎=やまだ^たろう"
HOSTILE_ID: Final = "PID-5'; DROP TABLE patient; --"
MODELS: Final = {"P": PATIENT_ROOT_QR_FIND, "S": STUDY_ROOT_QR_FIND}
BULK: Final = 1500  # instances in the one series the cancel tests stream


# --- the population -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Study:
    patient_id: str
    name: str
    charset: str | list[str] | None
    number: int
    date: str
    time: str
    series: tuple[tuple[str, int], ...]  # (modality, instances)


STUDIES: Final = (
    Study("PID-1", "Doe^John", None, 1, "20240105", "101500", (("CT", 2), ("MR", 1))),
    Study("PID-1", "Doe^John", None, 2, "20240220", "153000", (("MR", 1),)),
    Study("PID-2", "Müller^Jürgen", "ISO_IR 100", 3, "20231231", "080000", (("CT", 1),)),
    Study("PID-3", "Ñúñez^Zoë", "ISO_IR 192", 4, "20240301", "120000", (("US", 1),)),
    Study("PID-4", JAPANESE, ISO2022_JP, 5, "20240310", "090000", (("CT", 1),)),
    Study(HOSTILE_ID, "O'Brien%_^Robert", None, 6, "20220101", "000000", (("CT", 1),)),
)
SERIES_DESCRIPTIONS: Final = ("Scout", "Thorax 1mm")  # by series number
SOP_CLASSES: Final = {"CT": CTImageStorage, "MR": MRImageStorage, "US": UltrasoundImageStorage}


def study_uid(number: int) -> str:
    return f"{ROOT}.{number}"


def series_uid(number: int, series: int) -> str:
    return f"{ROOT}.{number}.{series}"


def instance_uid(number: int, series: int, instance: int) -> str:
    return f"{ROOT}.{number}.{series}.{instance}"


def make_instance(study: Study, series: int, modality: str, instance: int) -> Dataset:
    ds = Dataset()
    if study.charset is not None:
        ds.SpecificCharacterSet = study.charset
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.SOPInstanceUID = instance_uid(study.number, series, instance)
    ds.StudyInstanceUID = study_uid(study.number)
    ds.SeriesInstanceUID = series_uid(study.number, series)
    ds.PatientName = study.name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.AccessionNumber = f"ACC{study.number}"
    ds.StudyID = f"S{study.number}"
    ds.StudyDescription = f"study {study.number}"
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesNumber = series
    ds.SeriesDescription = SERIES_DESCRIPTIONS[(series - 1) % len(SERIES_DESCRIPTIONS)]
    ds.InstanceNumber = instance
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def population() -> list[Dataset]:
    return [make_instance(study, series, modality, instance)
            for study in STUDIES
            for series, (modality, count) in enumerate(study.series, start=1)
            for instance in range(1, count + 1)]


def store_all(port: int, datasets: list[Dataset]) -> None:
    """pynetdicom C-STOREs every data set on one association (blocking)."""
    ae = pynetdicom_ae("STORESCU")
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, port, ae_title=SERVER_AE)
    assert assoc.is_established
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status and status.Status == Status.SUCCESS, status
    finally:
        assoc.release()


@contextlib.asynccontextmanager
async def server(tmp_path: Path, **sections: Any) -> AsyncIterator[int]:
    config = make_config(tmp_path, ae_title=SERVER_AE, limits=TEST_LIMITS,
                         storage={"min_free_mb": 0}, **sections)
    async with asyncio.timeout(WAIT), open_server(config) as running:
        yield running.port


@pytest.fixture
async def pacs(tmp_path: Path, db_url: str) -> AsyncIterator[int]:
    """The server, listening, with the population stored through C-STORE (each backend)."""
    async with server(tmp_path, database={"url": db_url}) as port:
        await asyncio.to_thread(store_all, port, population())
        yield port


async def bulk_load(tmp_path: Path, count: int) -> None:
    """`count` instances of one CT series written straight into the index (no files)."""
    url = f"sqlite:///{tmp_path / 'index.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    study = Study("BULK-1", "Bulk^Patient", None, 9, "20240401", "100000", ())
    try:
        async with SqlIndex(engine) as index:
            records = []
            for n in range(1, count + 1):
                ds = make_instance(study, 1, "CT", n)
                attrs = read_attributes(io.BytesIO(encode_implicit_le(ds)),
                                        ImplicitVRLittleEndian)
                stored = StoredFile(f"00/00/{n:032d}.dcm", 100, "sha256:00", 0)
                records.append(InstanceRecord(attrs, stored, ImplicitVRLittleEndian, "BULK",
                                              SERVER_AE, datetime.now(UTC)))
            await asyncio.gather(*(index.add_instance(r) for r in records))
    finally:
        engine.dispose()


# --- peers --------------------------------------------------------------------------------


@dataclass
class Found:
    """What a pynetdicom C-FIND got: the answers, their statuses, the final response."""

    answers: list[Dataset]
    pending: list[int]
    final: Dataset
    extended: dict[str, bytes]

    @property
    def status(self) -> int:
        return int(self.final.Status)

    def values(self, keyword: str) -> list[Any]:
        return sorted(str(answer.get(keyword, "")) for answer in self.answers)


def extended_item(sop_class: str, info: bytes) -> Any:
    from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

    item = SOPClassExtendedNegotiation()
    item.sop_class_uid = sop_class
    item.service_class_application_information = info
    return item


def pyn_find(port: int, query: Dataset, model: str = "S", *, extended: bytes | None = None,
             cancel_after: int | None = None) -> Found:
    """pynetdicom send_c_find (blocking); optionally C-CANCEL after some answers."""
    from pynetdicom import evt
    from pynetdicom.pdu import A_ASSOCIATE_AC

    sop_class = MODELS[model]
    ae = pynetdicom_ae("PYNETDICOM")
    ae.add_requested_context(sop_class)
    received: list[Any] = []
    ext_neg = [extended_item(sop_class, extended)] if extended is not None else None
    assoc = ae.associate(LOOPBACK, port, ae_title=SERVER_AE, ext_neg=ext_neg,
                         evt_handlers=[(evt.EVT_PDU_RECV, lambda e: received.append(e.pdu))])
    assert assoc.is_established
    try:
        (context,) = [c for c in assoc.accepted_contexts if c.abstract_syntax == sop_class]
        answers, pending, final = pynetdicom_find(assoc, query, sop_class, msg_id=7,
                                                  context_id=context.context_id,
                                                  cancel_after=cancel_after)
        # The association survives whatever the C-FIND answered. (No C-ECHO to prove it:
        # pynetdicom's reactor may swallow a response that follows a C-FIND too closely,
        # logging "Received unexpected C-ECHO service message", pynetdicom issue #875.)
        assert assoc.is_established
    finally:
        assoc.release()
    assert assoc.is_released
    (ac,) = [pdu for pdu in received if isinstance(pdu, A_ASSOCIATE_AC)]
    agreed = {str(item.sop_class_uid): bytes(item.service_class_application_information)
              for item in ac.user_information.user_data
              if type(item).__name__ == "SOPClassExtendedNegotiationSubItem"}
    return Found(answers, pending, final, agreed)


def query(level: str, charset: str | list[str] | None = None, **keys: Any) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


async def findscu(port: int, out: Path, *args: str) -> list[Dataset]:
    """DCMTK findscu, answers extracted to files (-X) and read back."""
    out.mkdir()
    result = await run_dcmtk("findscu", "-aet", "FINDSCU", "-aec", SERVER_AE, "-X", "-od",
                             str(out), *args, LOOPBACK, str(port))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Failed" not in output, output  # findscu exits 0 even when the query failed
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


# --- both models, every level, both peers ---------------------------------------------------

S1, S2 = study_uid(1), study_uid(2)
LEVEL_CASES: Final = [
    ("P", "PATIENT", {"PatientName": "Doe*", "PatientID": ""}, "PatientID", ["PID-1"]),
    ("P", "STUDY", {"PatientID": "PID-1", "StudyDate": ""}, "StudyInstanceUID", [S1, S2]),
    ("P", "SERIES", {"PatientID": "PID-1", "StudyInstanceUID": S1, "Modality": ""},
     "SeriesInstanceUID", [series_uid(1, 1), series_uid(1, 2)]),
    ("P", "IMAGE", {"PatientID": "PID-1", "StudyInstanceUID": S1,
                    "SeriesInstanceUID": series_uid(1, 1), "InstanceNumber": ""},
     "SOPInstanceUID", [instance_uid(1, 1, 1), instance_uid(1, 1, 2)]),
    ("S", "STUDY", {"PatientName": "doe^john", "ModalitiesInStudy": ""}, "StudyInstanceUID",
     [S1, S2]),
    ("S", "SERIES", {"StudyInstanceUID": S1, "Modality": "CT"}, "SeriesInstanceUID",
     [series_uid(1, 1)]),
    ("S", "IMAGE", {"StudyInstanceUID": S1, "SeriesInstanceUID": series_uid(1, 1),
                    "SOPInstanceUID": ""}, "SOPInstanceUID",
     [instance_uid(1, 1, 1), instance_uid(1, 1, 2)]),
]
LEVEL_IDS: Final = [f"{model}-{level}" for model, level, *_ in LEVEL_CASES]


@pytest.mark.parametrize(("model", "level", "keys", "unique", "expected"), LEVEL_CASES,
                         ids=LEVEL_IDS)
async def test_pynetdicom_each_level_of_both_models(
        pacs: int, model: str, level: str, keys: dict[str, str], unique: str,
        expected: list[str]) -> None:
    found = await asyncio.to_thread(pyn_find, pacs, query(level, **keys), model)
    assert found.status == Status.SUCCESS
    assert found.pending == [Status.PENDING] * len(expected)
    assert found.values(unique) == expected
    for answer in found.answers:
        assert answer.QueryRetrieveLevel == level
        assert answer.RetrieveAETitle == SERVER_AE
        for keyword in keys:
            assert keyword in answer  # every requested key, with a value or empty


@pytest.mark.parametrize(("model", "level", "keys", "unique", "expected"), LEVEL_CASES,
                         ids=LEVEL_IDS)
async def test_dcmtk_each_level_of_both_models(
        pacs: int, tmp_path: Path, model: str, level: str, keys: dict[str, str], unique: str,
        expected: list[str]) -> None:
    args = [f"-{model}", "-k", f"QueryRetrieveLevel={level}"]
    for keyword, value in keys.items():
        args += ["-k", f"{keyword}={value}" if value else keyword]
    answers = await findscu(pacs, tmp_path / "rsp", *args)
    assert sorted(str(a.get(unique, "")) for a in answers) == expected
    assert all(a.QueryRetrieveLevel == level for a in answers)


@pytest.mark.parametrize("syntax", ["-xi", "-xe", "-xb", "-xd"],
                         ids=["implicit", "explicit", "big-endian", "deflated"])
async def test_dcmtk_every_transfer_syntax(pacs: int, tmp_path: Path, syntax: str) -> None:
    answers = await findscu(pacs, tmp_path / "rsp", "-S", syntax, "-k",
                            "QueryRetrieveLevel=STUDY", "-k", "StudyDate=20240101-20240229",
                            "-k", "PatientName", "-k", "NumberOfStudyRelatedInstances")
    got = sorted((str(a.PatientName), str(a.NumberOfStudyRelatedInstances)) for a in answers)
    assert got == [("Doe^John", "1"), ("Doe^John", "3")]


async def test_hierarchical_violation_is_a900_when_strict(tmp_path: Path) -> None:
    async with server(tmp_path, query={"strict_hierarchy": True}) as port:
        await asyncio.to_thread(store_all, port, population()[:1])
        found = await asyncio.to_thread(pyn_find, port, query("SERIES", Modality="CT"))
    assert found.status == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert "StudyInstanceUID" in str(found.final.ErrorComment)
    assert found.answers == []


async def test_series_and_image_queries_across_studies_by_default(pacs: int,
                                                                  tmp_path: Path) -> None:
    # query.strict_hierarchy: false (default): the unique keys above may be missing.
    found = await asyncio.to_thread(pyn_find, pacs, query("SERIES", Modality="MR",
                                                          SeriesDescription="T*"))
    assert found.status == Status.SUCCESS
    assert found.values("SeriesInstanceUID") == [series_uid(1, 2)]
    assert found.answers[0].StudyInstanceUID == S1
    answers = await findscu(pacs, tmp_path / "rsp", "-S", "-k", "QueryRetrieveLevel=IMAGE",
                            "-k", "SOPInstanceUID", "-k", "PatientID=PID-1")
    assert sorted(str(a.SOPInstanceUID) for a in answers) == sorted(
        [instance_uid(1, 1, 1), instance_uid(1, 1, 2), instance_uid(1, 2, 1),
         instance_uid(2, 1, 1)])
    patient = await asyncio.to_thread(pyn_find, pacs, query("PATIENT", PatientID=""))
    assert patient.status == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS  # no Study Root shape


# --- extended negotiation -----------------------------------------------------------------


async def test_relational_queries_when_negotiated(pacs: int) -> None:
    # A study-level query on a series key: only with relational queries (C.4.1.3.2).
    studies_with_mr = query("STUDY", Modality="MR", StudyInstanceUID="")
    plain = await asyncio.to_thread(pyn_find, pacs, studies_with_mr)
    assert plain.status == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert plain.extended == {}
    found = await asyncio.to_thread(pyn_find, pacs, studies_with_mr, extended=b"\x01")
    assert found.extended == {STUDY_ROOT_QR_FIND: b"\x01"}
    assert found.status == Status.SUCCESS
    assert found.values("StudyInstanceUID") == [S1, S2]
    # Series of every study without the study's UID, and patient-root images by name.
    series = await asyncio.to_thread(pyn_find, pacs, query("SERIES", Modality="US",
                                                           SeriesInstanceUID=""),
                                     extended=b"\x01\x00")
    assert series.values("SeriesInstanceUID") == [series_uid(4, 1)]
    assert series.answers[0].StudyInstanceUID == study_uid(4)  # unique keys above returned
    images = await asyncio.to_thread(pyn_find, pacs, query("IMAGE", PatientName="Doe^John",
                                                           SOPInstanceUID=""), "P",
                                     extended=b"\x01")
    assert len(images.answers) == 4


async def test_combined_date_time_when_negotiated(pacs: int) -> None:
    keys = {"StudyDate": "20240101-20240301", "StudyTime": "1000-1300", "StudyInstanceUID": ""}
    separate = await asyncio.to_thread(pyn_find, pacs, query("STUDY", **keys))
    assert separate.values("StudyInstanceUID") == [S1, study_uid(4)]
    combined = await asyncio.to_thread(pyn_find, pacs, query("STUDY", **keys),
                                       extended=b"\x00\x01\x01\x01")
    # Fuzzy names and timezone adjustment are turned down, byte for byte.
    assert combined.extended == {STUDY_ROOT_QR_FIND: b"\x00\x01\x00\x00"}
    assert combined.values("StudyInstanceUID") == [S1, S2, study_uid(4)]


# --- character sets -----------------------------------------------------------------------


@pytest.mark.parametrize(("charset", "name", "expected"), [
    ("ISO_IR 100", "Müller^Jürgen", "Müller^Jürgen"),
    ("ISO_IR 100", "MÜLL*", "Müller^Jürgen"),  # PN is matched case-insensitively
    ("ISO_IR 192", "Ñúñez^Zoë", "Ñúñez^Zoë"),
    ("ISO_IR 192", "ñú?ez*", "Ñúñez^Zoë"),
    (ISO2022_JP, "Yamada^Tarou=山田^太郎", JAPANESE),
    (ISO2022_JP, "*=山田*", JAPANESE),
    ("ISO_IR 192", "*=山田^太郎*", JAPANESE),
], ids=["latin1", "latin1-wildcard", "utf8", "utf8-wildcard", "jis", "jis-wildcard",
        "jis-from-utf8"])
async def test_names_in_every_character_set(pacs: int, charset: str | list[str], name: str,
                                            expected: str) -> None:
    found = await asyncio.to_thread(pyn_find, pacs, query("STUDY", charset, PatientName=name))
    assert found.status == Status.SUCCESS
    (answer,) = found.answers
    assert str(answer.PatientName) == expected


async def test_answer_charset_follows_the_query_when_it_fits(pacs: int) -> None:
    latin1 = await asyncio.to_thread(pyn_find, pacs, query("STUDY", "ISO_IR 100",
                                                           PatientName="Müller*"))
    assert latin1.answers[0].SpecificCharacterSet == "ISO_IR 100"
    # Japanese does not fit Latin-1: UTF-8, and the answer says so.
    japanese = await asyncio.to_thread(pyn_find, pacs, query("STUDY", "ISO_IR 100",
                                                             PatientID="PID-4",
                                                             PatientName=""))
    assert japanese.answers[0].SpecificCharacterSet == "ISO_IR 192"
    assert str(japanese.answers[0].PatientName) == JAPANESE
    ascii_only = await asyncio.to_thread(pyn_find, pacs, query("STUDY", "ISO_IR 100",
                                                               PatientID="PID-1",
                                                               PatientName=""))
    assert all("SpecificCharacterSet" not in a for a in ascii_only.answers)


# --- hostile identifiers ------------------------------------------------------------------


async def test_sql_metacharacters_are_values(pacs: int) -> None:
    found = await asyncio.to_thread(pyn_find, pacs, query("STUDY", PatientID=HOSTILE_ID,
                                                          PatientName=""))
    assert [str(a.PatientName) for a in found.answers] == ["O'Brien%_^Robert"]
    # % and _ are not wildcards: "O'Brien%_*" matches only the literal characters.
    for name, count in (("O'Brien%_*", 1), ("O'Brien__*", 0), ("%", 0), ("*' OR '1'='1", 0)):
        found = await asyncio.to_thread(pyn_find, pacs, query("STUDY", PatientName=name))
        assert found.status == Status.SUCCESS
        assert len(found.answers) == count, name


@pytest.mark.parametrize(("keys", "status"), [
    ({"PatientName": "A" * 70000}, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
    ({"StudyDate": "yesterday"}, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
    ({"StudyInstanceUID": "1.2.*"}, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
    ({"StudyDate": "2024*"}, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
], ids=["64KiB", "bad-date", "wildcard-UID", "wildcard-date"])
async def test_bad_values_get_a_status(pacs: int, keys: dict[str, str], status: int) -> None:
    found = await asyncio.to_thread(pyn_find, pacs, query("STUDY", **keys))
    assert found.status == status
    assert found.answers == []
    assert str(found.final.ErrorComment)


async def test_undecodable_identifier_is_c000_and_the_association_survives(pacs: int) -> None:
    rq = build_associate_rq("RAWFIND", SERVER_AE, [(STUDY_ROOT_QR_FIND, [ExplicitVRLittleEndian]),
                                                   (VERIFICATION, [ExplicitVRLittleEndian])])
    async with association(LOOPBACK, pacs, rq, artim_timeout=WAIT) as conn:
        for garbage in (b"\x08\x00\x52\x00CS\x40\x00STUDY", b"\xff" * 200):
            message = CFindRQ(message_id=conn.next_message_id(),
                              affected_sop_class_uid=STUDY_ROOT_QR_FIND)
            replies = [r async for r in conn.request(1, message, garbage)]
            (reply,) = replies
            assert isinstance(reply.message, CFindRSP)
            assert reply.message.status == Status.UNABLE_TO_PROCESS
            assert reply.message.error_comment
        echo = CEchoRQ(message_id=conn.next_message_id(), affected_sop_class_uid=VERIFICATION)
        assert [r.message.status async for r in conn.request(3, echo)] == [Status.SUCCESS]


# --- cancel and limits --------------------------------------------------------------------


@pytest.fixture(scope="session")
def bulk_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of BULK instances, built once (in its own loop) and copied per test."""
    directory = tmp_path_factory.mktemp("bulk")
    asyncio.run(bulk_load(directory, BULK))
    return directory / "index.db"


@contextlib.asynccontextmanager
async def bulk_server(tmp_path: Path, bulk_db: Path, **sections: Any) -> AsyncIterator[int]:
    shutil.copyfile(bulk_db, tmp_path / "index.db")
    async with server(tmp_path, **sections) as port:
        yield port


BULK_IMAGES: Final = {"StudyInstanceUID": study_uid(9), "SeriesInstanceUID": series_uid(9, 1),
                      "SOPInstanceUID": "", "InstanceNumber": ""}


async def test_pynetdicom_cancel_stops_the_stream(tmp_path: Path, bulk_db: Path) -> None:
    async with bulk_server(tmp_path, bulk_db) as port:
        everything = await asyncio.to_thread(pyn_find, port, query("IMAGE", **BULK_IMAGES))
        assert len(everything.answers) == BULK
        found = await asyncio.to_thread(pyn_find, port, query("IMAGE", **BULK_IMAGES),
                                        cancel_after=1)
    assert found.status == Status.CANCEL
    assert 1 <= len(found.answers) < BULK


async def test_dcmtk_cancel_stops_the_stream(tmp_path: Path, bulk_db: Path) -> None:
    async with bulk_server(tmp_path, bulk_db) as port:
        args = ["-S", "--cancel", "1", "-k", "QueryRetrieveLevel=IMAGE"]
        for keyword, value in BULK_IMAGES.items():
            args += ["-k", f"{keyword}={value}" if value else keyword]
        result = await run_dcmtk("findscu", "-v", "-aec", SERVER_AE, *args, LOOPBACK,
                                 str(port))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Cancel" in output, output
    assert output.count("Find Response:") < BULK


async def test_max_results_refuses_before_any_answer(tmp_path: Path, bulk_db: Path) -> None:
    async with bulk_server(tmp_path, bulk_db, query={"max_results": 100}) as port:
        found = await asyncio.to_thread(pyn_find, port, query("IMAGE", **BULK_IMAGES))
        assert found.status == Status.OUT_OF_RESOURCES
        assert "more than 100 matches" in str(found.final.ErrorComment)
        assert found.answers == []
        narrow = dict(BULK_IMAGES, SOPInstanceUID=instance_uid(9, 1, 7))
        one = await asyncio.to_thread(pyn_find, port, query("IMAGE", **narrow))
        assert one.status == Status.SUCCESS
        assert one.values("InstanceNumber") == ["7"]

