"""C-MOVE/C-GET SCP against real peers: every level of both models with DCMTK, exact counts,
C-CANCEL and A-ABORT mid-transfer with pynetdicom (PS3.4 C.4.2, C.4.3).

DCMTK's movescu/getscu run with `-d` so every C-MOVE/C-GET response they received is read
back from their dump; pynetdicom's responses are recorded from the wire (EVT_DIMSE_RECV),
since its generator hides a data set sent with a pending response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from minipacs.proto.sop import PATIENT_ROOT_QR_GET, PATIENT_ROOT_QR_MOVE
from minipacs.proto.status import Status
from tests.interop.retrieve_support import (
    CALLING,
    ROOT,
    SERVER_AE,
    Stored,
    assert_counts,
    assert_identical,
    dcmtk_responses,
    ident,
    instance,
    populate,
    py_destination,
    py_get,
    py_move,
    received,
    retrieve_log,
    retrieve_server,
    study_uid,
)
from tests.support import LOOPBACK, assert_echo_works, free_port, run_dcmtk, storescp

STORAGE = (CTImageStorage, MRImageStorage)
OUT_OF_RESOURCES = 0xA700  # C-STORE failure (PS3.4 B.2.3)
COERCION = 0xB000  # C-STORE warning: coercion of data elements (PS3.4 B.2.3)


def uid(study: int, series: int, number: int) -> str:
    return f"{ROOT}.{study}.{series}.{number}"


def peer_data() -> list[tuple[Dataset, str]]:
    """P1: study 11 (series 1: CT x3, series 2: MR x2), study 12 (CT x2); P2: study 13 (CT x2).

    All Explicit VR LE, which every peer here accepts, so the data sets go out as stored.
    """
    mr = {"sop_class": MRImageStorage}
    return [(ds, ExplicitVRLittleEndian) for ds in (
        *(instance("P1", 11, 1, n) for n in range(1, 4)),
        *(instance("P1", 11, 2, n, **mr) for n in range(1, 3)),  # type: ignore[arg-type]
        *(instance("P1", 12, 1, n) for n in range(1, 3)),
        *(instance("P2", 13, 1, n) for n in range(1, 3)),
    )]


def large(patient: str, study: int, number: int) -> Dataset:
    """A CT instance of 256 KiB of pixel data: several PDUs, so an abort lands mid-stream."""
    ds = instance(patient, study, 1, number)
    ds.Rows, ds.Columns = 256, 512
    pattern = bytes(range(256)) * 1024
    ds.PixelData = pattern[number:] + pattern[:number]
    return ds


def series_uid(study: int, series: int) -> str:
    return f"{ROOT}.{study}.{series}"


Select = Callable[[Stored], bool]

# (model flag, level, -k keys, which stored instances the retrieve selects)
LEVEL_CASES: list[tuple[str, str, dict[str, str], Select]] = [
    ("-P", "PATIENT", {"PatientID": "P1"},
     lambda s: s.study in (study_uid(11), study_uid(12))),
    ("-P", "STUDY", {"PatientID": "P1", "StudyInstanceUID": study_uid(12)},
     lambda s: s.study == study_uid(12)),
    ("-P", "SERIES", {"PatientID": "P1", "StudyInstanceUID": study_uid(11),
                      "SeriesInstanceUID": series_uid(11, 2)},
     lambda s: s.series == series_uid(11, 2)),
    ("-P", "IMAGE", {"PatientID": "P1", "StudyInstanceUID": study_uid(11),
                     "SeriesInstanceUID": series_uid(11, 1), "SOPInstanceUID": uid(11, 1, 2)},
     lambda s: s.sop_instance == uid(11, 1, 2)),
    # Study Root, with UID lists (backslash-separated, PS3.4 C.4.2.2.1) at each level
    ("-S", "STUDY", {"StudyInstanceUID": f"{study_uid(11)}\\{study_uid(13)}"},
     lambda s: s.study in (study_uid(11), study_uid(13))),
    ("-S", "SERIES", {"StudyInstanceUID": study_uid(11),
                      "SeriesInstanceUID": f"{series_uid(11, 1)}\\{series_uid(11, 2)}"},
     lambda s: s.study == study_uid(11)),
    ("-S", "IMAGE", {"StudyInstanceUID": study_uid(11), "SeriesInstanceUID": series_uid(11, 1),
                     "SOPInstanceUID": f"{uid(11, 1, 1)}\\{uid(11, 1, 3)}"},
     lambda s: s.sop_instance in (uid(11, 1, 1), uid(11, 1, 3))),
]
LEVEL_IDS = [f"{'patient' if m == '-P' else 'study'}-root-{lvl.lower()}"
             for m, lvl, _, _ in LEVEL_CASES]


def dcmtk_keys(level: str, keys: dict[str, str]) -> list[str]:
    args = ["-k", f"QueryRetrieveLevel={level}"]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}"]
    return args


def check_dcmtk_final(output: str, kind: str, count: int) -> None:
    """The responses DCMTK received: exact counts, a clean success at the end."""
    responses = dcmtk_responses(output, kind)
    assert responses, output[-3000:]
    final = assert_counts(responses, count)
    assert (final.status, final.completed, final.failed, final.warning) == \
        (Status.SUCCESS, count, 0, 0), final
    assert not final.has_dataset


# --- 1 and 7: every level of both models, DCMTK, byte-identical data sets ------------------------


@pytest.mark.parametrize(("model", "level", "keys", "select"), LEVEL_CASES, ids=LEVEL_IDS)
async def test_movescu_every_level_to_storescp(tmp_path: Path, model: str, level: str,
                                               keys: dict[str, str], select: Select) -> None:
    (tmp_path / "dest").mkdir()
    async with storescp(tmp_path / "dest", "+B") as dest, \
            retrieve_server(tmp_path, {"DEST": dest.port}) as server:
        stored = await populate(server.port, peer_data())
        with retrieve_log() as lines:
            result = await run_dcmtk("movescu", "-d", model, "-aet", CALLING,
                                     "-aec", SERVER_AE, "-aem", "DEST",
                                     *dcmtk_keys(level, keys), LOOPBACK, str(server.port))
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        expected = [u for u, s in stored.items() if select(s)]
        check_dcmtk_final(output, "C-MOVE RSP", len(expected))
        assert_identical(received(dest.directory), stored, expected)
        summary = [line for line in lines if line.startswith("C-MOVE from 'RETRIEVER' to DEST")]
        assert len(summary) == 1, lines
        assert f"{len(expected)} completed, 0 failed, 0 warning" in summary[0], summary


@pytest.mark.parametrize(("model", "level", "keys", "select"), LEVEL_CASES, ids=LEVEL_IDS)
async def test_getscu_every_level(tmp_path: Path, model: str, level: str,
                                  keys: dict[str, str], select: Select) -> None:
    out = tmp_path / "got"
    out.mkdir()
    async with retrieve_server(tmp_path) as server:
        stored = await populate(server.port, peer_data())
        result = await run_dcmtk("getscu", "-d", model, "-aet", CALLING, "-aec", SERVER_AE,
                                 "+B", *dcmtk_keys(level, keys), "-od", str(out),
                                 LOOPBACK, str(server.port))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    expected = [u for u, s in stored.items() if select(s)]
    check_dcmtk_final(output, "C-GET RSP", len(expected))
    assert_identical(received(out), stored, expected)


# --- 2: exact counts in every pending and final response (pynetdicom) --------------------------


def verdict(sop_instance: str) -> int:
    """The destination's answer per instance: two failures, one warning, the rest success."""
    if sop_instance.endswith((".3", ".7")):
        return OUT_OF_RESOURCES
    return COERCION if sop_instance.endswith(".5") else 0


