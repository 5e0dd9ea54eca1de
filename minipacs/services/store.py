"""Storage Service Class, C-STORE SCP (PS3.4 Annex B): spool, make durable, index, answer.

Order (DESIGN §10): the data set streams into a spool file behind its Part 10 header →
fsync → rename → index commit → Success. A failure at any step removes what was written,
so nothing half-received is indexed and nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import UTC, datetime
from typing import Final

from ..ports import (
    AddOutcome,
    Channel,
    DataSetError,
    FileMeta,
    Index,
    InstanceAttributes,
    InstanceRecord,
    Request,
    Spool,
    Storage,
    StorageError,
    StoredFile,
)
from ..proto.dimse import CStoreRQ
from ..proto.status import Status
from .dispatcher import Outcome, response_for

log = logging.getLogger("minipacs.store")

# Data-set bytes gathered in memory before one write is handed to a thread (DESIGN §14).
SPOOL_BUFFER: Final = 1 << 20


class StoreService:
    """The C-STORE handler; one instance serves every association."""

    def __init__(self, storage: Storage, index: Index) -> None:
        self.storage = storage
        self.index = index

    async def __call__(self, channel: Channel, request: Request) -> Outcome:
        message = request.message
        assert isinstance(message, CStoreRQ) and request.data is not None
        info = channel.info
        meta = FileMeta(
            sop_class_uid=message.affected_sop_class_uid,
            sop_instance_uid=message.affected_sop_instance_uid,
            transfer_syntax_uid=request.context.transfer_syntax,
            sending_ae_title=info.calling_ae,
            receiving_ae_title=info.called_ae,
        )
        try:
            await asyncio.to_thread(self.storage.check_free_space)
            spool = await asyncio.to_thread(self.storage.open_spool, meta)
        except StorageError as exc:
            return self._fail(message, Status.OUT_OF_RESOURCES, str(exc))
        try:
            head = await self._receive(request, spool)
        except StorageError as exc:  # disk full or I/O error, answered as at commit; the
            # spool is gone, and the dispatcher drains the rest of the message (PS3.4 B.2.3)
            await asyncio.to_thread(spool.discard)
            return self._fail(message, Status.OUT_OF_RESOURCES, str(exc))
        except BaseException:
            await asyncio.shield(asyncio.to_thread(spool.discard))
            raise
        # The whole message is here: finishing must survive an A-ABORT or a cancellation
        # (no row without a file, no file half-renamed).
        return await asyncio.shield(self._finish(channel, message, meta, spool, head))

    async def _receive(self, request: Request, spool: Spool) -> bytes | None:
        """Stream the data set into the spool; returns it whole when it fit in the buffer."""
        assert request.data is not None
        buffer = bytearray()
        flushed = False
        async for chunk in request.data:
            buffer += chunk
            if len(buffer) >= SPOOL_BUFFER:
                await asyncio.to_thread(spool.write, bytes(buffer))
                buffer.clear()
                flushed = True
        data = bytes(buffer)
        if data:
            await asyncio.to_thread(spool.write, data)
        return None if flushed else data

    async def _finish(self, channel: Channel, message: CStoreRQ, meta: FileMeta, spool: Spool,
                      head: bytes | None) -> Outcome:
        try:
            stored = await asyncio.to_thread(spool.commit)
        except StorageError as exc:
            await asyncio.to_thread(spool.discard)
            return self._fail(message, Status.OUT_OF_RESOURCES, str(exc))
        try:
            attributes = await self._attributes(stored, meta, head)
            mismatch = _mismatch(message, attributes)
            if mismatch:
                raise _Refused(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, mismatch)
            result = await self.index.add_instance(InstanceRecord(
                attributes=attributes,
                stored=stored,
                transfer_syntax_uid=meta.transfer_syntax_uid,
                calling_ae_title=meta.sending_ae_title,
                called_ae_title=meta.receiving_ae_title,
                received_at=datetime.now(UTC),
            ))
        except Exception as exc:  # _Refused, DataSetError, IndexWriteError or a bug
            await asyncio.to_thread(self.storage.delete, stored.key)
            if isinstance(exc, _Refused):
                return self._fail(message, exc.status, exc.comment)
            if isinstance(exc, DataSetError):
                return self._fail(message, Status.CANNOT_UNDERSTAND, exc.comment)
            log.exception("indexing %s failed", message.affected_sop_instance_uid)
            return self._fail(message, Status.OUT_OF_RESOURCES, "index write failed")
        if result.outcome is AddOutcome.REPLACED and result.replaced_key:
            await self._delete_unreferenced(result.replaced_key)
        elif result.outcome is AddOutcome.KEPT_FIRST:
            await self._delete_unreferenced(stored.key)
        log.debug("stored %s from %s (%d bytes, %s)", message.affected_sop_instance_uid,
                  meta.sending_ae_title, stored.size, result.outcome)
        return Outcome(response_for(message, Status.SUCCESS))

    async def _delete_unreferenced(self, key: str) -> None:
        """Remove a file no row points to; failing here must not fail a durable store."""
        try:
            await asyncio.to_thread(self.storage.delete, key)
        except StorageError as exc:  # an orphan file: `minipacs db check` reports it
            log.warning("cannot delete unreferenced file %s: %s", key, exc)

    async def _attributes(self, stored: StoredFile, meta: FileMeta,
                          head: bytes | None) -> InstanceAttributes:
        # A data set that fit in the buffer is parsed from memory: no file read back.
        if head is not None:
            def opener() -> io.BytesIO:
                return io.BytesIO(head)
        else:
            def opener() -> io.BytesIO:  # type: ignore[misc]
                return self.storage.open_dataset(stored.key, stored.dataset_offset)
        return await self.index.read_attributes(opener, meta.transfer_syntax_uid)

    @staticmethod
    def _fail(message: CStoreRQ, status: Status, comment: str) -> Outcome:
        log.warning("C-STORE %s refused: %s (%s)", message.affected_sop_instance_uid,
                    status.name, comment)
        return Outcome(response_for(message, status, comment))


class _Refused(Exception):
    def __init__(self, status: Status, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


def _mismatch(message: CStoreRQ, attributes: InstanceAttributes) -> str:
    """PS3.4 B.2.3 A900: the data set's SOP Class/Instance UID differ from the command's."""
    if attributes.sop_instance_uid != message.affected_sop_instance_uid:
        return "SOP Instance UID differs from the command"
    if attributes.sop_class_uid != message.affected_sop_class_uid:
        return "SOP Class UID differs from the command"
    return ""
