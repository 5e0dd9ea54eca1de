"""Storage Service Class, C-STORE SCP (PS3.4 Annex B): spool, make durable, index, answer.

Order (DESIGN §10): the data set goes into a spool file behind its Part 10 header →
fsync → link to its key → index commit → release of the spool entry → Success. A failure at
any step removes what was written, so nothing half-received is indexed and nothing
acknowledged is lost; a crash at any step is settled at the next start (`Storage.release`).

Thread hops (DESIGN §14): a data set that fits in `SPOOL_BUFFER` is parsed, checked and
made durable in one hop, then the index writer's batch takes one more; a larger one streams
into the spool one ~1 MiB write per hop and is parsed back from the committed file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar

from ..ports import (
    AddOutcome,
    AttributeParser,
    Channel,
    DataSetError,
    FileMeta,
    Index,
    InstanceAttributes,
    InstanceRecord,
    PatientConflict,
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
_T = TypeVar("_T")


class ToThread(Protocol):
    """How blocking calls leave the event loop (`asyncio.to_thread`'s signature)."""

    def __call__(self, func: Callable[..., _T], /, *args: Any) -> Awaitable[_T]: ...


class StoreService:
    """The C-STORE handler; one instance serves every association."""

    def __init__(self, storage: Storage, index: Index, parser: AttributeParser, *,
                 to_thread: ToThread = asyncio.to_thread) -> None:
        self.storage = storage
        self.index = index
        self.parser = parser
        self._to_thread = to_thread  # every thread hop goes through it (tests count them)

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
            whole, spool = await self._receive(request, meta)
        except StorageError as exc:  # below the watermark, disk full or I/O error; the
            # spool is gone, and the dispatcher drains the rest of the message (PS3.4 B.2.3)
            return self._fail(message, Status.OUT_OF_RESOURCES, str(exc))
        # The whole message is here: finishing must survive an A-ABORT or a cancellation
        # (no row without a file, no file half-renamed).
        if spool is None:
            return await asyncio.shield(self._finish_in_memory(message, meta, whole))
        return await asyncio.shield(self._finish_spooled(message, meta, spool, whole))

    async def _receive(self, request: Request, meta: FileMeta) -> tuple[bytes, Spool | None]:
        """Gather the data set; past `SPOOL_BUFFER` bytes, stream it into a spool.

        Returns the data set (spool None) when it fit in the buffer, else the spool and the
        bytes not yet written to it. A failure or cancellation removes the spool.
        """
        assert request.data is not None
        buffer = bytearray()
        spool: Spool | None = None
        try:
            async for chunk in request.data:
                buffer += chunk
                if len(buffer) >= SPOOL_BUFFER:
                    if spool is None:
                        spool = await self._open_spool(meta, bytes(buffer))
                    else:
                        await self._to_thread(spool.write, bytes(buffer))
                    buffer.clear()
        except BaseException:
            if spool is not None:
                await asyncio.shield(self._to_thread(spool.discard))
            raise
        return bytes(buffer), spool

    async def _open_spool(self, meta: FileMeta, first: bytes) -> Spool:
        """Check free space, create the spool and write its first piece (one thread hop)."""

        def open_and_write() -> Spool:
            self.storage.check_free_space()  # PS3.4 B.2.3: A700 before spooling
            spool = self.storage.open_spool(meta)
            spool.write(first)  # removes the spool on failure
            return spool

        opening = asyncio.ensure_future(self._to_thread(open_and_write))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:  # the thread goes on: remove what it made
            with contextlib.suppress(Exception):
                spool = await opening
                await self._to_thread(spool.discard)
            raise

    async def _finish_in_memory(self, message: CStoreRQ, meta: FileMeta, data: bytes) -> Outcome:
        """Parse, check, store and commit in one thread hop, then index (DESIGN §10, §14).

        Parsing first means a data set refused with A900 or C000 never reaches the disk.
        """

        def parse_and_store() -> tuple[InstanceAttributes, StoredFile]:
            attributes = self.parser.parse(data, meta.transfer_syntax_uid)
            _check(message, attributes)
            return attributes, self.storage.store(meta, data)

        try:
            attributes, stored = await self._to_thread(parse_and_store)
        except StorageError as exc:
            return self._fail(message, Status.OUT_OF_RESOURCES, str(exc))
        except _Refused as exc:
            return self._fail(message, exc.status, exc.comment)
        except DataSetError as exc:
            return self._fail(message, Status.CANNOT_UNDERSTAND, exc.comment)
        return await self._index(message, meta, stored, attributes)

    async def _finish_spooled(self, message: CStoreRQ, meta: FileMeta, spool: Spool,
                              tail: bytes) -> Outcome:
        """Write the last piece, commit, parse back from the file (one hop), then index."""

        def commit() -> StoredFile:
            if tail:
                spool.write(tail)  # removes the spool on failure
            return spool.commit()

        def parse(stored: StoredFile) -> InstanceAttributes:
            with self.storage.open_dataset(stored.key, stored.dataset_offset) as fp:
                attributes = self.parser.parse(fp, meta.transfer_syntax_uid)
            _check(message, attributes)
            return attributes

        try:
            stored = await self._to_thread(commit)
        except StorageError as exc:
            await self._to_thread(spool.discard)
            return self._fail(message, Status.OUT_OF_RESOURCES, str(exc))
        try:
            attributes = await self._to_thread(parse, stored)
        except Exception as exc:  # _Refused, DataSetError, StorageError or a bug
            await self._delete_unreferenced(stored.key)
            if isinstance(exc, _Refused):
                return self._fail(message, exc.status, exc.comment)
            if isinstance(exc, DataSetError):
                return self._fail(message, Status.CANNOT_UNDERSTAND, exc.comment)
            log.exception("parsing %s failed", message.affected_sop_instance_uid)
            return self._fail(message, Status.OUT_OF_RESOURCES, "cannot read the stored file")
        return await self._index(message, meta, stored, attributes)

    async def _index(self, message: CStoreRQ, meta: FileMeta, stored: StoredFile,
                     attributes: InstanceAttributes) -> Outcome:
        """Commit the index row, then answer; a file no row keeps is removed (DESIGN §10)."""
        try:
            result = await self.index.add_instance(InstanceRecord(
                attributes=attributes,
                stored=stored,
                transfer_syntax_uid=meta.transfer_syntax_uid,
                calling_ae_title=meta.sending_ae_title,
                called_ae_title=meta.receiving_ae_title,
                received_at=datetime.now(UTC),
            ))
        except PatientConflict as exc:  # storage.patient_conflict: refuse
            await self._delete_unreferenced(stored.key)
            return self._fail(message, Status.CANNOT_UNDERSTAND, exc.comment)
        except Exception:  # IndexWriteError, OutOfResources (database full) or a bug
            await self._delete_unreferenced(stored.key)
            log.exception("indexing %s failed", message.affected_sop_instance_uid)
            return self._fail(message, Status.OUT_OF_RESOURCES, "index write failed")
        if result.outcome is AddOutcome.KEPT_FIRST:
            await self._delete_unreferenced(stored.key)
        else:
            self.storage.release(stored.key)  # the row is durable: the intent record goes
            if result.outcome is AddOutcome.REPLACED and result.replaced_key:
                await self._delete_unreferenced(result.replaced_key)
        log.debug("stored %s from %s (%d bytes, %s)", message.affected_sop_instance_uid,
                  meta.sending_ae_title, stored.size, result.outcome)
        return Outcome(response_for(message, Status.SUCCESS))

    async def _delete_unreferenced(self, key: str) -> None:
        """Remove a file no row points to; failing here must not fail a durable store."""
        try:
            await self._to_thread(self.storage.delete, key)
        except StorageError as exc:  # an orphan file: `minipacs db check` reports it
            log.warning("cannot delete unreferenced file %s: %s", key, exc)

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


def _check(message: CStoreRQ, attributes: InstanceAttributes) -> None:
    """PS3.4 B.2.3 A900: the data set's SOP Class/Instance UID differ from the command's."""
    if attributes.sop_instance_uid != message.affected_sop_instance_uid:
        raise _Refused(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                       "SOP Instance UID differs from the command")
    if attributes.sop_class_uid != message.affected_sop_class_uid:
        raise _Refused(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                       "SOP Class UID differs from the command")