def failed_uids(found: Dataset | None) -> list[str]:
    assert found is not None, "the final response carries the Failed SOP Instance UID List"
    value = found.FailedSOPInstanceUIDList
    return sorted([value] if isinstance(value, str) else value)


@pytest.mark.parametrize("service", ["move", "get"])
async def test_counts_exact_in_every_response(tmp_path: Path, service: str) -> None:
    """12 instances, answered slowly enough for several pending responses (0.1 s apart):
    2 fail, 1 warns. Remaining falls, the sum stays 12, the list comes only at the end."""
    data = [(instance("COUNT", 21, 1, n), ExplicitVRLittleEndian) for n in range(1, 13)]
    identifier = ident("STUDY", StudyInstanceUID=study_uid(21))
    port = free_port()
    with py_destination(port, STORAGE, status_of=verdict, delay=0.03) as dest:
        async with retrieve_server(tmp_path, {"PYDEST": port}) as server:
            stored = await populate(server.port, data)
            if service == "move":
                result = await asyncio.to_thread(py_move, server.port, identifier, "PYDEST")
                got = dest.stored
                assert dest.originators == {(CALLING, 7)}  # Move Originator AE/Message ID
            else:
                result = await asyncio.to_thread(py_get, server.port, identifier,
                                                 storage=STORAGE, status_of=verdict, delay=0.03)
                got = result.stored
    final = assert_counts(result.responses, 12)
    assert len(result.responses) >= 3, result.responses  # the first pending and later ones
    assert result.responses[0].remaining == 12
    assert final.status == Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES
    assert (final.completed, final.failed, final.warning) == (9, 2, 1)
    assert final.has_dataset
    assert failed_uids(result.final_identifier) == [uid(21, 1, 3), uid(21, 1, 7)]
    assert sorted(got) == sorted(stored)
    assert all(got[u] == stored[u].data for u in got)


