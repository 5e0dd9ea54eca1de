"""Modality Worklist SCP over real sockets: pynetdicom and DCMTK `findscu -W` as the modality.

The server (`app.open_server`, SQLite in tmp_path) holds three worklist items, one of them
with two Scheduled Procedure Steps, written through the worklist adapter as `worklist add`
does. Each test asserts the steps that come back and what the answers hold.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from minipacs.app.daemon import open_server
from minipacs.index.engine import make_engine
from minipacs.index.worklist import SqlWorklist
from minipacs.proto.sop import MODALITY_WORKLIST_FIND
from minipacs.proto.status import Status
from tests.support import (
    LOOPBACK,
    TEST_LIMITS,
    WAIT,
    make_config,
    pynetdicom_ae,
    pynetdicom_find,
    run_dcmtk,
)

SERVER_AE: Final = "MINIPACS"
STUDY_1: Final = "1.2.826.0.1.3680043.8.498.77.1"
STUDY_2: Final = "1.2.826.0.1.3680043.8.498.77.2"
STUDY_3: Final = "1.2.826.0.1.3680043.8.498.77.3"
BULK: Final = 250  # steps in the cancel test: several pages of 100


def step(modality: str, station: str, date: str, time: str, sps_id: str,
         physician: str = "", status: str = "SCHEDULED") -> dict[str, Any]:
    ds = Dataset()
    ds.Modality = modality
    ds.ScheduledStationAETitle = station
    ds.ScheduledProcedureStepStartDate = date
    ds.ScheduledProcedureStepStartTime = time
    ds.ScheduledProcedureStepID = sps_id
    ds.ScheduledProcedureStepDescription = f"step {sps_id}"
    ds.ScheduledProcedureStepStatus = status
    if physician:
        ds.ScheduledPerformingPhysicianName = physician
    return ds.to_json_dict()


def item(name: str, patient_id: str, accession: str, study: str,
         *steps: dict[str, Any]) -> dict[str, Any]:
    ds = Dataset()
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.AccessionNumber = accession
    ds.StudyInstanceUID = study
    ds.RequestedProcedureID = f"RP-{accession}"
    ds.RequestedProcedureDescription = f"procedure of {patient_id}"
    out = ds.to_json_dict()
    out["00400100"] = {"vr": "SQ", "Value": list(steps)}
    return out


ITEMS: Final = [
    item("Doe^Jane", "PID-1", "ACC1", STUDY_1,
         step("CT", "CT1", "20260105", "093000", "SPS1", "Smith^Ann"),
         step("MR", "MR1", "20260106", "140000", "SPS2", "Smith^Ann")),
    item("Müller^Jürgen", "PID-2", "ACC2", STUDY_2,
         step("CT", "CT2", "20260105", "150000", "SPS3", "Jones^Bob")),
    item("Roe^Richard", "PID-3", "ACC3", STUDY_3,
         step("US", "US1", "20260110", "080000", "SPS4")),
]


@contextlib.asynccontextmanager
async def worklist_server(directory: Path, items: list[dict[str, Any]],
                          db_url: str | None = None) -> AsyncIterator[tuple[int, SqlWorklist]]:
    database = {"database": {"url": db_url}} if db_url else {}
    config = make_config(directory, ae_title=SERVER_AE, limits=TEST_LIMITS,
                         storage={"min_free_mb": 0}, **database)
    async with asyncio.timeout(WAIT), open_server(config) as running:
        engine = make_engine(config.database.url)
        try:
            worklist = SqlWorklist(engine)
            await asyncio.to_thread(worklist.add_items, items)
            yield running.port, worklist
        finally:
            engine.dispose()


@pytest.fixture
async def mwl(tmp_path: Path, db_url: str) -> AsyncIterator[tuple[int, SqlWorklist]]:
    async with worklist_server(tmp_path, ITEMS, db_url) as running:
        yield running


@dataclass(frozen=True, slots=True)
class Found:
    answers: list[Dataset]
    pending: list[int]
    final: Dataset

    @property
    def status(self) -> int:
        return int(self.final.Status)

    def sps_ids(self) -> list[str]:
        return sorted(str(a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID)
                      for a in self.answers)


def pyn_mwl(port: int, query: Dataset, *, cancel_after: int | None = None) -> Found:
    """pynetdicom C-FIND on the worklist model (blocking); optionally C-CANCEL."""
    ae = pynetdicom_ae("MODALITY")
    ae.add_requested_context(MODALITY_WORKLIST_FIND)
    assoc = ae.associate(LOOPBACK, port, ae_title=SERVER_AE)
    assert assoc.is_established
    try:
        (context,) = assoc.accepted_contexts
        answers, pending, final = pynetdicom_find(assoc, query, MODALITY_WORKLIST_FIND,
                                                  msg_id=9, context_id=context.context_id,
                                                  cancel_after=cancel_after)
        assert assoc.is_established
    finally:
        assoc.release()
    return Found(answers, pending, final)


def mwl_query(*, charset: str | None = None, **sps: str) -> Dataset:
    """Patient keys returned; `sps` keys matched inside the step item."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = ""
    ds.PatientID = ""
    ds.AccessionNumber = ""
    item_ = Dataset()
    for keyword in ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                    "ScheduledProcedureStepStartTime", "ScheduledProcedureStepID"):
        setattr(item_, keyword, sps.pop(keyword, ""))
    for keyword, value in sps.items():
        setattr(item_, keyword, value)
    ds.ScheduledProcedureStepSequence = [item_]
    return ds


