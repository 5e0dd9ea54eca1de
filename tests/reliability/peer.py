"""A raw DICOM peer for the live fuzzer: writes any bytes, reads whatever comes back.

It speaks PDUs itself (our encoders, never our client), so it can send what a well-behaved
client never would, and it still plays the requestor's part where the server needs one:
it answers the C-STORE sub-operations of a C-GET so that retrieves run to their end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from minipacs.proto.command_codec import decode_command, encode_command
from minipacs.proto.dimse import CStoreRQ, CStoreRSP, DimseError, DimseMessage, is_response
from minipacs.proto.framer import decode_pdu
from minipacs.proto.pdu import AAbort, AAssociateAC, AAssociateRJ, AReleaseRP, PDataTF, Pdu
from minipacs.proto.pdu_codec import PDU_HEADER_LENGTH, PduError, encode_pdata
from minipacs.proto.status import StatusCategory, category

# The largest PDU we accept back; the server never sends more than we advertise (16 KiB).
MAX_READ_PDU: Final = 1 << 20
_PENDING: Final = frozenset({StatusCategory.PENDING})


class ServerMisbehaved(Exception):
    """The server sent bytes that are no valid PDU or command set: a finding."""


@dataclass
class Tally:
    """What came back from the server over a whole campaign."""

    pdus: Counter[str] = field(default_factory=Counter)  # received PDU kinds
    statuses: Counter[str] = field(default_factory=Counter)  # final statuses by category
    ended: int = 0  # requests whose association the server aborted or closed instead
    silent: Counter[str] = field(default_factory=Counter)  # no answer in time, by request


class RawPeer:
    """One TCP connection to the server, driven by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 tally: Tally) -> None:
        self.reader = reader
        self.writer = writer
        self.tally = tally
        self.closed = False  # the server closed, aborted, or sent what we cannot read
        self.timed_out = False  # the last read found nothing within its timeout
        self.peer_max_pdu = 16384
        self._command = bytearray()
        self._store: tuple[int, CStoreRQ] | None = None  # a C-GET sub-operation in transit

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, host: str, port: int, tally: Tally):  # type: ignore[no-untyped-def]
        reader, writer = await asyncio.open_connection(host, port)
        try:
            yield cls(reader, writer, tally)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    async def write(self, data: bytes) -> None:
        """Write bytes; a connection the server has closed is not an error here."""
        if self.closed or self.writer.is_closing():
            return
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.closed = True

    async def read_pdu(self, timeout: float) -> Pdu | None:
        """The next PDU, or None on end of stream, timeout, or bytes that are no PDU."""
        if self.closed:
            return None
        try:
            async with asyncio.timeout(timeout):
                header = await self.reader.readexactly(PDU_HEADER_LENGTH)
                length = int.from_bytes(header[2:], "big")
                if length > MAX_READ_PDU:
                    raise ServerMisbehaved(f"server sent a PDU of {length} bytes")
                body = await self.reader.readexactly(length)
        except TimeoutError:
            self.closed = self.timed_out = True
            return None
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            self.closed = True
            return None
        try:
            pdu = decode_pdu(header + body)
        except PduError as exc:
            raise ServerMisbehaved(f"server sent an invalid PDU: {exc}") from exc
        self.tally.pdus[type(pdu).__name__] += 1
        if isinstance(pdu, AAbort | AReleaseRP | AAssociateRJ):
            self.closed = True
        return pdu

    async def associate(self, rq: bytes, timeout: float) -> AAssociateAC | None:
        """Send an A-ASSOCIATE-RQ (valid or not); the AC if one came."""
        await self.write(rq)
        pdu = await self.read_pdu(timeout)
        if isinstance(pdu, AAssociateAC):
            self.peer_max_pdu = pdu.user_information.max_length or (1 << 20)
            return pdu
        self.closed = True
        return None

    async def send_message(self, context_id: int, command: bytes, data: bytes | None) -> None:
        """A command set and its data set, cut to the server's maximum PDU length."""
        step = max(self.peer_max_pdu - 6, 1)
        await self.write(encode_pdata(context_id, command, is_command=True, is_last=True))
        if data is not None:
            for start in range(0, max(len(data), 1), step):
                await self.write(encode_pdata(context_id, data[start:start + step],
                                              is_command=False,
                                              is_last=start + step >= len(data)))

    async def responses(self, timeout: float, label: str) -> DimseMessage | None:
        """Read until a final response (answering C-STORE sub-operations on the way); count
        the request under `label` if the server stayed silent."""
        while not self.closed:
            pdu = await self.read_pdu(timeout)
            if not isinstance(pdu, PDataTF):
                break
            for pdv in pdu.pdvs:
                message = await self._take(pdv.context_id, pdv.is_command, pdv.is_last,
                                           pdv.data)
                if message is not None:
                    return message
        if self.timed_out:
            self.tally.silent[label] += 1
        else:
            self.tally.ended += 1
        return None

    async def _take(self, context_id: int, is_command: bool, last: bool, data: bytes
                    ) -> DimseMessage | None:
        if not is_command:
            if last and self._store is not None:
                store_context, rq = self._store
                self._store = None
                rsp = CStoreRSP(message_id_being_responded_to=rq.message_id,
                                affected_sop_class_uid=rq.affected_sop_class_uid,
                                affected_sop_instance_uid=rq.affected_sop_instance_uid)
                await self.write(encode_pdata(store_context, encode_command(rsp),
                                              is_command=True, is_last=True))
            return None
        self._command += data
        if not last:
            return None
        try:
            message = decode_command(bytes(self._command))
        except DimseError as exc:
            raise ServerMisbehaved(f"server sent an invalid command set: {exc}") from exc
        finally:
            self._command.clear()
        if isinstance(message, CStoreRQ):
            self._store = (context_id, message)
            return None
        if is_response(message):
            status_category = category(message.status)
            if status_category in _PENDING:
                return None
            self.tally.statuses[status_category.name] += 1
            return message
        return None