# --- 3: C-CANCEL mid-move and mid-get -------------------------------------------------------------


@pytest.mark.parametrize("service", ["move", "get"])
async def test_cancel_mid_transfer(tmp_path: Path, service: str) -> None:
    """40 instances at 50 ms each (2 s); C-CANCEL after the second pending response."""
    total = 40
    data = [(instance("CANCEL", 22, 1, n, size=16), ExplicitVRLittleEndian)
            for n in range(total)]
    identifier = ident("STUDY", StudyInstanceUID=study_uid(22))
    port = free_port()
    with py_destination(port, STORAGE, delay=0.05) as dest:
        async with retrieve_server(tmp_path, {"PYDEST": port}) as server:
            await populate(server.port, data)
            started = time.perf_counter()
            with retrieve_log() as lines:
                if service == "move":
                    result = await asyncio.to_thread(py_move, server.port, identifier,
                                                     "PYDEST", cancel_after=2)
                    got = dest.stored
                else:
                    result = await asyncio.to_thread(py_get, server.port, identifier,
                                                     storage=STORAGE, delay=0.05,
                                                     cancel_after=2)
                    got = result.stored
            elapsed = time.perf_counter() - started
            await assert_echo_works(server.port)  # the server is fine
            if service == "move":
                assert dest.associations == 1
    final = assert_counts(result.responses, total)
    assert final.status == Status.CANCEL
    assert final.completed is not None and final.remaining is not None
    assert final.completed >= 1 and final.remaining > 0
    assert (final.failed, final.warning) == (0, 0)
    assert final.completed + final.remaining == total
    assert len(got) == final.completed  # nothing sent after the cancel was seen
    assert elapsed < 1.5, elapsed  # it stopped, rather than finishing the 2 s of work
    service_name = "C-MOVE" if service == "move" else "C-GET"
    summary = [line for line in lines if line.startswith(f"{service_name} from {CALLING!r}")]
    assert len(summary) == 1, lines
    assert summary[0].endswith("0xFE00 Sub-operations terminated due to cancel"), summary


# --- 4: the other side aborts mid-transfer --------------------------------------------------------


@pytest.mark.parametrize("abort_after", [1, 3])
async def test_destination_aborts_mid_move(tmp_path: Path, abort_after: int) -> None:
    """A destination that sends A-ABORT (from another thread, while data sets of 256 KiB
    stream in) after `abort_after` stores: the rest fail, and the server is fine."""
    total = 8
    data = [(large("ABORT", 23, n), ExplicitVRLittleEndian)
            for n in range(1, total + 1)]
    identifier = ident("STUDY", StudyInstanceUID=study_uid(23))
    port = free_port()
    (tmp_path / "healthy").mkdir()
    with py_destination(port, STORAGE, abort_after=abort_after) as dest:
        async with storescp(tmp_path / "healthy", "+B") as healthy, \
                retrieve_server(tmp_path, {"PYDEST": port, "HEALTHY": healthy.port}) as server:
            stored = await populate(server.port, data)
            with retrieve_log() as lines:
                result = await asyncio.to_thread(py_move, server.port, identifier, "PYDEST")
            assert dest.aborted
            await assert_echo_works(server.port)
            again = await asyncio.to_thread(py_move, server.port, identifier, "HEALTHY")
            assert_identical(received(healthy.directory), stored, list(stored))
    final = assert_counts(result.responses, total)
    assert final.completed is not None and final.failed is not None
    assert final.completed <= abort_after  # the aborting store's response may not get out
    assert final.failed == total - final.completed
    failed = failed_uids(result.final_identifier)
    assert len(failed) == final.failed
    assert set(stored) - set(failed) <= set(dest.stored)  # what counts as completed arrived
    expected = Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES if final.completed else \
        Status.OUT_OF_RESOURCES_SUBOPERATIONS  # PS3.4 C.4.2.1.5: all failed
    assert final.status == expected
    assert any("association to PYDEST lost" in line for line in lines), lines
    healthy_final = assert_counts(again.responses, total)
    assert (healthy_final.status, healthy_final.completed) == (Status.SUCCESS, total)


