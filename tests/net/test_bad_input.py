"""Hostile or broken peers over raw sockets: each loses its association, the server serves on.

Each case ends that association with an A-ABORT (PS3.8 §9.3.8, read back byte for byte) or a
close, and a fresh C-ECHO from another client succeeds afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
import tracemalloc

import pytest

from minipacs.net.server import Server
from minipacs.proto.pdu import (
    AAssociateAC,
    AAssociateRJ,
    AbortReason,
    ItemType,
    PduType,
    RejectReason,
    RejectResult,
    RejectSource,
)
from minipacs.proto.pdu_codec import encode_pdata
from tests.support import (
    ABORT_PREFIX,
    LOOPBACK,
    PDU_HEADER,
    PROMPT,
    TEST_LIMITS,
    AssociationLog,
    assert_echo_works,
    associate_rq,
    raw_connection,
    read_answer,
    read_pdu,
)

ARTIM = TEST_LIMITS["artim_timeout"]
ITEM_HEADER = struct.Struct(">BBH")  # item type, reserved, item length (PS3.8 §9.3.2.1)


def abort_pdu(reason: int) -> bytes:
    """The A-ABORT our server sends as service provider with `reason` (PS3.8 §9.3.8)."""
    return ABORT_PREFIX + bytes([reason])


async def wait_closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes; bounded by ARTIM plus slack."""
    data = b""
    async with asyncio.timeout(ARTIM + 5):
        while chunk := await reader.read(1024):
            data += chunk
    return data


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Fail the test if the server logs an error (an exception escaping an association)."""
    caplog.set_level(logging.WARNING, logger="minipacs")
    return caplog


def assert_no_errors(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r.getMessage() for r in caplog.records
              if r.name.startswith("minipacs") and r.levelno >= logging.ERROR]
    assert not errors


def mangled_rq_item_length() -> bytes:
    """A valid A-ASSOCIATE-RQ whose presentation context item claims 16 more bytes."""
    pdu = bytearray(associate_rq())
    offset = PDU_HEADER.size + 68  # the first item follows the fixed fields (PS3.8 §9.3.2)
    while pdu[offset] != ItemType.PRESENTATION_CONTEXT_RQ:
        offset += ITEM_HEADER.size + ITEM_HEADER.unpack_from(pdu, offset)[2]
    item_type, reserved, length = ITEM_HEADER.unpack_from(pdu, offset)
    ITEM_HEADER.pack_into(pdu, offset, item_type, reserved, length + 16)
    return bytes(pdu)


ABORTED_AT_ONCE = {
    # PDU type 0x08 does not exist (PS3.8 §9.3.1).
    "unknown-pdu-type": (bytes([0x08, 0, 0, 0, 0, 4, 0, 0, 0, 0]), AbortReason.UNRECOGNIZED_PDU),
    # Text is not DICOM: "G" (0x47) is read as an unknown PDU type.
    "http-request": (b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n", AbortReason.UNRECOGNIZED_PDU),
    # Seeded random bytes; the first (0xB9) is not a PDU type either.
    "random-garbage": (random.Random(1234).randbytes(300), AbortReason.UNRECOGNIZED_PDU),
    "rq-item-lengths-disagree": (mangled_rq_item_length(),
                                 AbortReason.INVALID_PDU_PARAMETER_VALUE),
    # A P-DATA-TF in Sta2 is unexpected: AA-1 (PS3.8 Table 9-10).
    "p-data-before-association": (encode_pdata(1, b"\0" * 8, is_command=True, is_last=True),
                                  AbortReason.UNEXPECTED_PDU),
}


@pytest.mark.parametrize("payload,reason", ABORTED_AT_ONCE.values(), ids=ABORTED_AT_ONCE)
async def test_bad_pdu_is_answered_with_abort(server: Server, no_errors: pytest.LogCaptureFixture,
                                              payload: bytes, reason: int) -> None:
    async with raw_connection(server.port) as (reader, writer):
        writer.write(payload)
        assert await read_answer(reader) == abort_pdu(reason)
    await assert_echo_works(server.port)
    assert_no_errors(no_errors)


@pytest.mark.parametrize("pdu_type", [PduType.ASSOCIATE_RQ, PduType.P_DATA_TF])
async def test_huge_declared_length_is_refused_from_the_header(
        server: Server, pdu_type: PduType) -> None:
    tracemalloc.start()
    try:
        async with raw_connection(server.port) as (reader, writer):
            writer.write(PDU_HEADER.pack(pdu_type, 0, 0xFFFF_FFFF))  # the header and nothing else
            started = time.perf_counter()
            answer = await read_answer(reader)
            elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer == abort_pdu(AbortReason.INVALID_PDU_PARAMETER_VALUE)
    assert elapsed < PROMPT  # answered from the header alone, no body awaited
    assert peak < 1 << 20  # nothing of the declared 4 GiB was allocated
    await assert_echo_works(server.port)


async def test_truncated_header_then_close(server: Server, assoc_log: AssociationLog) -> None:
    async with raw_connection(server.port) as (reader, writer):
        writer.write(bytes([PduType.ASSOCIATE_RQ, 0, 0]))
        writer.write_eof()
        assert await read_answer(reader) == b""
    (line,) = await assoc_log.wait_for(1)
    assert "calling=-" in line
    await assert_echo_works(server.port)


async def test_p_data_on_unaccepted_context_aborts(server: Server,
                                                   no_errors: pytest.LogCaptureFixture) -> None:
    async with raw_connection(server.port) as (reader, writer):
        writer.write(associate_rq())
        ac = await read_pdu(reader)
        assert isinstance(ac, AAssociateAC)
        accepted = {pc.context_id for pc in ac.presentation_contexts}
        assert accepted == {1}
        writer.write(encode_pdata(3, b"\0" * 8, is_command=True, is_last=True))
        assert await read_answer(reader) == abort_pdu(AbortReason.INVALID_PDU_PARAMETER_VALUE)
    await assert_echo_works(server.port)
    assert_no_errors(no_errors)


async def test_silent_clients_are_closed_after_artim_without_delaying_others(
        server: Server) -> None:
    silent = [await asyncio.open_connection(LOOPBACK, server.port) for _ in range(5)]
    started = time.perf_counter()
    try:
        # Meanwhile a normal association is served at once: no head-of-line blocking.
        assert await assert_echo_works(server.port) < PROMPT
        answers = await asyncio.gather(*(wait_closed_by_server(r) for r, _ in silent))
        elapsed = time.perf_counter() - started
    finally:
        for _, writer in silent:
            writer.close()
    assert answers == [b""] * 5  # ARTIM expiry in Sta2 closes without a PDU (AA-2)
    assert ARTIM * 0.8 <= elapsed < ARTIM + 3


async def test_half_an_associate_rq_then_silence_is_closed_after_artim(
        server: Server, assoc_log: AssociationLog) -> None:
    rq = associate_rq()
    async with raw_connection(server.port) as (reader, writer):
        started = time.perf_counter()
        writer.write(rq[: len(rq) // 2])
        assert await wait_closed_by_server(reader) == b""
        elapsed = time.perf_counter() - started
    assert ARTIM * 0.8 <= elapsed < ARTIM + 3
    (line,) = await assoc_log.wait_for(1)
    assert "result=timeout (ARTIM timer expired)" in line
    await assert_echo_works(server.port)


@pytest.mark.parametrize("then", [b"", bytes([0x08, 0, 0, 0, 0, 4, 0, 0, 0, 0])],
                         ids=["close", "garbage-then-close"])
async def test_a_client_leaving_right_after_its_request_is_one_info_line(
        server: Server, assoc_log: AssociationLog, caplog: pytest.LogCaptureFixture,
        then: bytes) -> None:
    """A port scanner or health check: A-ASSOCIATE-RQ, then gone before our answer.

    PS3.8 Table 9-10: Evt17 in Sta3 is AA-4 (the A-P-ABORT indication), an invalid PDU in
    Sta3 is AA-8; either way there is nothing left to answer, and nothing to worry about.
    """
    caplog.set_level(logging.DEBUG, logger="minipacs")
    async with raw_connection(server.port) as (reader, writer):
        writer.write(associate_rq("SCANNER") + then)  # one segment with the FIN behind it
        writer.write_eof()
        await wait_closed_by_server(reader)
    (line,) = await assoc_log.wait_for(1)
    assert "calling='SCANNER'" in line and "result=aborted" in line, line
    worse = [r.getMessage() for r in caplog.records
             if r.name.startswith("minipacs") and r.levelno > logging.INFO]
    assert worse == []
    assert not any(r.exc_info for r in caplog.records)
    await assert_echo_works(server.port)


@pytest.mark.parametrize("title", ["EVIL\nFAKE LINE", "\x1b[2J", "NUL\x00HERE"])
async def test_a_calling_ae_title_with_control_characters_is_refused_and_escaped(
        server: Server, assoc_log: AssociationLog, caplog: pytest.LogCaptureFixture,
        title: str) -> None:
    """PS3.5 §6.2: not an AE value, so A-ASSOCIATE-RJ (calling AE title not recognized); the
    summary line shows it escaped: it can neither forge a line nor drive a terminal."""
    caplog.set_level(logging.DEBUG, logger="minipacs")
    async with raw_connection(server.port) as (reader, writer):
        writer.write(associate_rq(title))
        answer = await read_pdu(reader)
    assert answer == AAssociateRJ(RejectResult.PERMANENT, RejectSource.SERVICE_USER,
                                  RejectReason.CALLING_AE_NOT_RECOGNIZED)
    (line,) = await assoc_log.wait_for(1)
    assert f"calling={title!r} " in line, line
    assert "result=rejected (permanent, service user, calling AE title not recognized)" in line
    for record in caplog.records:
        text = record.getMessage()
        assert not any(ord(c) < 0x20 for c in text), text
