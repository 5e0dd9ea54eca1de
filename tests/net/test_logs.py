"""Logs a PACS engineer can read: the association summary, refusals, statuses in words."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any, Final

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore

from minipacs.net.client import association
from minipacs.net.server import Server
from minipacs.proto.dimse import CStoreRQ
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.sop import IMPLICIT_VR_LITTLE_ENDIAN
from minipacs.proto.status import Status
from tests.support import (
    LOOPBACK,
    WAIT,
    AssociationLog,
    encode_implicit_le,
    make_ct,
    pynetdicom_ae,
    run_dcmtk,
)

CT_IMAGE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.2"


def write_cts(directory: Path, count: int) -> list[Path]:
    paths = []
    for index in range(1, count + 1):
        ds = make_ct(pixel_bytes=4096, index=index)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = directory / f"ct{index}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


async def storescu(port: int, paths: list[Path]) -> None:
    """DCMTK storescu as a modality sends it: every storage class it knows is proposed."""
    result = await run_dcmtk("storescu", "-aet", "CT_SCANNER", LOOPBACK, str(port),
                             *map(str, paths))
    assert result.returncode == 0, result.stdout + result.stderr


async def test_summary_lists_used_classes_and_counts_duplicates(
        server: Server, tmp_path: Path, assoc_log: AssociationLog,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="minipacs")
    paths = write_cts(tmp_path, 3)
    await storescu(server.port, paths)
    await storescu(server.port, paths)  # re-sent: each one a duplicate
    first, again = await assoc_log.wait_for(2)
    proposed = int(re.search(r"contexts=\d+/(\d+)", first)[1])  # type: ignore[index]
    assert proposed > 10  # storescu proposed many classes; the line names the one used
    assert " used=[CT Image Storage x3] stored=3 duplicates=0 failed=0 " in first, first
    assert " used=[CT Image Storage x3] stored=0 duplicates=3 failed=0 " in again, again
    per_instance = [r.getMessage() for r in caplog.records
                    if r.name != "minipacs.association" and r.levelno >= logging.INFO]
    assert per_instance == []  # a re-sent instance is counted, not logged one line each


def bad_find(port: int) -> list[int]:
    """pynetdicom: a C-FIND with an invalid level (refused with A900)."""
    query = Dataset()
    query.QueryRetrieveLevel = "BOGUS"
    query.StudyInstanceUID = ""
    ae = pynetdicom_ae("FINDER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(LOOPBACK, port)
    assert assoc.is_established
    try:
        responses: Any = assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
        return [int(status.Status) for status, _ in responses]
    finally:
        assoc.release()


async def test_a_c_find_refusal_names_the_calling_ae_and_peer_address(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="minipacs")
    statuses = await asyncio.to_thread(bad_find, server.port)
    assert statuses == [Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS]
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert re.match(r"C-FIND from 'FINDER' at 127\.0\.0\.1:\d+: 0xA900 ", line), line


async def test_failure_statuses_are_hex_and_words_never_enum_names(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="minipacs")
    ds = make_ct(pixel_bytes=1024)
    rq = build_associate_rq("MISMATCH", "ANY-SCP",
                            [(CT_IMAGE_STORAGE, [IMPLICIT_VR_LITTLE_ENDIAN])])
    async with association(LOOPBACK, server.port, rq, artim_timeout=WAIT) as conn:
        message = CStoreRQ(message_id=1, affected_sop_class_uid=CT_IMAGE_STORAGE,
                           affected_sop_instance_uid="1.2.3.999")  # not the data set's UID
        async with asyncio.timeout(WAIT):
            (reply,) = [r async for r in conn.request(1, message, encode_implicit_le(ds))]
    assert reply.message.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS  # type: ignore[union-attr]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "DATASET_DOES_NOT_MATCH" not in text, text
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert re.match(r"C-STORE '1\.2\.3\.999' from 'MISMATCH' at 127\.0\.0\.1:\d+: 0xA900 "
                    r"Data set does not match SOP class "
                    r"\('SOP Instance UID differs from the command'\)$", line), line
