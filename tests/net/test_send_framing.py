"""Router.send writes a data set as separate, complete PDUs (no joined copy of it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydicom.uid import CTImageStorage

from minipacs.net.router import Router
from minipacs.net.transport import Transport
from minipacs.proto.dimse import CStoreRQ
from minipacs.proto.framer import decode_pdu
from minipacs.proto.pdu import ContextResult, PDataTF
from tests.proto.pair import AssociationPair

PEER_MAX_PDU = 4096  # what the acceptor advertises: the largest PDU we may send it
PDV_OVERHEAD = 6  # PDV item length (4) + context ID (1) + message control header (1)
PDU_HEADER = 6  # type, reserved, 32-bit length


class RecordingWriter:
    """Stands in for asyncio.StreamWriter; keeps every write as the list it came in."""

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []

    def write(self, data: bytes) -> None:
        self.calls.append([bytes(data)])

    def writelines(self, parts: list[bytes]) -> None:
        self.calls.append([bytes(p) for p in parts])

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> None:
        return None

    def close(self) -> None:
        pass


async def connection() -> tuple[Router, RecordingWriter, int]:
    """A requestor association established in memory, over a recording writer."""
    pair = AssociationPair(acceptor_max_pdu=PEER_MAX_PDU)
    pair.establish()
    writer = RecordingWriter()
    transport = Transport(asyncio.StreamReader(), writer,  # type: ignore[arg-type]
                          requestor=True, max_pdu_length=PEER_MAX_PDU, artim_timeout=1.0)
    transport.assoc = pair.requestor
    accepted = pair.requestor.accept
    assert accepted is not None
    context_id = 3  # CT Image Storage: the second context proposed (odd IDs, PS3.8 §9.3.2.2)
    assert any(pc.context_id == context_id and pc.result == ContextResult.ACCEPTANCE
               for pc in accepted.presentation_contexts)
    return transport.channel, writer, context_id


def store_rq(conn: Router) -> CStoreRQ:
    return CStoreRQ(message_id=conn.next_message_id(),
                    affected_sop_class_uid=str(CTImageStorage),
                    affected_sop_instance_uid="1.2.3.4")


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.mark.parametrize("as_stream", [False, True])
async def test_data_set_goes_out_as_one_pdu_per_part(as_stream: bool) -> None:
    conn, writer, context_id = await connection()
    data = bytes(i % 253 for i in range(3 * PEER_MAX_PDU + 100))
    dataset = chunks_of(data, 5000) if as_stream else data
    await conn.send(context_id, store_rq(conn), dataset)

    parts = [part for call in writer.calls for part in call]
    pdus = [decode_pdu(part) for part in parts]  # each part is exactly one whole PDU
    assert all(isinstance(p, PDataTF) and len(p.pdvs) == 1 for p in pdus)
    assert all(len(part) <= PEER_MAX_PDU + PDU_HEADER for part in parts)
    pdvs = [p.pdvs[0] for p in pdus]  # type: ignore[union-attr]
    assert pdvs[0].is_command and pdvs[0].is_last
    body = pdvs[1:]
    assert not any(p.is_command for p in body)
    assert [p.is_last for p in body] == [False] * (len(body) - 1) + [True]
    assert b"".join(p.data for p in body) == data
    assert max(len(p.data) for p in body) == PEER_MAX_PDU - PDV_OVERHEAD
    # The command travels with the first data PDU, in one writelines call.
    assert len(writer.calls[0]) > 1


async def test_empty_data_set_is_one_last_pdv() -> None:
    conn, writer, context_id = await connection()
    await conn.send(context_id, store_rq(conn), b"")
    pdus = [decode_pdu(part) for call in writer.calls for part in call]
    assert len(pdus) == 2
    last = pdus[1].pdvs[0]  # type: ignore[union-attr]
    assert (last.is_command, last.is_last, last.data) == (False, True, b"")
