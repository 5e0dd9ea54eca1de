"""The in-process server over loopback: acceptance policy, limits, DIMSE survival, logs."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from minipacs.net.client import association
from minipacs.net.server import Server
from minipacs.proto.dimse import CStoreRQ
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.pdu import (
    PRESENTATION_TEMPORARY_CONGESTION,
    RejectReason,
    RejectResult,
    RejectSource,
)
from minipacs.proto.sop import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
from minipacs.proto.status import Status
from tests.support import (
    LOOPBACK,
    AssociationLog,
    Rejection,
    ServerFactory,
    assert_echo_works,
    make_ct,
    pynetdicom_ae,
    pynetdicom_reject,
    run_dcmtk,
    stored_files,
)

OUR_AE = "MINIPACS"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
KNOWN_PEER = "KNOWN_SCU"


# --- one log line per association ------------------------------------------------------------


async def test_one_structured_log_line_per_association(
        server: Server, assoc_log: AssociationLog, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="minipacs.association")
    result = await run_dcmtk("echoscu", LOOPBACK, str(server.port))
    assert result.returncode == 0, result.stdout + result.stderr
    await assoc_log.wait_for(1)
    records = [r for r in caplog.records if r.name == "minipacs.association"]
    assert len(records) == 1
    line = records[0].getMessage()
    assert re.fullmatch(
        r"association peer=127\.0\.0\.1:\d+ tls=no calling='ECHOSCU' called='ANY-SCP' "
        r"contexts=1/1 used=\[Verification SOP Class x1\] duration=\d+\.\d{3}s messages=1 "
        r"result=released", line), line


# --- association rejections (PS3.8 §9.3.4) ----------------------------------------------------


async def test_wrong_called_ae_title_is_rejected(start_server: ServerFactory) -> None:
    server = await start_server(ae_title=OUR_AE, security={"check_called_ae_title": True})
    wrong = await run_dcmtk("echoscu", "-aec", "NOT_MINIPACS", LOOPBACK, str(server.port))
    assert wrong.returncode != 0
    assert "Association Rejected" in wrong.stdout + wrong.stderr
    right = await run_dcmtk("echoscu", "-aec", OUR_AE, LOOPBACK, str(server.port))
    assert right.returncode == 0, right.stdout + right.stderr

    rejection = await asyncio.to_thread(pynetdicom_reject, server.port, called="NOT_MINIPACS")
    assert rejection == Rejection(RejectResult.PERMANENT, RejectSource.SERVICE_USER,
                                  RejectReason.CALLED_AE_NOT_RECOGNIZED)


async def test_unknown_calling_ae_title_is_rejected(start_server: ServerFactory) -> None:
    server = await start_server(
        peers={KNOWN_PEER: {"host": LOOPBACK, "port": 11113}},
        security={"unknown_aes": []})
    rejection = await asyncio.to_thread(pynetdicom_reject, server.port, calling="STRANGER")
    assert rejection == Rejection(RejectResult.PERMANENT, RejectSource.SERVICE_USER,
                                  RejectReason.CALLING_AE_NOT_RECOGNIZED)
    known = await run_dcmtk("echoscu", "-aet", KNOWN_PEER, LOOPBACK, str(server.port))
    assert known.returncode == 0, known.stdout + known.stderr


async def test_association_over_the_limit_is_rejected(start_server: ServerFactory,
                                                      assoc_log: AssociationLog) -> None:
    server = await start_server(limits={"max_associations": 1})
    request = build_associate_rq("HOLDER", "ANY-SCP",
                                 [(VERIFICATION, [IMPLICIT_VR_LITTLE_ENDIAN])])
    async with association(LOOPBACK, server.port, request, connect_timeout=5,
                           artim_timeout=5):
        rejection = await asyncio.to_thread(pynetdicom_reject, server.port)
        assert rejection == Rejection(RejectResult.TRANSIENT,
                                      RejectSource.SERVICE_PROVIDER_PRESENTATION,
                                      PRESENTATION_TEMPORARY_CONGESTION)
    lines = sorted(await assoc_log.wait_for(2), key=lambda line: "calling='HOLDER'" in line)
    assert "calling='PYNETDICOM'" in lines[0]
    assert lines[0].endswith("result=rejected (over the limit of 1 associations)")
    assert "calling='HOLDER'" in lines[1] and lines[1].endswith("result=released")
    await assert_echo_works(server.port)  # the slot is free again


# --- DIMSE over pynetdicom: a C-STORE, a service we lack; the association survives ------------


def store_then_echo(port: int) -> tuple[int, int]:
    """pynetdicom: C-STORE a small CT, then C-ECHO on the same association (blocking)."""
    ds = make_ct()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ae = pynetdicom_ae()
    ae.add_requested_context(CTImageStorage, ImplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, port)
    assert assoc.is_established
    try:
        store = assoc.send_c_store(ds)
        assert "Status" in store, "no C-STORE response"
        echo = assoc.send_c_echo()
        assert "Status" in echo, "no C-ECHO response: the association did not survive"
        return int(store.Status), int(echo.Status)
    finally:
        assoc.release()


def find_then_echo(port: int) -> tuple[list[int], int]:
    """pynetdicom: a C-FIND with an invalid level, then C-ECHO on the same association."""
    query = Dataset()
    query.QueryRetrieveLevel = "BOGUS"
    query.StudyInstanceUID = ""
    ae = pynetdicom_ae()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, port)
    assert assoc.is_established
    try:
        statuses: list[int] = []
        responses: Any = assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
        for status, _identifier in responses:
            assert "Status" in status, "no C-FIND response"
            statuses.append(int(status.Status))
        echo = assoc.send_c_echo()
        assert "Status" in echo, "no C-ECHO response: the association did not survive"
        return statuses, int(echo.Status)
    finally:
        assoc.release()


async def test_c_store_is_stored_and_association_survives(server: Server,
                                                           tmp_path: Path) -> None:
    store, echo = await asyncio.to_thread(store_then_echo, server.port)
    assert store == Status.SUCCESS
    assert echo == Status.SUCCESS
    (stored,) = stored_files(tmp_path)
    assert dcmread(stored).SOPInstanceUID == make_ct().SOPInstanceUID


async def test_failed_c_find_leaves_the_association_usable(server: Server) -> None:
    statuses, echo = await asyncio.to_thread(find_then_echo, server.port)
    assert statuses == [Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS]  # PS3.4 C.4.1.1.4 A900
    assert echo == Status.SUCCESS


async def test_data_set_source_failing_mid_send_aborts_the_association(
        server: Server, tmp_path: Path) -> None:
    """Half a data set on the wire leaves no way to go on (PS3.8 Annex E): we abort."""
    rq = build_associate_rq("FAILSCU", OUR_AE, [(CT_IMAGE_STORAGE, [IMPLICIT_VR_LITTLE_ENDIAN])])

    async def broken_source() -> AsyncIterator[bytes]:
        yield b"\x08\x00\x05\x00\x0a\x00\x00\x00ISO_IR 100"  # a first, well-formed fragment
        raise OSError("disk read failed")

    message = CStoreRQ(message_id=1, affected_sop_class_uid=CT_IMAGE_STORAGE,
                       affected_sop_instance_uid="1.2.3.4")
    async with association(LOOPBACK, server.port, rq, artim_timeout=5) as conn:
        (context,) = conn.info.negotiated.contexts.values()
        with pytest.raises(OSError):
            async for _reply in conn.request(context.context_id, message, broken_source()):
                pass
        await asyncio.wait_for(conn.transport.closed(), 5)
    assert conn.transport.outcome == "aborted"
    assert not stored_files(tmp_path)  # the server kept nothing of the half data set