async def test_requestor_aborts_mid_get(tmp_path: Path) -> None:
    """A C-GET requestor that aborts after 2 stores: the server stops sending and serves the
    next C-GET in full."""
    total = 8
    data = [(large("GONE", 24, n), ExplicitVRLittleEndian)
            for n in range(1, total + 1)]
    identifier = ident("STUDY", StudyInstanceUID=study_uid(24))
    async with retrieve_server(tmp_path) as server:
        stored = await populate(server.port, data)
        aborted = await asyncio.to_thread(py_get, server.port, identifier, storage=STORAGE,
                                          delay=0.05, abort_after=2)
        await assert_echo_works(server.port)
        assert aborted.aborted
        assert 2 <= len(aborted.stored) < total
        again = await asyncio.to_thread(py_get, server.port, identifier, storage=STORAGE)
    final = assert_counts(again.responses, total)
    assert (final.status, final.completed) == (Status.SUCCESS, total)
    assert again.stored == {u: s.data for u, s in stored.items()}


async def test_aborted_get_still_logs_its_summary_line(tmp_path: Path) -> None:
    """Issue 5 (Diagnosis): each C-MOVE/C-GET logs one line with its counts. When the
    requestor aborts mid-get, the counts so far are still logged."""
    data = [(large("GONE", 26, n), ExplicitVRLittleEndian) for n in range(1, 9)]
    async with retrieve_server(tmp_path) as server:
        await populate(server.port, data)
        with retrieve_log() as lines:
            aborted = await asyncio.to_thread(
                py_get, server.port, ident("STUDY", StudyInstanceUID=study_uid(26)),
                storage=STORAGE, delay=0.05, abort_after=2)
            await assert_echo_works(server.port)  # the server saw the abort by now
    assert aborted.aborted
    assert any(line.startswith(f"C-GET from {CALLING!r}") for line in lines), lines


async def test_move_to_storescp_and_get_with_pynetdicom_are_byte_identical(
        tmp_path: Path) -> None:
    """Mixed classes and both uncompressed syntaxes as stored, by both services."""
    from pydicom.uid import ImplicitVRLittleEndian

    data = [(instance("BYTES", 25, 1, n), ExplicitVRLittleEndian) for n in range(1, 4)]
    data += [(instance("BYTES", 25, 2, n, sop_class=MRImageStorage), ImplicitVRLittleEndian)
             for n in range(1, 4)]
    identifier = ident("PATIENT", PatientID="BYTES")
    (tmp_path / "dest").mkdir()
    async with storescp(tmp_path / "dest", "+B") as dest, \
            retrieve_server(tmp_path, {"DEST": dest.port}) as server:
        stored = await populate(server.port, data)
        moved = await asyncio.to_thread(py_move, server.port, identifier, "DEST",
                                        sop_class=PATIENT_ROOT_QR_MOVE)
        got = await asyncio.to_thread(py_get, server.port, identifier, storage=STORAGE,
                                      sop_class=PATIENT_ROOT_QR_GET)
        assert_identical(received(dest.directory), stored, list(stored))
    assert assert_counts(moved.responses, 6).status == Status.SUCCESS
    assert assert_counts(got.responses, 6).status == Status.SUCCESS
    assert got.stored == {u: s.data for u, s in stored.items()}