async def find(port: int, query: Dataset, **options: Any) -> Found:
    return await asyncio.to_thread(pyn_mwl, port, query, **options)


# --- matching ------------------------------------------------------------------------------

MATCH_CASES: Final = [
    ({"Modality": "CT"}, ["SPS1", "SPS3"]),
    ({"ScheduledStationAETitle": "MR1"}, ["SPS2"]),
    ({"ScheduledStationAETitle": "CT*"}, ["SPS1", "SPS3"]),
    ({"ScheduledProcedureStepStartDate": "20260105-20260106"}, ["SPS1", "SPS2", "SPS3"]),
    ({"ScheduledProcedureStepStartDate": "20260107-"}, ["SPS4"]),
    ({"ScheduledProcedureStepStartDate": "20260105", "ScheduledProcedureStepStartTime": "-1000"},
     ["SPS1"]),
    # Combined date-time (C.2.2.2.5.4): from Jan 5 12:00 to Jan 6 10:00 holds only SPS3.
    ({"ScheduledProcedureStepStartDate": "20260105-20260106",
      "ScheduledProcedureStepStartTime": "1200-1000"}, ["SPS3"]),
    # Ranges of different forms are one period too; an open end stays open (issue 10 item 4).
    ({"ScheduledProcedureStepStartDate": "20260105-20260106",
      "ScheduledProcedureStepStartTime": "-1000"}, ["SPS1", "SPS3"]),  # Jan 5 00:00-Jan 6 10:00
    ({"ScheduledProcedureStepStartDate": "20260106-",
      "ScheduledProcedureStepStartTime": "1000-1500"}, ["SPS2", "SPS4"]),  # from Jan 6 10:00
    ({"ScheduledProcedureStepStartDate": "-20260105",
      "ScheduledProcedureStepStartTime": "1000-"}, ["SPS1", "SPS3"]),  # to the end of Jan 5
    ({"ScheduledProcedureStepStartDate": "20260105-20260106",
      "ScheduledProcedureStepStartTime": "1400-"}, ["SPS2", "SPS3"]),  # Jan 5 14:00-end Jan 6
    ({"ScheduledPerformingPhysicianName": "smith^ann"}, ["SPS1", "SPS2"]),
    ({"Modality": "CT", "ScheduledStationAETitle": "CT2"}, ["SPS3"]),
    ({"Modality": "XA"}, []),
]


@pytest.mark.parametrize(("sps", "expected"), MATCH_CASES)
async def test_sequence_matching(mwl: tuple[int, SqlWorklist], sps: dict[str, str],
                                 expected: list[str]) -> None:
    port, _ = mwl
    found = await find(port, mwl_query(**sps))
    assert found.status == Status.SUCCESS
    assert found.sps_ids() == expected
    assert set(found.pending) == ({Status.PENDING} if expected else set())


@pytest.mark.parametrize(("keys", "expected"), [
    ({"PatientName": "doe*"}, ["SPS1", "SPS2"]),
    ({"PatientName": "D?E^JANE"}, ["SPS1", "SPS2"]),
    ({"PatientID": "PID-3"}, ["SPS4"]),
    ({"AccessionNumber": "ACC2"}, ["SPS3"]),
    ({"StudyInstanceUID": f"{STUDY_1}\\{STUDY_3}"}, ["SPS1", "SPS2", "SPS4"]),
])
async def test_patient_and_request_keys(mwl: tuple[int, SqlWorklist], keys: dict[str, str],
                                        expected: list[str]) -> None:
    port, _ = mwl
    query = mwl_query()
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    found = await find(port, query)
    assert found.status == Status.SUCCESS
    assert found.sps_ids() == expected


