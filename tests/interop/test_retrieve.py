"""C-GET and C-MOVE SCP against DCMTK getscu/movescu/storescp and pynetdicom (PS3.4 C.4.2-3).

A real in-process server is populated with C-STORE (minipacs' own requestor, one
association); retrieved data sets must be byte-identical to what was stored, and the counts
of every pending and final response exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)

from minipacs.net.client import association
from minipacs.net.server import Server
from minipacs.proto.dimse import CStoreRQ
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.sop import (
    PATIENT_ROOT_QR_GET,
    PATIENT_ROOT_QR_MOVE,
    STUDY_ROOT_QR_GET,
    STUDY_ROOT_QR_MOVE,
)
from minipacs.proto.status import Status
from tests.interop.dicomfiles import dataset_bytes, encode_dataset
from tests.support import (
    LOOPBACK,
    attached,
    free_port,
    make_config,
    pynetdicom_ae,
    run_dcmtk,
    running_server,
    storescp,
)

ROOT = "1.2.826.0.1.3680043.8.498.5151"
SERVER_AE = "MINIPACS"
CALLING = "RETRIEVER"


@dataclass(frozen=True, slots=True)
class Stored:
    """An instance put on the server: its UIDs and the data-set bytes sent."""

    sop_class: str
    sop_instance: str
    study: str
    series: str
    transfer_syntax: str
    data: bytes


def instance(patient: str, study: int, series: int, number: int, *,
             sop_class: str = CTImageStorage, size: int = 64) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{ROOT}.{study}.{series}.{number}"
    ds.StudyInstanceUID = f"{ROOT}.{study}"
    ds.SeriesInstanceUID = f"{ROOT}.{study}.{series}"
    ds.PatientID = patient
    ds.PatientName = f"Retrieve^{patient}"
    ds.Modality = "MR" if sop_class == MRImageStorage else "CT"
    ds.StudyDate = "20240420"
    ds.SeriesNumber = series
    ds.InstanceNumber = number
    ds.Rows = 1
    ds.Columns = size // 2
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((number + i) % 256 for i in range(size))
    return ds


async def populate(port: int, items: Sequence[tuple[Dataset, str]]) -> dict[str, Stored]:
    """C-STORE every (data set, transfer syntax) over one association; all must succeed."""
    keys = sorted({(str(ds.SOPClassUID), ts) for ds, ts in items})
    rq = build_associate_rq("POPULATE", SERVER_AE, [(c, [t]) for c, t in keys])
    stored: dict[str, Stored] = {}
    async with association(LOOPBACK, port, rq, artim_timeout=5) as conn:
        contexts = {(c.abstract_syntax, c.transfer_syntax): c.context_id
                    for c in conn.info.negotiated.contexts.values()}
        for ds, ts in items:
            data = encode_dataset(ds, ts)
            message = CStoreRQ(message_id=conn.next_message_id(),
                               affected_sop_class_uid=str(ds.SOPClassUID),
                               affected_sop_instance_uid=str(ds.SOPInstanceUID))
            replies = [r async for r in conn.request(contexts[(str(ds.SOPClassUID), ts)],
                                                     message, data)]
            assert replies[-1].message.status == Status.SUCCESS  # type: ignore[union-attr]
            stored[str(ds.SOPInstanceUID)] = Stored(
                str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.StudyInstanceUID),
                str(ds.SeriesInstanceUID), ts, data)
    return stored


def standard_data() -> list[tuple[Dataset, str]]:
    """Patient RET-1: study 1 (CT series x3 Explicit, MR series x2 Explicit), study 2 (CT
    x2 Implicit); patient RET-2: study 3 (CT x1 Explicit)."""
    return [
        *((instance("RET-1", 1, 1, n), ExplicitVRLittleEndian) for n in range(1, 4)),
        *((instance("RET-1", 1, 2, n, sop_class=MRImageStorage), ExplicitVRLittleEndian)
          for n in range(1, 3)),
        *((instance("RET-1", 2, 1, n), ImplicitVRLittleEndian) for n in range(1, 3)),
        (instance("RET-2", 3, 1, 1), ExplicitVRLittleEndian),
    ]


@contextlib.asynccontextmanager
async def retrieve_server(tmp_path: Path, peers: dict[str, int] | None = None,
                          database_url: str | None = None,
                          **retrieve: Any) -> AsyncIterator[Server]:
    """The server for retrieves; on the default SQLite file unless `database_url` says."""
    database = {} if database_url is None else {"database": {"url": database_url}}
    config = make_config(
        tmp_path, ae_title=SERVER_AE, **database,
        storage={"min_free_mb": 0},
        peers={ae: {"host": LOOPBACK, "port": port} for ae, port in (peers or {}).items()},
        retrieve={"connect_timeout": 2.0, "timeout": 10.0, **retrieve})
    async with running_server(config) as server:
        yield server


@contextlib.contextmanager
def retrieve_log() -> Iterator[list[str]]:
    lines: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    with attached(Handler(), "minipacs.retrieve", logging.DEBUG):
        yield lines


def received(directory: Path) -> dict[str, bytes]:
    """SOP Instance UID → data-set bytes of the Part 10 files a DCMTK tool wrote."""
    from pydicom import dcmread

    out = {}
    for path in directory.iterdir():
        if path.is_file() and not path.name.endswith(".log"):
            uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            out[uid] = dataset_bytes(path)
    return out


def assert_identical(got: dict[str, bytes], stored: dict[str, Stored],
                     expected: Sequence[str]) -> None:
    assert sorted(got) == sorted(expected)
    for uid in expected:
        assert got[uid] == stored[uid].data, uid


def study_uid(n: int) -> str:
    return f"{ROOT}.{n}"


# --- C-GET with DCMTK getscu -------------------------------------------------------------------


@pytest.mark.parametrize("model", ["-P", "-S"])
async def test_getscu_study_level_gets_byte_identical_data_sets(tmp_path: Path, model: str,
                                                                 db_url: str) -> None:
    async with retrieve_server(tmp_path, database_url=db_url) as server:
        stored = await populate(server.port, standard_data())
        out = tmp_path / "got"
        out.mkdir()
        with retrieve_log() as lines:
            result = await run_dcmtk(
                "getscu", "-v", model, "-aet", CALLING, "-aec", SERVER_AE, "+B",
                "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=RET-1",
                "-k", f"StudyInstanceUID={study_uid(1)}", "-od", str(out),
                LOOPBACK, str(server.port))
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        expected = [u for u, s in stored.items() if s.study == study_uid(1)]
        assert_identical(received(out), stored, expected)
        summary = [line for line in lines if line.startswith("C-GET from 'RETRIEVER'")]
        assert len(summary) == 1, lines
        assert "same association" in summary[0] and "5 completed, 0 failed" in summary[0]
        assert "PatientID" in " ".join(lines)  # the ignored key is logged


def same_elements(got: Dataset, want: Dataset) -> None:
    """Element for element: the same tags with the same values (VRs may be resolved)."""
    assert [e.tag for e in got] == [e.tag for e in want]
    for a, b in zip(got, want, strict=True):
        if a.VR == "SQ":
            assert len(a.value) == len(b.value), a.tag
            for x, y in zip(a.value, b.value, strict=True):
                same_elements(x, y)
        else:
            assert a.value == b.value, a.tag


def decoded(data: bytes, transfer_syntax: str) -> Dataset:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset

    syntax = UID(transfer_syntax)
    return read_dataset(DicomBytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian)


async def test_getscu_implicit_instances_are_converted(tmp_path: Path) -> None:
    """Study 2 is stored Implicit VR LE, and getscu 3.6.7 proposes its storage contexts so
    that Explicit VR LE is accepted: the data sets are converted, element for element."""
    from pydicom import dcmread

    async with retrieve_server(tmp_path) as server:
        stored = await populate(server.port, standard_data())
        keys = ("-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid(2)}")
        out = tmp_path / "got"
        out.mkdir()
        with retrieve_log() as lines:
            result = await run_dcmtk("getscu", "-v", "-S", "-aec", SERVER_AE, *keys,
                                     "-od", str(out), LOOPBACK, str(server.port))
    assert result.returncode == 0, result.stdout + result.stderr
    files = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, out.iterdir())}
    assert sorted(files) == [f"{ROOT}.2.1.1", f"{ROOT}.2.1.2"]
    for uid, ds in files.items():
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert stored[uid].transfer_syntax == ImplicitVRLittleEndian
        same_elements(ds, decoded(stored[uid].data, ImplicitVRLittleEndian))
    assert not [line for line in lines if "cannot send" in line], lines
    assert any("2 completed, 0 failed" in line and "0x0000" in line for line in lines), lines


# --- C-GET with pynetdicom ---------------------------------------------------------------------


@dataclass
class GetResult:
    statuses: list[Dataset]
    identifiers: list[Dataset | None]
    stored: dict[str, bytes]


def pynetdicom_get(port: int, identifier: Dataset, *, sop_class: str = PATIENT_ROOT_QR_GET,
                   syntaxes: Sequence[str] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
                   storage: Sequence[str] = (CTImageStorage, MRImageStorage),
                   cancel_after: int | None = None) -> GetResult:
    """A C-GET with role selection; every response and every received data set kept."""
    from pynetdicom import build_role, evt

    ae = pynetdicom_ae(CALLING)
    ae.add_requested_context(sop_class)
    for uid in storage:
        for ts in syntaxes:
            ae.add_requested_context(uid, ts)
    got: dict[str, bytes] = {}

    def on_store(event: Any) -> int:
        got[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000

    roles = [build_role(uid, scp_role=True) for uid in storage]
    assoc = ae.associate(LOOPBACK, port, ae_title=SERVER_AE, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    statuses, identifiers = [], []
    try:
        responses = assoc.send_c_get(identifier, sop_class, msg_id=7)
        for status, ident in responses:
            statuses.append(status)
            identifiers.append(ident)
            if cancel_after is not None and len(statuses) == cancel_after:
                context_id = next(c.context_id for c in assoc.accepted_contexts
                                  if c.abstract_syntax == sop_class)
                assoc.send_c_cancel(7, context_id)
    finally:
        assoc.release()
    return GetResult(statuses, identifiers, got)


def ident(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


def check_counts(result: GetResult, total: int) -> Dataset:
    """Every pending response adds up to `total`; the final one carries no Remaining."""
    *pendings, final = result.statuses
    assert pendings, "at least one pending response"
    last_done = -1
    for status in pendings:
        assert status.Status == Status.PENDING
        done = (status.NumberOfCompletedSuboperations + status.NumberOfFailedSuboperations
                + status.NumberOfWarningSuboperations)
        assert done + status.NumberOfRemainingSuboperations == total
        assert done >= last_done
        last_done = done
    return final


@pytest.mark.parametrize(("sop_class", "level", "keys", "count"), [
    (PATIENT_ROOT_QR_GET, "PATIENT", {"PatientID": "RET-1"}, 7),
    (PATIENT_ROOT_QR_GET, "STUDY", {"PatientID": "RET-1",
                                    "StudyInstanceUID": [study_uid(1), study_uid(3)]}, 6),
    (STUDY_ROOT_QR_GET, "SERIES", {"SeriesInstanceUID": f"{ROOT}.1.2"}, 2),
    (STUDY_ROOT_QR_GET, "IMAGE", {"StudyInstanceUID": study_uid(1),
                                  "SeriesInstanceUID": f"{ROOT}.1.1",
                                  "SOPInstanceUID": [f"{ROOT}.1.1.1", f"{ROOT}.1.1.3"]}, 2),
])
async def test_pynetdicom_get_every_level(tmp_path: Path, sop_class: str, level: str,
                                          keys: dict[str, object], count: int,
                                          db_url: str) -> None:
    async with retrieve_server(tmp_path, database_url=db_url) as server:
        stored = await populate(server.port, standard_data())
        result = await asyncio.to_thread(pynetdicom_get, server.port, ident(level, **keys),
                                         sop_class=sop_class)
    final = check_counts(result, count)
    assert final.Status == Status.SUCCESS
    assert final.NumberOfCompletedSuboperations == count
    assert final.NumberOfFailedSuboperations == 0
    assert "NumberOfRemainingSuboperations" not in final
    assert len(result.stored) == count
    for uid, data in result.stored.items():
        assert data == stored[uid].data


async def test_pynetdicom_get_with_one_syntax_converts_the_others(tmp_path: Path) -> None:
    async with retrieve_server(tmp_path) as server:
        stored = await populate(server.port, standard_data())
        result = await asyncio.to_thread(pynetdicom_get, server.port,
                                         ident("PATIENT", PatientID="RET-1"),
                                         syntaxes=[ExplicitVRLittleEndian])
    final = check_counts(result, 7)
    assert final.Status == Status.SUCCESS
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (7, 0)
    assert len(result.stored) == 7
    for uid, data in result.stored.items():
        if stored[uid].transfer_syntax == ExplicitVRLittleEndian:
            assert data == stored[uid].data  # streamed as stored
        else:
            same_elements(decoded(data, ExplicitVRLittleEndian),
                          decoded(stored[uid].data, ImplicitVRLittleEndian))


async def test_pynetdicom_get_without_a_class_fails_it_with_b000(tmp_path: Path) -> None:
    async with retrieve_server(tmp_path) as server:
        await populate(server.port, standard_data())
        result = await asyncio.to_thread(pynetdicom_get, server.port,
                                         ident("PATIENT", PatientID="RET-1"),
                                         storage=[CTImageStorage])
    final = check_counts(result, 7)
    assert final.Status == Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (5, 2)
    failed = result.identifiers[-1]
    assert failed is not None
    assert sorted(failed.FailedSOPInstanceUIDList) == [f"{ROOT}.1.2.1", f"{ROOT}.1.2.2"]
    assert len(result.stored) == 5


async def test_pynetdicom_get_refusals(tmp_path: Path) -> None:
    async with retrieve_server(tmp_path) as server:
        await populate(server.port, standard_data())
        nothing = await asyncio.to_thread(pynetdicom_get, server.port,
                                          ident("STUDY", StudyInstanceUID="1.2.3.4"))
        missing = await asyncio.to_thread(pynetdicom_get, server.port,
                                          ident("SERIES", StudyInstanceUID=study_uid(1)))
    (final,) = nothing.statuses
    assert final.Status == Status.SUCCESS
    assert final.NumberOfCompletedSuboperations == final.NumberOfFailedSuboperations == 0
    (refused,) = missing.statuses
    assert refused.Status == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert "SeriesInstanceUID" in refused.ErrorComment


async def test_pynetdicom_cancel_mid_get(tmp_path: Path) -> None:
    data = [(instance("MANY", 9, 1, n, size=16), ExplicitVRLittleEndian) for n in range(150)]
    async with retrieve_server(tmp_path) as server:
        await populate(server.port, data)
        result = await asyncio.to_thread(pynetdicom_get, server.port,
                                         ident("STUDY", StudyInstanceUID=study_uid(9)),
                                         cancel_after=1)
    final = check_counts(result, 150)
    assert final.Status == Status.CANCEL
    remaining = final.NumberOfRemainingSuboperations
    assert remaining > 0
    assert final.NumberOfCompletedSuboperations + remaining == 150
    assert len(result.stored) == final.NumberOfCompletedSuboperations


async def test_300_instance_get_keeps_memory_flat(tmp_path: Path) -> None:
    data = [(instance("BULK", 8, 1 + n // 100, n, size=16), ExplicitVRLittleEndian)
            for n in range(300)]
    async with retrieve_server(tmp_path) as server:
        await populate(server.port, data)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = await run_dcmtk("getscu", "-S", "-aec", SERVER_AE, "--ignore",
                                 "-k", "QueryRetrieveLevel=STUDY",
                                 "-k", f"StudyInstanceUID={study_uid(8)}",
                                 LOOPBACK, str(server.port), timeout=50)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.returncode == 0, result.stdout + result.stderr
    assert after - before < 20 * 1024, (before, after)  # KiB: far less than 20 MB of growth


# --- C-MOVE -----------------------------------------------------------------------------------


async def test_movescu_to_storescp_byte_identical(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "dest").mkdir()
    async with storescp(tmp_path / "dest", "+B") as dest, \
            retrieve_server(tmp_path, {"DEST": dest.port}, database_url=db_url) as server:
        stored = await populate(server.port, standard_data())
        with retrieve_log() as lines:
            result = await run_dcmtk(
                "movescu", "-v", "-S", "-aet", CALLING, "-aec", SERVER_AE, "-aem", "DEST",
                "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study_uid(1)}",
                "-k", f"SeriesInstanceUID={ROOT}.1.1", LOOPBACK, str(server.port))
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        expected = [u for u, s in stored.items() if s.series == f"{ROOT}.1.1"]
        assert_identical(received(dest.directory), stored, expected)
        summary = [line for line in lines if line.startswith("C-MOVE from 'RETRIEVER' to DEST")]
        assert len(summary) == 1 and "3 completed, 0 failed" in summary[0], lines


def pynetdicom_move(port: int, identifier: Dataset, destination: str,
                    sop_class: str = PATIENT_ROOT_QR_MOVE) -> list[tuple[Dataset,
                                                                         Dataset | None]]:
    ae = pynetdicom_ae(CALLING)
    ae.add_requested_context(sop_class)
    assoc = ae.associate(LOOPBACK, port, ae_title=SERVER_AE)
    assert assoc.is_established
    try:
        return list(assoc.send_c_move(identifier, destination, sop_class))
    finally:
        assoc.release()


@contextlib.contextmanager
def pynetdicom_scp(port: int, syntaxes: Sequence[str],
                   classes: Sequence[str] = (CTImageStorage, MRImageStorage)
                   ) -> Iterator[dict[str, tuple[bytes, Any]]]:
    """A pynetdicom storage SCP accepting `classes` (CT/MR) in `syntaxes` only."""
    from pynetdicom import evt

    ae = pynetdicom_ae("PYDEST")
    for uid in classes:
        ae.add_supported_context(uid, list(syntaxes))
    got: dict[str, tuple[bytes, Any]] = {}

    def on_store(event: Any) -> int:
        rq = event.request
        got[str(rq.AffectedSOPInstanceUID)] = (
            rq.DataSet.getvalue(), (rq.MoveOriginatorApplicationEntityTitle,
                                    rq.MoveOriginatorMessageID))
        return 0x0000

    scp = ae.start_server((LOOPBACK, port), block=False,
                          evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield got
    finally:
        scp.shutdown()


async def test_move_counts_originator_and_syntax_rules(tmp_path: Path) -> None:
    """A destination accepting CT only: the MR series fails; the Implicit LE study goes."""
    port = free_port()
    with pynetdicom_scp(port, [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
                        [CTImageStorage]) as got:
        async with retrieve_server(tmp_path, {"PYDEST": port}) as server:
            stored = await populate(server.port, standard_data())
            responses = await asyncio.to_thread(
                pynetdicom_move, server.port, ident("PATIENT", PatientID="RET-1"), "PYDEST")
    *pendings, (final, failed) = responses
    assert pendings and all(s.Status == Status.PENDING for s, _ in pendings)
    for status, _ in pendings:
        assert (status.NumberOfRemainingSuboperations + status.NumberOfCompletedSuboperations
                + status.NumberOfFailedSuboperations + status.NumberOfWarningSuboperations) == 7
    assert final.Status == Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (5, 2)
    assert "NumberOfRemainingSuboperations" not in final
    assert failed is not None
    assert sorted(failed.FailedSOPInstanceUIDList) == [f"{ROOT}.1.2.1", f"{ROOT}.1.2.2"]
    assert len(got) == 5
    for uid, (data, originator) in got.items():
        assert data == stored[uid].data
        assert originator == (CALLING, 1)


async def test_move_unknown_and_unreachable_destinations(tmp_path: Path) -> None:
    down = free_port()  # nothing listens there
    async with retrieve_server(tmp_path, {"DOWN": down}) as server:
        await populate(server.port, standard_data())
        identifier = ident("STUDY", StudyInstanceUID=study_uid(1))
        unknown = await asyncio.to_thread(pynetdicom_move, server.port, identifier, "NOBODY",
                                          STUDY_ROOT_QR_MOVE)
        with retrieve_log() as lines:
            unreachable = await asyncio.to_thread(pynetdicom_move, server.port, identifier,
                                                  "DOWN", STUDY_ROOT_QR_MOVE)
    ((status, _),) = unknown
    assert status.Status == Status.MOVE_DESTINATION_UNKNOWN
    assert "NOBODY" in status.ErrorComment
    final, failed = unreachable[-1]
    assert final.Status == Status.OUT_OF_RESOURCES_SUBOPERATIONS
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 5)
    assert "DOWN" in final.ErrorComment
    assert failed is not None and len(failed.FailedSOPInstanceUIDList) == 5
    assert any("cannot connect" in line for line in lines), lines


async def test_destination_aborting_mid_move_fails_the_rest(tmp_path: Path) -> None:
    from pynetdicom import evt

    port = free_port()
    ae = pynetdicom_ae("PYDEST")
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    seen: list[str] = []

    def on_store(event: Any) -> int:
        seen.append(str(event.request.AffectedSOPInstanceUID))
        if len(seen) == 2:
            event.assoc.abort()
        return 0x0000

    scp = ae.start_server((LOOPBACK, port), block=False,
                          evt_handlers=[(evt.EVT_C_STORE, on_store)])
    data = [(instance("ABORT", 7, 1, n), ExplicitVRLittleEndian) for n in range(6)]
    try:
        async with retrieve_server(tmp_path, {"PYDEST": port}) as server:
            await populate(server.port, data)
            responses = await asyncio.to_thread(
                pynetdicom_move, server.port, ident("STUDY", StudyInstanceUID=study_uid(7)),
                "PYDEST", STUDY_ROOT_QR_MOVE)
            final, failed = responses[-1]
            assert final.NumberOfCompletedSuboperations == 1
            assert final.NumberOfFailedSuboperations == 5
            assert final.Status == Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES
            assert failed is not None and len(failed.FailedSOPInstanceUIDList) == 5
            # The server is fine: a C-GET on a new association still works.
            again = await asyncio.to_thread(pynetdicom_get, server.port,
                                            ident("STUDY", StudyInstanceUID=study_uid(7)),
                                            sop_class=STUDY_ROOT_QR_GET)
            assert again.statuses[-1].Status == Status.SUCCESS
    finally:
        scp.shutdown()
