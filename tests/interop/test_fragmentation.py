"""Large data sets cut into many P-DATA-TF PDUs, both ways (PS3.8 §9.3.5, Annex D).

(a) pynetdicom sends ~1 MB C-STOREs to our server under various maximum PDU lengths; our
server reassembles and stores the data set byte for byte, answers only after the last
fragment, and the association stays usable.
(b) our client sends a 1 MB C-STORE to DCMTK storescp; a relay between the two reads every
PDU header to prove that we never exceed the maximum length storescp advertised.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ImplicitVRLittleEndian
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from minipacs.net.client import association
from minipacs.net.server import Server
from minipacs.proto.command_codec import decode_command, encode_command
from minipacs.proto.dimse import CStoreRQ, CStoreRSP
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.pdu import AAssociateAC, AReleaseRP, AReleaseRQ, PDataTF, PduType
from minipacs.proto.pdu_codec import encode_pdata, encode_pdu
from minipacs.proto.sop import IMPLICIT_VR_LITTLE_ENDIAN
from minipacs.proto.status import Status
from tests.support import (
    LOOPBACK,
    PDU_HEADER,
    WAIT,
    ServerFactory,
    dataset_bytes_of,
    encode_implicit_le,
    make_ct,
    pynetdicom_ae,
    raw_connection,
    read_pdu,
    stored_files,
    storescp,
)

ONE_MB = 1 << 20
SMALL_PDU = 4096
PDV_OVERHEAD = 6  # PDV item length (4), context ID (1), message control header (1)
STORESCP_DEFAULT_PDU = 16384
UNLIMITED = 0


@pytest.fixture(scope="module")
def big_ct() -> Dataset:
    ds = make_ct(ONE_MB)
    ds.file_meta = FileMetaDataset()  # pynetdicom takes the encoding from here
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


# --- (a) pynetdicom -> our server -----------------------------------------------------------


def store_big_then_echo(port: int, ds: Dataset, max_pdu: int) -> tuple[int, int, int | None]:
    """pynetdicom: C-STORE `ds`, then C-ECHO; returns both statuses and our advertised max."""
    ae = pynetdicom_ae()
    ae.add_requested_context(CTImageStorage, ImplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, port, max_pdu=max_pdu)
    assert assoc.is_established
    try:
        store = assoc.send_c_store(ds)
        assert "Status" in store, "no C-STORE response"
        echo = assoc.send_c_echo()
        assert "Status" in echo, "no C-ECHO response: the association did not survive"
        return int(store.Status), int(echo.Status), assoc.acceptor.maximum_length
    finally:
        assoc.release()


@pytest.mark.parametrize("our_max", [None, SMALL_PDU], ids=["our-default", "our-4096"])
@pytest.mark.parametrize("their_max", [SMALL_PDU, UNLIMITED], ids=["their-4096", "their-0"])
async def test_pynetdicom_sends_big_c_store(start_server: ServerFactory, big_ct: Dataset,
                                            tmp_path: Path, our_max: int | None,
                                            their_max: int) -> None:
    sections = {"limits": {"max_pdu_length": our_max}} if our_max else {}
    server = await start_server(**sections)
    store, echo, advertised = await asyncio.to_thread(
        store_big_then_echo, server.port, big_ct, their_max)
    # pynetdicom had to cut the data set to our maximum: a larger PDU would have been aborted.
    assert advertised == (our_max or server.policy.max_pdu_length)
    assert store == Status.SUCCESS
    assert echo == Status.SUCCESS
    (stored,) = stored_files(tmp_path)  # reassembled byte for byte from every fragment
    assert dataset_bytes_of(stored) == encode_implicit_le(big_ct)


async def test_response_comes_only_after_the_last_fragment(server: Server, big_ct: Dataset,
                                                           tmp_path: Path) -> None:
    data = encode_implicit_le(big_ct)
    rq = build_associate_rq("RAW", "ANY-SCP", [(CTImageStorage, [IMPLICIT_VR_LITTLE_ENDIAN])],
                            max_pdu_length=16384)
    command = CStoreRQ(message_id=7, affected_sop_class_uid=CTImageStorage,
                       affected_sop_instance_uid=big_ct.SOPInstanceUID)
    step = SMALL_PDU - PDV_OVERHEAD
    async with raw_connection(server.port) as (reader, writer):
        writer.write(encode_pdu(rq))
        ac = await read_pdu(reader)
        assert isinstance(ac, AAssociateAC)
        (context,) = ac.presentation_contexts
        cid = context.context_id
        writer.write(encode_pdata(cid, encode_command(command), is_command=True, is_last=True))
        for offset in range(0, len(data) - step, step):
            writer.write(encode_pdata(cid, data[offset:offset + step], is_command=False,
                                      is_last=False))
        await writer.drain()
        with pytest.raises(TimeoutError):  # everything but the last fragment: no answer yet
            async with asyncio.timeout(0.3):
                await reader.read(1)
        last = (len(data) - 1) // step * step
        writer.write(encode_pdata(cid, data[last:], is_command=False, is_last=True))
        response = await read_pdu(reader)  # stored and indexed by now
        assert isinstance(response, PDataTF)
        (pdv,) = response.pdvs
        assert pdv.is_command and pdv.is_last
        message = decode_command(pdv.data)
        assert isinstance(message, CStoreRSP)
        assert message.message_id_being_responded_to == 7
        assert message.status == Status.SUCCESS
        writer.write(encode_pdu(AReleaseRQ()))
        assert isinstance(await read_pdu(reader), AReleaseRP)
    (stored,) = stored_files(tmp_path)
    assert dataset_bytes_of(stored) == data


# --- (b) our client -> DCMTK storescp -------------------------------------------------------


@dataclass
class PduTap:
    """A relay that records the (type, length) of every PDU the client sends through it."""

    target: int
    sent: list[tuple[int, int]] = field(default_factory=list)
    port: int = 0

    async def _client_to_server(self, src: asyncio.StreamReader,
                                dst: asyncio.StreamWriter) -> None:
        buf = bytearray()
        skip = 0  # body bytes of the current PDU still to pass before the next header
        while data := await src.read(65536):
            dst.write(data)
            buf += data
            while True:
                if skip:
                    taken = min(skip, len(buf))
                    del buf[:taken]
                    skip -= taken
                    if skip:
                        break
                if len(buf) < PDU_HEADER.size:
                    break
                pdu_type, _, length = PDU_HEADER.unpack_from(buf)
                self.sent.append((pdu_type, length))
                del buf[:PDU_HEADER.size]
                skip = length
            await dst.drain()
        dst.write_eof()

    @staticmethod
    async def _server_to_client(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        dst.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target)
        try:
            await asyncio.gather(self._client_to_server(reader, up_writer),
                                 self._server_to_client(up_reader, writer))
        except OSError:
            pass
        finally:
            up_writer.close()
            writer.close()

    def pdata_lengths(self) -> list[int]:
        return [length for pdu_type, length in self.sent if pdu_type == PduType.P_DATA_TF]


@contextlib.asynccontextmanager
async def pdu_tap(target: int) -> AsyncIterator[PduTap]:
    tap = PduTap(target)
    relay = await asyncio.start_server(tap._relay, LOOPBACK, 0)
    tap.port = relay.sockets[0].getsockname()[1]
    try:
        yield tap
    finally:
        relay.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await relay.wait_closed()


async def send_c_store(port: int, ds: Dataset, data: bytes) -> tuple[int, int]:
    """Our client: C-STORE `data`; returns the status and the peer's max PDU length."""
    rq = build_associate_rq("MINIPACS", "STORESCP",
                            [(CTImageStorage, [IMPLICIT_VR_LITTLE_ENDIAN])])
    async with association(LOOPBACK, port, rq, connect_timeout=WAIT,
                           artim_timeout=WAIT) as conn:
        (context,) = conn.info.negotiated.contexts.values()
        assert context.transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
        message = CStoreRQ(message_id=conn.next_message_id(),
                           affected_sop_class_uid=CTImageStorage,
                           affected_sop_instance_uid=ds.SOPInstanceUID)
        async with asyncio.timeout(WAIT):
            replies = [reply async for reply in conn.request(context.context_id, message, data)]
    return replies[-1].message.status, conn.info.negotiated.peer_max_pdu  # type: ignore[union-attr]


@pytest.mark.parametrize("scp_max", [SMALL_PDU, None, 131072],
                         ids=["scp-4096", "scp-default", "scp-131072"])
async def test_our_big_c_store_to_storescp(tmp_path: Path, big_ct: Dataset,
                                           scp_max: int | None) -> None:
    data = encode_implicit_le(big_ct)
    options = ["+B"]  # bit-preserving: the file holds the data set exactly as received
    if scp_max:
        options += ["--max-pdu", str(scp_max)]
    async with storescp(tmp_path, *options) as scp, pdu_tap(scp.port) as tap:
        status, peer_max = await send_c_store(tap.port, big_ct, data)
    assert status == Status.SUCCESS
    assert peer_max == (scp_max or STORESCP_DEFAULT_PDU)
    lengths = tap.pdata_lengths()
    assert max(lengths) == peer_max  # every PDU within the limit, and the limit used fully
    assert sum(lengths) > len(data)

    (received,) = scp.directory.iterdir()
    assert dataset_bytes_of(received) == data
    stored = dcmread(received)
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert stored.SOPInstanceUID == big_ct.SOPInstanceUID
    assert stored.PixelData == big_ct.PixelData
