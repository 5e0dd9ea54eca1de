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
import io
import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, Final, Protocol, TypeVar

from ..ports import (
    AddOutcome,
    AttributeParser,
    Channel,
    DataSetError,
    FileMeta,
    Index,
    InstanceAttributes,
    InstanceRecord,
    Metrics,
    NoMetrics,
    PatientConflict,
    Request,
    Spool,
    Storage,
    StorageError,
    StoredFile,
)
from ..proto.dimse import CStoreRQ
from ..proto.sop import dataset_encoding
from ..proto.status import Status
from ..proto.uid import is_valid_uid
from .dataset_codec import InflateError, inflated_size
from .dispatcher import Outcome, response_for

log = logging.getLogger("minipacs.store")

# Data-set bytes gathered in memory before one write is handed to a thread (DESIGN §14).
SPOOL_BUFFER: Final = 1 << 20
MAX_INFLATED: Final = 1 << 30  # limits.max_inflated_mb: what a Deflated data set may become
_T = TypeVar("_T")


class ToThread(Protocol):
    """How blocking calls leave the event loop (`asyncio.to_thread`'s signature)."""

    def __call__(self, func: Callable[..., _T], /, *args: Any) -> Awaitable[_T]: ...


@dataclass(frozen=True, slots=True)
class Ingested:
    """The outcome of one ingest, whatever carried the data set (C-STORE, STOW-RS)."""

    status: Status
    comment: str = ""
    attributes: InstanceAttributes | None = None  # what was stored, on success
    duplicate: bool = False  # we already had this instance (received again)


