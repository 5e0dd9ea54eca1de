"""Every request ends in a response or an A-ABORT, whatever goes wrong while answering it.

Real sockets: the requests are written by hand, because our own encoder (rightly) refuses
what a hostile or broken peer sends: UIDs over 64 bytes, bytes outside the default
repertoire (PS3.5 §6.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Final

import pytest
from pydicom.dataset import Dataset

from minipacs.net.client import PeerAborted, association
from minipacs.net.server import Server, ServerLimits
from minipacs.ports import Channel, Request
from minipacs.proto.command_codec import decode_command
from minipacs.proto.dimse import CEchoRQ, CommandField, CStoreRSP
from minipacs.proto.negotiation import (
    AcceptorPolicy,
    build_associate_rq,
    default_supported,
)
from minipacs.proto.pdu import AAssociateAC, AReleaseRP, AReleaseRQ, PDataTF
from minipacs.proto.pdu_codec import encode_pdata, encode_pdu
from minipacs.proto.sop import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
from minipacs.proto.status import Status, StatusCategory, category
from minipacs.services.dispatcher import Dispatcher, Outcome, response_for
from tests.interop.retrieve_support import py_get
from tests.support import (
    LOOPBACK,
    WAIT,
    encode_implicit_le,
    make_ct,
    raw_connection,
    read_pdu,
)

CT: Final = "1.2.840.10008.5.1.4.1.1.2"
ECHO_CONTEXT: Final = 1
STORE_CONTEXT: Final = 3
LONG_UID: Final = "1.2.826.0.1.3680043.2.1143." + "9" * 50  # 77 bytes: UI allows 64


def element(tag: int, value: bytes) -> bytes:
    """One command element, Implicit VR Little Endian (PS3.7 §6.3.1)."""
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def c_store_command(message_id: int, instance_uid: bytes) -> bytes:
    """A C-STORE-RQ command set with an arbitrary SOP Instance UID value (PS3.7 §9.3.1.1)."""
    body = b"".join([
        element(0x0000_0002, CT.encode()),  # Affected SOP Class UID
        element(0x0000_0100, struct.pack("<H", CommandField.C_STORE_RQ)),
        element(0x0000_0110, struct.pack("<H", message_id)),
        element(0x0000_0700, struct.pack("<H", 0)),  # Priority MEDIUM
        element(0x0000_0800, struct.pack("<H", 0)),  # a data set follows
        element(0x0000_1000, instance_uid),  # Affected SOP Instance UID
    ])
    return element(0x0000_0000, struct.pack("<I", len(body))) + body


def c_echo_command(message_id: int) -> bytes:
    body = b"".join([
        element(0x0000_0002, VERIFICATION.encode()),
        element(0x0000_0100, struct.pack("<H", CommandField.C_ECHO_RQ)),
        element(0x0000_0110, struct.pack("<H", message_id)),
        element(0x0000_0800, struct.pack("<H", 0x0101)),  # no data set
    ])
    return element(0x0000_0000, struct.pack("<I", len(body))) + body


async def response(reader: asyncio.StreamReader) -> object:
    """The next DIMSE command received (a response arrives within WAIT, or the test fails)."""
    pdu = await read_pdu(reader)
    assert isinstance(pdu, PDataTF), f"expected a response, got {pdu}"
    (pdv,) = pdu.pdvs
    assert pdv.is_command and pdv.is_last
    return decode_command(pdv.data)


@pytest.mark.parametrize("instance_uid", [LONG_UID.encode(), b"1.2.3.4.\xe9"],
                         ids=["uid-over-64-bytes", "non-ascii-uid"])
async def test_a_c_store_whose_uid_cannot_be_echoed_is_answered(
        server: Server, instance_uid: bytes) -> None:
    ds = make_ct(pixel_bytes=1024)
    ds.SOPInstanceUID = instance_uid.decode("latin-1")
    data = encode_implicit_le(ds)
    rq = build_associate_rq("RAWSTORE", "ANY-SCP",
                            [(VERIFICATION, [IMPLICIT_VR_LITTLE_ENDIAN]),
                             (CT, [IMPLICIT_VR_LITTLE_ENDIAN])])
    async with raw_connection(server.port) as (reader, writer):
        writer.write(encode_pdu(rq))
        assert isinstance(await read_pdu(reader), AAssociateAC)
        writer.write(encode_pdata(STORE_CONTEXT, c_store_command(1, instance_uid),
                                  is_command=True, is_last=True))
        writer.write(encode_pdata(STORE_CONTEXT, data, is_command=False, is_last=True))
        rsp = await response(reader)
        assert isinstance(rsp, CStoreRSP) and rsp.message_id_being_responded_to == 1
        assert rsp.affected_sop_instance_uid is None  # the one field that could not go back
        writer.write(encode_pdata(ECHO_CONTEXT, c_echo_command(2), is_command=True,
                                  is_last=True))
        echo = await response(reader)
        assert echo.status == Status.SUCCESS  # type: ignore[attr-defined]


async def raw_store(port: int, ds: Dataset, instance_uid: bytes) -> int:
    """C-STORE `ds` with `instance_uid` in its command, by hand; returns the status."""
    rq = build_associate_rq("RAWSTORE", "ANY-SCP", [(VERIFICATION, [IMPLICIT_VR_LITTLE_ENDIAN]),
                                                    (CT, [IMPLICIT_VR_LITTLE_ENDIAN])])
    async with raw_connection(port) as (reader, writer):
        writer.write(encode_pdu(rq))
        assert isinstance(await read_pdu(reader), AAssociateAC)
        writer.write(encode_pdata(STORE_CONTEXT, c_store_command(1, instance_uid),
                                  is_command=True, is_last=True))
        writer.write(encode_pdata(STORE_CONTEXT, encode_implicit_le(ds), is_command=False,
                                  is_last=True))
        rsp = await response(reader)
        writer.write(encode_pdu(AReleaseRQ()))
        assert isinstance(await read_pdu(reader), AReleaseRP)
    assert isinstance(rsp, CStoreRSP)
    return rsp.status


async def test_a_stored_uid_that_cannot_be_sent_fails_that_sub_operation_only(
        server: Server) -> None:
    """A C-GET of a study holding such an instance sends the others (no 0110, no traceback)."""
    long = make_ct(pixel_bytes=1024, index=1)
    long.SOPInstanceUID = LONG_UID
    if category(await raw_store(server.port, long, LONG_UID.encode())) is not \
            StatusCategory.SUCCESS:
        return  # refused at ingest (a UID grammar check): nothing unsendable can be stored
    fine = make_ct(pixel_bytes=1024, index=2)
    assert await raw_store(server.port, fine, str(fine.SOPInstanceUID).encode()) == 0
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = fine.StudyInstanceUID
    result = await asyncio.to_thread(py_get, server.port, identifier, storage=[CT])
    final = result.responses[-1]
    assert (final.status, final.completed, final.failed) == (
        Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES, 1, 1)
    assert list(result.stored) == [fine.SOPInstanceUID]


@contextlib.asynccontextmanager
async def serving(dispatcher: Dispatcher) -> AsyncIterator[int]:
    policy = AcceptorPolicy(ae_title="ANY-SCP", supported=default_supported())
    server = Server(policy, dispatcher, ServerLimits(artim_timeout=WAIT))
    await server.start(LOOPBACK, 0)
    try:
        yield server.port
    finally:
        await server.shutdown(0)


async def test_when_no_response_can_be_built_the_association_is_aborted() -> None:
    async def unanswerable(channel: Channel, request: Request) -> Outcome:
        return Outcome(response_for(request.message, 0x1_0000))  # fits no US (PS3.5 §6.2)

    dispatcher = Dispatcher()
    dispatcher.register(CommandField.C_ECHO_RQ, [VERIFICATION], unanswerable)
    rq = build_associate_rq("ABORTME", "ANY-SCP", [(VERIFICATION, [IMPLICIT_VR_LITTLE_ENDIAN])])
    async with serving(dispatcher) as port:
        with pytest.raises(PeerAborted):
            async with association(LOOPBACK, port, rq, artim_timeout=WAIT) as conn:
                message = CEchoRQ(message_id=1, affected_sop_class_uid=VERIFICATION)
                async with asyncio.timeout(WAIT):  # an A-ABORT at once, not a silence
                    async for _reply in conn.request(ECHO_CONTEXT, message):
                        pytest.fail("no response can exist")