async def test_each_step_is_its_own_answer_with_exactly_the_requested_keys(
        mwl: tuple[int, SqlWorklist]) -> None:
    port, _ = mwl
    found = await find(port, mwl_query(ScheduledProcedureStepDescription=""))
    by_sps = {str(a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID): a
              for a in found.answers}
    assert sorted(by_sps) == ["SPS1", "SPS2", "SPS3", "SPS4"]
    for answer in found.answers:
        assert len(answer.ScheduledProcedureStepSequence) == 1
        assert "QueryRetrieveLevel" not in answer
        assert "RetrieveAETitle" not in answer
        assert "PatientBirthDate" not in answer  # stored, not asked for
        assert set(answer.dir()) <= {"PatientName", "PatientID", "AccessionNumber",
                                     "ScheduledProcedureStepSequence", "SpecificCharacterSet"}
    # The two steps of Doe^Jane's item come back separately, each with its own values.
    one, two = by_sps["SPS1"].ScheduledProcedureStepSequence[0], \
        by_sps["SPS2"].ScheduledProcedureStepSequence[0]
    assert (one.Modality, one.ScheduledStationAETitle) == ("CT", "CT1")
    assert (two.Modality, two.ScheduledStationAETitle) == ("MR", "MR1")
    assert two.ScheduledProcedureStepDescription == "step SPS2"
    assert "ScheduledPerformingPhysicianName" not in two
    assert str(by_sps["SPS1"].PatientName) == "Doe^Jane"
    assert by_sps["SPS4"].AccessionNumber == "ACC3"


async def test_zero_length_sequence_returns_the_whole_step(mwl: tuple[int, SqlWorklist]) -> None:
    port, _ = mwl
    query = Dataset()
    query.PatientID = "PID-2"
    query.ScheduledProcedureStepSequence = []
    found = await find(port, query)
    (answer,) = found.answers
    (sps,) = answer.ScheduledProcedureStepSequence
    assert sps.ScheduledProcedureStepID == "SPS3"
    assert str(sps.ScheduledPerformingPhysicianName) == "Jones^Bob"
    assert sps.ScheduledProcedureStepStatus == "SCHEDULED"


async def test_query_retrieve_level_is_tolerated_and_not_answered(
        mwl: tuple[int, SqlWorklist]) -> None:
    port, _ = mwl
    query = mwl_query(Modality="US")
    query.QueryRetrieveLevel = "STUDY"
    query.RetrieveAETitle = ""
    found = await find(port, query)
    assert found.status == Status.SUCCESS
    assert found.sps_ids() == ["SPS4"]
    assert "QueryRetrieveLevel" not in found.answers[0]
    assert "RetrieveAETitle" not in found.answers[0]


async def test_unsupported_key_gives_pending_warning(mwl: tuple[int, SqlWorklist]) -> None:
    port, _ = mwl
    query = mwl_query(Modality="US")
    query.PatientBirthDate = "19700101"  # returned, not matched: FF01 (K.4.1.2.3)
    found = await find(port, query)
    assert found.pending == [Status.PENDING_WARNING]
    assert found.answers[0].PatientBirthDate == "19700101"


async def test_answer_character_set(mwl: tuple[int, SqlWorklist]) -> None:
    port, _ = mwl
    latin1 = await find(port, mwl_query(charset="ISO_IR 100", ScheduledStationAETitle="CT2"))
    (answer,) = latin1.answers
    assert answer.SpecificCharacterSet == "ISO_IR 100"
    assert str(answer.PatientName) == "Müller^Jürgen"
    plain = await find(port, mwl_query(ScheduledStationAETitle="CT2"))
    assert plain.answers[0].SpecificCharacterSet == "ISO_IR 192"  # default cannot hold ü
    assert str(plain.answers[0].PatientName) == "Müller^Jürgen"


# --- bad identifiers -----------------------------------------------------------------------


