"""Value lists in C-FIND keys over real sockets, one case per VR class, both peers.

PS3.4 C.2.2.2.2 defines lists of UIDs; docs/conformance.md extends "any of the values" to
every VR but TM and DT, at every level and in the worklist. pydicom 3 decodes several text
values as a MultiValue (neither list nor tuple), which once made SH, LO and PN lists match
nothing; each case here is sent by pynetdicom and by DCMTK findscu.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest

from minipacs.index.worklist import SqlWorklist
from minipacs.proto.status import Status
from tests.interop.test_find import (
    JAPANESE,
    findscu,
    instance_uid,
    population,
    pyn_find,
    query,
    series_uid,
    server,
    store_all,
    study_uid,
)
from tests.interop.test_worklist import ITEMS, find, findscu_w, mwl_query, worklist_server

S1: Final = study_uid(1)


@pytest.fixture
async def pacs(tmp_path: Path) -> AsyncIterator[int]:
    async with server(tmp_path) as port:
        await asyncio.to_thread(store_all, port, population())
        yield port


# (VR, model, level, keys, unique key answered, expected unique values)
CASES: Final = [
    ("SH", "S", "STUDY", {"AccessionNumber": "ACC1\\ACC3"}, "StudyInstanceUID",
     [S1, study_uid(3)]),
    ("LO-patient", "P", "PATIENT", {"PatientID": "PID-2\\PID-3"}, "PatientID",
     ["PID-2", "PID-3"]),
    ("LO-study", "S", "STUDY", {"StudyDescription": "study 2\\study 6"}, "StudyInstanceUID",
     [study_uid(2), study_uid(6)]),
    ("LO-series", "S", "SERIES", {"StudyInstanceUID": S1,
                                  "SeriesDescription": "Scout\\Thorax 1mm"},
     "SeriesInstanceUID", [series_uid(1, 1), series_uid(1, 2)]),
    # PN: each value with its own case rule, group rule and wildcards.
    ("PN", "S", "STUDY", {"PatientName": "doe^john\\Yamada^Tarou"}, "StudyInstanceUID",
     [S1, study_uid(2), study_uid(5)]),
    ("PN-wildcard", "S", "STUDY", {"PatientName": "NONE\\o'brien*"}, "StudyInstanceUID",
     [study_uid(6)]),
    ("CS", "S", "SERIES", {"StudyInstanceUID": S1, "Modality": "MR\\US"},
     "SeriesInstanceUID", [series_uid(1, 2)]),
    ("CS-in-study", "S", "STUDY", {"ModalitiesInStudy": "US\\MR"}, "StudyInstanceUID",
     [S1, study_uid(2), study_uid(4)]),
    ("IS", "P", "IMAGE", {"PatientID": "PID-1", "StudyInstanceUID": S1,
                          "SeriesInstanceUID": series_uid(1, 1), "InstanceNumber": "2\\7"},
     "SOPInstanceUID", [instance_uid(1, 1, 2)]),
    ("UI", "S", "STUDY", {"StudyInstanceUID": f"{S1}\\{study_uid(4)}"}, "StudyInstanceUID",
     [S1, study_uid(4)]),
    ("DA", "S", "STUDY", {"StudyDate": "20240105\\20240301"}, "StudyInstanceUID",
     [S1, study_uid(4)]),
]
IDS: Final = [case[0] for case in CASES]


@pytest.mark.parametrize(("vr", "model", "level", "keys", "unique", "expected"), CASES, ids=IDS)
async def test_pynetdicom_value_lists(pacs: int, vr: str, model: str, level: str,
                                      keys: dict[str, str], unique: str,
                                      expected: list[str]) -> None:
    found = await asyncio.to_thread(pyn_find, pacs, query(level, **{unique: "", **keys}), model)
    assert found.status == Status.SUCCESS, vr
    assert found.pending == [Status.PENDING] * len(expected)
    assert found.values(unique) == expected


@pytest.mark.parametrize(("vr", "model", "level", "keys", "unique", "expected"), CASES, ids=IDS)
async def test_dcmtk_value_lists(pacs: int, tmp_path: Path, vr: str, model: str, level: str,
                                 keys: dict[str, str], unique: str,
                                 expected: list[str]) -> None:
    args = [f"-{model}", "-k", f"QueryRetrieveLevel={level}", "-k", unique]
    for keyword, value in keys.items():
        args += ["-k", f"{keyword}={value}"]
    answers = await findscu(pacs, tmp_path / "rsp", *args)
    assert sorted(str(a.get(unique, "")) for a in answers) == expected, vr


async def test_latin1_name_list_matches_each_name(pacs: int) -> None:
    keys = {"PatientName": "MÜLLER^JÜRGEN\\ñúñez^zoë", "StudyInstanceUID": ""}
    found = await asyncio.to_thread(pyn_find, pacs, query("STUDY", "ISO_IR 100", **keys))
    assert found.values("PatientName") == ["Müller^Jürgen", "Ñúñez^Zoë"]
    assert JAPANESE not in found.values("PatientName")


async def test_a_list_holding_only_star_is_universal(pacs: int) -> None:
    found = await asyncio.to_thread(pyn_find, pacs, query("STUDY", AccessionNumber="X\\*",
                                                          StudyInstanceUID=""))
    assert len(found.answers) == 6


@pytest.mark.parametrize("value", ["ACC1\\ACC*\\", "20240105\\2024*", "1000-1200\\1300"],
                         ids=["empty-value", "wildcard-on-DA", "time-list"])
async def test_lists_that_stay_refused(pacs: int, value: str) -> None:
    keyword = {"ACC": "AccessionNumber", "202": "StudyDate", "100": "StudyTime"}[value[:3]]
    found = await asyncio.to_thread(pyn_find, pacs, query("STUDY", **{keyword: value}))
    assert found.status == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert found.answers == []


# --- the worklist -------------------------------------------------------------------------

WORKLIST_CASES: Final = [
    ({"ScheduledStationAETitle": "CT1\\US1"}, {}, ["SPS1", "SPS4"]),  # AE
    ({"Modality": "MR\\US"}, {}, ["SPS2", "SPS4"]),  # CS
    ({"ScheduledProcedureStepStartDate": "20260106\\20260110"}, {}, ["SPS2", "SPS4"]),  # DA
    ({"ScheduledProcedureStepID": "SPS1\\SPS3"}, {}, ["SPS1", "SPS3"]),  # SH
    ({"ScheduledPerformingPhysicianName": "JONES^BOB\\nobody"}, {}, ["SPS3"]),  # PN
    ({}, {"PatientID": "PID-1\\PID-3"}, ["SPS1", "SPS2", "SPS4"]),  # LO
    ({}, {"AccessionNumber": "ACC2\\ACC3"}, ["SPS3", "SPS4"]),  # SH
    ({}, {"PatientName": "roe^*\\MÜLLER^JÜRGEN"}, ["SPS3", "SPS4"]),  # PN, wildcard
]
WORKLIST_IDS: Final = ["AE", "CS", "DA", "SH-step", "PN-step", "LO", "SH", "PN-wildcard"]


@pytest.fixture
async def mwl(tmp_path: Path) -> AsyncIterator[tuple[int, SqlWorklist]]:
    async with worklist_server(tmp_path, ITEMS) as running:
        yield running


@pytest.mark.parametrize(("sps", "top", "expected"), WORKLIST_CASES, ids=WORKLIST_IDS)
async def test_worklist_value_lists_pynetdicom(mwl: tuple[int, SqlWorklist], sps: dict[str, str],
                                               top: dict[str, str],
                                               expected: list[str]) -> None:
    port, _ = mwl
    ds = mwl_query(charset="ISO_IR 100", **sps)
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    found = await find(port, ds)
    assert found.status == Status.SUCCESS
    assert found.sps_ids() == expected


@pytest.mark.parametrize(("sps", "top", "expected"), WORKLIST_CASES, ids=WORKLIST_IDS)
async def test_worklist_value_lists_dcmtk(mwl: tuple[int, SqlWorklist], tmp_path: Path,
                                          sps: dict[str, str], top: dict[str, str],
                                          expected: list[str]) -> None:
    port, _ = mwl
    step = "ScheduledProcedureStepSequence[0]"
    # findscu sends the command line's bytes as they are: UTF-8.
    keys = ["SpecificCharacterSet=ISO_IR 192", f"{step}.ScheduledProcedureStepID"]
    keys += [f"{step}.{keyword}={value}" for keyword, value in sps.items()]
    keys += [f"{keyword}={value}" for keyword, value in top.items()]
    answers = await findscu_w(port, tmp_path / "out", *keys)
    got = sorted(str(a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID)
                 for a in answers)
    assert got == expected
