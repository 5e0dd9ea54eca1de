"""Conversion on the way out of C-MOVE/C-GET, against DCMTK storescp/movescu/getscu and
pynetdicom: destinations that accept one uncompressed syntax only, compressed instances
decompressed, and a destination that accepts nothing usable (PS3.4 C.4.2.3, C.4.3.3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from minipacs.proto.sop import STUDY_ROOT_QR_MOVE
from minipacs.proto.status import Status
from minipacs.services.transcode import decoder_missing
from tests.interop.test_retrieve import (
    CALLING,
    ROOT,
    SERVER_AE,
    decoded,
    ident,
    populate,
    pynetdicom_move,
    pynetdicom_scp,
    retrieve_log,
    retrieve_server,
    same_elements,
    standard_data,
    study_uid,
)
from tests.support import LOOPBACK, free_port, run_dcmtk, storescp

COMPRESSED = [("SC_rgb_jpeg_dcmtk.dcm", JPEGBaseline8Bit), ("JPEG2000.dcm", JPEG2000),
              ("MR_small_RLE.dcm", RLELossless)]
COMPRESSED_STUDY = 40


def compressed_data() -> list[tuple[Dataset, str]]:
    """pydicom's own compressed test files, renamed into one study of ours."""
    items = []
    for n, (name, ts) in enumerate(COMPRESSED, 1):
        missing = decoder_missing(ts)
        if missing is not None:
            pytest.skip(missing)
        path = get_testdata_file(name, download=False)  # shipped with pydicom
        if path is None:
            pytest.skip(f"pydicom's test file {name} is not installed")
        ds = dcmread(str(path))
        assert ds.file_meta.TransferSyntaxUID == ts
        ds.PatientID = "COMPRESSED"
        ds.StudyInstanceUID = study_uid(COMPRESSED_STUDY)
        ds.SeriesInstanceUID = f"{ROOT}.{COMPRESSED_STUDY}.{n}"
        ds.SOPInstanceUID = f"{ROOT}.{COMPRESSED_STUDY}.{n}.1"
        del ds.file_meta
        items.append((ds, ts))
    return items


def reference_pixels() -> dict[str, tuple[str, object]]:
    """SOP Instance UID → (stored syntax, pixel array as pydicom decodes the stored file)."""
    out = {}
    for n, (name, ts) in enumerate(COMPRESSED, 1):
        ds = dcmread(str(get_testdata_file(name, download=False)))
        out[f"{ROOT}.{COMPRESSED_STUDY}.{n}.1"] = (ts, ds.pixel_array)
    return out


def check_decompressed(directory: Path, syntax: str) -> None:
    files = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, directory.iterdir())
             if ds.file_meta.TransferSyntaxUID == syntax}
    reference = reference_pixels()
    assert sorted(files) == sorted(reference)
    for uid, ds in files.items():
        _, pixels = reference[uid]
        assert (ds.pixel_array == pixels).all(), uid  # type: ignore[attr-defined]
        assert ds.PhotometricInterpretation in ("MONOCHROME2", "RGB")


async def test_movescu_to_an_implicit_only_storescp_converts(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    async with storescp(tmp_path / "dest", "+xi", "+B") as dest, \
            retrieve_server(tmp_path, {"DEST": dest.port}) as server:
        stored = await populate(server.port, standard_data())
        with retrieve_log() as lines:
            result = await run_dcmtk(
                "movescu", "-S", "-aet", CALLING, "-aec", SERVER_AE, "-aem", "DEST",
                "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid(1)}",
                LOOPBACK, str(server.port))
        assert result.returncode == 0, result.stdout + result.stderr
        files = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, dest.directory.iterdir())}
    expected = [u for u, s in stored.items() if s.study == study_uid(1)]
    assert sorted(files) == sorted(expected)
    for uid, ds in files.items():
        assert stored[uid].transfer_syntax == ExplicitVRLittleEndian
        assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        same_elements(ds, decoded(stored[uid].data, ExplicitVRLittleEndian))
    assert sum("is converted to Implicit VR Little Endian" in line for line in lines) == 2, lines
    assert any("5 completed, 0 failed" in line for line in lines), lines


async def test_compressed_instances_are_decompressed_for_move_and_get(tmp_path: Path) -> None:
    data = compressed_data()
    (tmp_path / "dest").mkdir()
    got = tmp_path / "got"
    got.mkdir()
    keys = ("-k", "QueryRetrieveLevel=STUDY",
            "-k", f"StudyInstanceUID={study_uid(COMPRESSED_STUDY)}")
    async with storescp(tmp_path / "dest", "+xi", "+B") as dest, \
            retrieve_server(tmp_path, {"DEST": dest.port}) as server:
        await populate(server.port, data)
        moved = await run_dcmtk("movescu", "-S", "-aet", CALLING, "-aec", SERVER_AE,
                                "-aem", "DEST", *keys, LOOPBACK, str(server.port))
        assert moved.returncode == 0, moved.stdout + moved.stderr
        check_decompressed(dest.directory, ImplicitVRLittleEndian)
        # getscu proposes the uncompressed syntaxes only; we accept Explicit VR LE.
        fetched = await run_dcmtk("getscu", "-S", "-aet", CALLING, "-aec", SERVER_AE, *keys,
                                  "-od", str(got), LOOPBACK, str(server.port))
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        check_decompressed(got, ExplicitVRLittleEndian)


async def test_destination_accepting_nothing_usable_fails_everything(tmp_path: Path) -> None:
    port = free_port()
    with pynetdicom_scp(port, [JPEGBaseline8Bit]) as got:
        async with retrieve_server(tmp_path, {"PYDEST": port}) as server:
            await populate(server.port, standard_data())
            with retrieve_log() as lines:
                responses = await asyncio.to_thread(
                    pynetdicom_move, server.port, ident("STUDY", StudyInstanceUID=study_uid(1)),
                    "PYDEST", STUDY_ROOT_QR_MOVE)
    final, failed = responses[-1]
    assert final.Status == Status.OUT_OF_RESOURCES_SUBOPERATIONS
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 5)
    assert "accepted no context" in final.ErrorComment
    assert failed is not None and len(failed.FailedSOPInstanceUIDList) == 5
    assert got == {}
    cannot = [line for line in lines if "cannot send" in line]
    assert len(cannot) == 2, lines  # once per (SOP class, stored syntax): CT and MR
    assert all("was not accepted" in line for line in cannot), cannot


async def test_ct_only_destination_gets_b000_for_the_rest(tmp_path: Path) -> None:
    port = free_port()
    with pynetdicom_scp(port, [ExplicitVRLittleEndian], [CTImageStorage]) as got:
        async with retrieve_server(tmp_path, {"PYDEST": port}) as server:
            stored = await populate(server.port, standard_data())
            responses = await asyncio.to_thread(
                pynetdicom_move, server.port, ident("PATIENT", PatientID="RET-1"), "PYDEST")
    final, failed = responses[-1]
    assert final.Status == Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (5, 2)
    assert failed is not None
    assert sorted(failed.FailedSOPInstanceUIDList) == [f"{ROOT}.1.2.1", f"{ROOT}.1.2.2"]
    for uid, (data, _) in got.items():  # the Implicit LE study went converted
        same_elements(decoded(data, ExplicitVRLittleEndian),
                      decoded(stored[uid].data, stored[uid].transfer_syntax))
    assert {stored[u].transfer_syntax for u in got} == {ExplicitVRLittleEndian,
                                                        ImplicitVRLittleEndian}