class StoreService:
    """The C-STORE handler; one instance serves every association.

    `ingest` is its transport-independent core (File Meta + a stream of data-set bytes in,
    a status out): STOW-RS feeds it too, with the same durability, duplicates policy and
    bounded memory.
    """

    def __init__(self, storage: Storage, index: Index, parser: AttributeParser,
                 metrics: Metrics | None = None, *, max_inflated: int = MAX_INFLATED,
                 to_thread: ToThread = asyncio.to_thread) -> None:
        self.storage = storage
        self.index = index
        self.parser = parser
        self.metrics = metrics or NoMetrics()
        self.max_inflated = max_inflated
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
        done = await self.ingest(meta, request.data)
        if done.attributes is not None:  # for the audit trail: instances kept, by study
            channel.usage.studies[done.attributes.study_instance_uid] += 1
        return Outcome(response_for(message, done.status, done.comment or None),
                       duplicate=done.duplicate)

    async def ingest(self, meta: FileMeta, data: AsyncIterable[bytes], *,
                     study: str | None = None) -> Ingested:
        """Store one data set whose SOP class and instance `meta` announces (DESIGN §10);
        with `study`, only if it belongs to that study (STOW-RS to /studies/{study})."""
        try:
            whole, spool = await self._receive(data, meta)
        except StorageError as exc:  # below the watermark, disk full or I/O error; the
            # spool is gone, and the dispatcher drains the rest of the message (PS3.4 B.2.3)
            return self._fail(meta, Status.OUT_OF_RESOURCES, str(exc))
        # The whole message is here: finishing must survive an A-ABORT or a cancellation
        # (no row without a file, no file half-renamed).
        if spool is None:
            return await asyncio.shield(self._finish_in_memory(meta, whole, study))
        return await asyncio.shield(self._finish_spooled(meta, spool, whole, study))

    async def _receive(self, data: AsyncIterable[bytes], meta: FileMeta
                       ) -> tuple[bytes, Spool | None]:
        """Gather the data set; past `SPOOL_BUFFER` bytes, stream it into a spool.

        Returns the data set (spool None) when it fit in the buffer, else the spool and the
        bytes not yet written to it. A failure or cancellation removes the spool.
        """
        buffer = bytearray()
        spool: Spool | None = None
        try:
            async for chunk in data:
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

    async def _finish_in_memory(self, meta: FileMeta, data: bytes,
                                study: str | None) -> Ingested:
        """Parse, check, store and commit in one thread hop, then index (DESIGN §10, §14).

        Parsing first means a data set refused with A900 or C000 never reaches the disk.
        """

        def parse_and_store() -> tuple[InstanceAttributes, StoredFile]:
            attributes = self.parser.parse(data, meta.transfer_syntax_uid)
            _check(meta, attributes, study)
            self._check_inflated(io.BytesIO(data), meta.transfer_syntax_uid)
            return attributes, self.storage.store(meta, data)

        try:
            attributes, stored = await self._to_thread(parse_and_store)
        except StorageError as exc:
            return self._fail(meta, Status.OUT_OF_RESOURCES, str(exc))
        except _Refused as exc:
            return self._fail(meta, exc.status, exc.comment)
        except DataSetError as exc:
            return self._fail(meta, Status.CANNOT_UNDERSTAND, exc.comment)
        return await self._index(meta, stored, attributes)

    async def _finish_spooled(self, meta: FileMeta, spool: Spool, tail: bytes,
                              study: str | None) -> Ingested:
        """Write the last piece, commit, parse back from the file (one hop), then index."""

        def commit() -> StoredFile:
            if tail:
                spool.write(tail)  # removes the spool on failure
            return spool.commit()

        def parse(stored: StoredFile) -> InstanceAttributes:
            with self.storage.open_dataset(stored.key, stored.dataset_offset) as fp:
                attributes = self.parser.parse(fp, meta.transfer_syntax_uid)
                _check(meta, attributes, study)
                fp.seek(stored.dataset_offset)
                self._check_inflated(fp, meta.transfer_syntax_uid)
            return attributes

        try:
            stored = await self._to_thread(commit)
        except StorageError as exc:
            await self._to_thread(spool.discard)
            return self._fail(meta, Status.OUT_OF_RESOURCES, str(exc))
        try:
            attributes = await self._to_thread(parse, stored)
        except Exception as exc:  # _Refused, DataSetError, StorageError or a bug
            await self._delete_unreferenced(stored.key)
            if isinstance(exc, _Refused):
                return self._fail(meta, exc.status, exc.comment)
            if isinstance(exc, DataSetError):
                return self._fail(meta, Status.CANNOT_UNDERSTAND, exc.comment)
            log.exception("parsing %r failed", meta.sop_instance_uid)
            return self._fail(meta, Status.OUT_OF_RESOURCES, "cannot read the stored file")
        return await self._index(meta, stored, attributes)

    async def _index(self, meta: FileMeta, stored: StoredFile,
                     attributes: InstanceAttributes) -> Ingested:
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
            return self._fail(meta, Status.CANNOT_UNDERSTAND, exc.comment)
        except Exception:  # IndexWriteError, OutOfResources (database full) or a bug
            await self._delete_unreferenced(stored.key)
            log.exception("indexing %s failed", meta.sop_instance_uid)
            return self._fail(meta, Status.OUT_OF_RESOURCES, "index write failed")
        if result.outcome is AddOutcome.KEPT_FIRST:
            await self._delete_unreferenced(stored.key)
        else:
            self.storage.release(stored.key)  # the row is durable: the intent record goes
            if result.outcome is AddOutcome.REPLACED and result.replaced_key:
                await self._delete_unreferenced(result.replaced_key)
        log.debug("stored %s from %s (%d bytes, %s)", meta.sop_instance_uid,
                  meta.sending_ae_title, stored.size, result.outcome)
        self.metrics.instance_stored(stored.size)
        return Ingested(Status.SUCCESS, attributes=attributes,
                        duplicate=result.outcome is not AddOutcome.ADDED)

    def _check_inflated(self, fp: BinaryIO, transfer_syntax: str) -> None:
        """C000 for a Deflated data set past `max_inflated` (a deflate bomb is never stored).

        The whole stream is inflated in bounded steps and counted (PS3.5 A.5); the index's
        parse stops before Pixel Data, where a bomb hides.
        """
        if not dataset_encoding(transfer_syntax)[2]:
            return
        try:
            inflated_size(fp, self.max_inflated)
        except InflateError as exc:
            comment = (f"deflated data set inflates past {self.max_inflated >> 20} MiB"
                       if exc.too_large else f"deflated data set {exc}")
            raise _Refused(Status.CANNOT_UNDERSTAND, comment) from None

    async def _delete_unreferenced(self, key: str) -> None:
        """Remove a file no row points to; failing here must not fail a durable store."""
        try:
            await self._to_thread(self.storage.delete, key)
        except StorageError as exc:  # an orphan file: `minipacs db check` reports it
            log.warning("cannot delete unreferenced file %s: %s", key, exc)

    @staticmethod
    def _fail(meta: FileMeta, status: Status, comment: str) -> Ingested:
        # The dispatcher (C-STORE) or the web layer (STOW-RS) logs the refusal once, with the
        # peer and the status in words.
        log.debug("C-STORE %r refused: 0x%04X (%r)", meta.sop_instance_uid, status, comment)
        return Ingested(status, comment)


class _Refused(Exception):
    def __init__(self, status: Status, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


def _check(meta: FileMeta, attributes: InstanceAttributes, study: str | None) -> None:
    """PS3.4 B.2.3: C000 for a UID outside the one grammar (PS3.5 §9.1, proto/uid.py), which
    is never stored; A900 when the data set's SOP Class/Instance UID differ from the command's
    (PS3.18 §10.5: or its Study Instance UID from the one the request names).
    """
    for what, uid in (("Affected SOP Instance UID", meta.sop_instance_uid),
                      ("SOP Instance UID", attributes.sop_instance_uid),
                      ("SOP Class UID", attributes.sop_class_uid),
                      ("Study Instance UID", attributes.study_instance_uid),
                      ("Series Instance UID", attributes.series_instance_uid)):
        if not is_valid_uid(uid):
            raise _Refused(Status.CANNOT_UNDERSTAND, f"{what} is not a valid UID")
    if study is not None and attributes.study_instance_uid != study:
        raise _Refused(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                       "Study Instance UID differs from the request")
    if attributes.sop_instance_uid != meta.sop_instance_uid:
        raise _Refused(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                       "SOP Instance UID differs from the command")
    if attributes.sop_class_uid != meta.sop_class_uid:
        raise _Refused(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                       "SOP Class UID differs from the command")