@pytest.mark.parametrize(("change", "status"), [
    (lambda q: setattr(q.ScheduledProcedureStepSequence[0],
                       "ScheduledProcedureStepStartDate", "2026-13"),
     Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
    (lambda q: setattr(q.ScheduledProcedureStepSequence[0], "ScheduledProcedureStepStartTime",
                       "25"), Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
    (lambda q: q.ScheduledProcedureStepSequence.append(Dataset()),
     Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
    (lambda q: setattr(q, "StudyInstanceUID", "1.2.x"),
     Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
])
async def test_bad_identifiers_are_refused(mwl: tuple[int, SqlWorklist], change: Any,
                                           status: int) -> None:
    port, _ = mwl
    query = mwl_query()
    change(query)
    found = await find(port, query)
    assert found.status == status
    assert found.answers == []
    assert found.final.ErrorComment


async def test_identifier_of_only_query_retrieve_keys_is_refused(
        mwl: tuple[int, SqlWorklist]) -> None:
    port, _ = mwl
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    found = await find(port, query)
    assert found.status == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert "no worklist key" in str(found.final.ErrorComment)


# --- cancel, MPPS marks ----------------------------------------------------------------------


async def test_cancel_stops_the_stream(tmp_path: Path) -> None:
    items = [item(f"Bulk^{n}", f"B{n}", f"A{n}", f"{STUDY_3}.{n}",
                  step("CR", "CR1", "20260201", "080000", f"B{n}")) for n in range(BULK)]
    async with worklist_server(tmp_path, items) as (port, _):
        everything = await find(port, mwl_query(Modality="CR"))
        assert len(everything.answers) == BULK
        found = await find(port, mwl_query(Modality="CR"), cancel_after=1)
    assert found.status == Status.CANCEL
    assert 1 <= len(found.answers) < BULK


async def test_marked_steps_answer_their_new_status(mwl: tuple[int, SqlWorklist]) -> None:
    port, worklist = mwl
    assert await worklist.mark_steps("COMPLETED", [(STUDY_1, "SPS1")]) == 1
    assert await worklist.mark_steps("DISCONTINUED", [("", "SPS4"), ("", "")]) == 1
    assert await worklist.mark_steps("COMPLETED", [(STUDY_2, "SPS1")]) == 0  # wrong study
    done = await find(port, mwl_query(ScheduledProcedureStepStatus="COMPLETED"))
    assert done.sps_ids() == ["SPS1"]
    assert done.answers[0].ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus \
        == "COMPLETED"
    scheduled = await find(port, mwl_query(ScheduledProcedureStepStatus="SCHEDULED"))
    assert scheduled.sps_ids() == ["SPS2", "SPS3"]


# --- DCMTK findscu -W ----------------------------------------------------------------------


async def findscu_w(port: int, out: Path, *keys: str) -> list[Dataset]:
    out.mkdir()
    args = [arg for key in keys for arg in ("-k", key)]
    result = await run_dcmtk("findscu", "-W", "-aet", "MODALITY", "-aec", SERVER_AE, "-X",
                             "-od", str(out), *args, LOOPBACK, str(port))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Failed" not in output, output
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


@pytest.mark.parametrize(("keys", "expected"), [
    (["ScheduledProcedureStepSequence[0].Modality=CT"], ["SPS1", "SPS3"]),
    (["ScheduledProcedureStepSequence[0].ScheduledStationAETitle=MR1"], ["SPS2"]),
    (["ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20260106-20260110"],
     ["SPS2", "SPS4"]),
    (["PatientName=DOE*"], ["SPS1", "SPS2"]),
    (["PatientName=roe^*"], ["SPS4"]),
])
async def test_dcmtk_findscu_worklist(mwl: tuple[int, SqlWorklist], tmp_path: Path,
                                      keys: list[str], expected: list[str]) -> None:
    port, _ = mwl
    base = ["PatientName", "PatientID", "ScheduledProcedureStepSequence[0].Modality",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID"]
    names = {key.split("=")[0] for key in keys}
    answers = await findscu_w(port, tmp_path / "out",
                              *[key for key in base if key not in names], *keys)
    got = sorted(str(a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID)
                 for a in answers)
    assert got == expected
    for answer in answers:
        assert "QueryRetrieveLevel" not in answer
        assert "RetrieveAETitle" not in answer
        assert len(answer.ScheduledProcedureStepSequence) == 1


async def test_mpps_completed_marks_its_scheduled_steps(tmp_path: Path) -> None:
    """The daemon's wiring: MPPS N-SET COMPLETED marks the steps its N-CREATE named."""
    from tests.interop import test_mpps as mpps

    items = [item("Test^Loopback", "LOOP-1", "ACC-70", mpps.STUDY,
                  step("CT", "CT01", "20240101", "090000", "SPS-70")),
             item("Test^Loopback", "LOOP-1", "ACC-71", f"{mpps.UID_ROOT}.71",
                  step("CT", "CT01", "20240101", "091500", "SPS-71")),
             item("Other^Pat", "P-9", "ACC-9", STUDY_2,
                  step("CT", "CT01", "20240101", "100000", "SPS-70"))]  # same ID, other study

    def procedure(port: int) -> tuple[int, int]:
        with mpps.modality(port) as peer:
            created = peer.create(mpps.create_ds())
            completed = peer.set(mpps.final_ds("COMPLETED"))
        return int(created.Status), int(completed.Status)

    async with worklist_server(tmp_path, items) as (port, worklist):
        assert await asyncio.to_thread(procedure, port) == (Status.SUCCESS, Status.SUCCESS)
        steps = await asyncio.to_thread(worklist.list_steps)
        found = await find(port, mwl_query(ScheduledProcedureStepStatus="COMPLETED"))
    assert sorted((s.sps_id, s.accession_number, s.status) for s in steps) == [
        ("SPS-70", "ACC-70", "COMPLETED"), ("SPS-70", "ACC-9", "SCHEDULED"),
        ("SPS-71", "ACC-71", "COMPLETED")]
    assert sorted(str(a.AccessionNumber) for a in found.answers) == ["ACC-70", "ACC-71"]
