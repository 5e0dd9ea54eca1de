"""Query/Retrieve C-MOVE and C-GET as SCU (PS3.4 C.4.2, C.4.3; PS3.7 §9.1.3, §9.1.4).

The identifier is built from -k keys like the C-FIND SCU's (services/find_scu.py), but every
key needs a value and the unique key of the level must be there (PS3.4 C.4.2.2.1). Pending
responses report the sub-operation counts; the final one carries the status, the counts and,
after failures, the Failed SOP Instance UID List (C.4.2.1.4-6). A cancel request becomes one
C-CANCEL-RQ (PS3.7 §9.3.3.3, §9.3.4.3), after which the final response is still awaited.

C-GET receives its C-STORE sub-operations on the same association (PS3.4 C.4.3.3): each is
written as a Part 10 file, data-set bytes as received, never decoded (DESIGN 7).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from ..ports import (
    AssociationClosed,
    Channel,
    FileMeta,
    QueryLevel,
    Request,
    Spool,
    StorageError,
    StoredFile,
)
from ..proto.dimse import CCancelRQ, CGetRQ, CGetRSP, CMoveRQ, CMoveRSP, CStoreRQ
from ..proto.negotiation import MAX_PRESENTATION_CONTEXTS
from ..proto.pdu import RoleSelection
from ..proto.sop import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE_8BIT,
    JPEG_LOSSLESS_SV1,
    PATIENT_ROOT_QR_GET,
    PATIENT_ROOT_QR_MOVE,
    RLE_LOSSLESS,
    STUDY_ROOT_QR_GET,
    STUDY_ROOT_QR_MOVE,
    name_of,
)
from ..proto.status import Status, StatusCategory, category
from .dispatcher import response_for
from .find_scu import FindKey, build_identifier, decode_answer
from .identifier import UNIQUE_KEYS

__all__ = [
    "COMPRESSED_CLASSES",
    "DEFAULT_STORAGE_CLASSES",
    "GET_ROOTS",
    "MOVE_ROOTS",
    "ReceivedFiles",
    "RetrieveOutcome",
    "RetrieveProgress",
    "check_keys",
    "get",
    "get_contexts",
    "move",
]

MOVE_ROOTS: Final = {"patient": PATIENT_ROOT_QR_MOVE, "study": STUDY_ROOT_QR_MOVE}
GET_ROOTS: Final = {"patient": PATIENT_ROOT_QR_GET, "study": STUDY_ROOT_QR_GET}

# C-GET storage contexts. Each (SOP class, transfer syntax) pair is its own context: an
# acceptor picks any one syntax of a context's list (PS3.8 §7.1.1.13), and a C-GET SCP that
# sends data sets as stored (minipacs does) needs a context in exactly that syntax.
NATIVE_SYNTAXES: Final = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
COMPRESSED_SYNTAXES: Final = (JPEG_LOSSLESS_SV1, JPEG_BASELINE_8BIT, JPEG_2000_LOSSLESS,
                              RLE_LOSSLESS)
# The image classes that most often arrive compressed: native and compressed contexts.
COMPRESSED_CLASSES: Final = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image
    "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image
    "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image
)
# Further common classes, in the native syntaxes only.
NATIVE_CLASSES: Final = (
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image - For Processing
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray Image - For Processing
    "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis Image
    "1.2.840.10008.5.1.4.1.1.12.2",  # X-Ray Radiofluoroscopic Image
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.481.8",  # RT Ion Plan
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection Document
    "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.66.1",  # Spatial Registration
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
)
DEFAULT_STORAGE_CLASSES: Final = COMPRESSED_CLASSES + NATIVE_CLASSES
# Data-set bytes gathered before one write is handed to a thread (DESIGN 14).
WRITE_BUFFER: Final = 1 << 20
MAX_SHOWN_FAILED: Final = 1 << 16  # Failed SOP Instance UIDs kept from a final response

ContextList = list[tuple[str, tuple[str, ...]]]


class ReceivedFiles(Protocol):
    """Where C-GET writes what it receives (storage/folder.py); blocking methods."""

    def open_spool(self, meta: FileMeta) -> Spool:
        """A new file for one instance. ValueError: the SOP Instance UID is unusable."""
        ...


@dataclass(frozen=True, slots=True)
class RetrieveProgress:
    """Counts of the last pending response (None: not sent) and, for C-GET, files written."""

    remaining: int | None
    completed: int | None
    failed: int | None
    warning: int | None
    files: int
    bytes_written: int
    elapsed: float


@dataclass(frozen=True, slots=True)
class RetrieveOutcome:
    """How a C-MOVE/C-GET ended. `status` is None when no final response arrived (`error`)."""

    service: str  # "C-MOVE" or "C-GET"
    status: int | None
    error_comment: str | None
    remaining: int | None  # only in a Cancel final response (PS3.4 C.4.2.1.4)
    completed: int | None
    failed: int | None
    warning: int | None
    failed_uids: tuple[str, ...]
    elapsed: float
    cancel_sent: bool
    error: str | None = None  # why the operation ended without a final response
    files: int = 0  # C-GET: Part 10 files written
    bytes_written: int = 0  # C-GET: data-set bytes in those files
    write_failures: int = 0  # C-GET: sub-operations we answered with a failure
    interrupted: bool = False  # the user stopped it (the association was aborted)

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == Status.SUCCESS


def check_keys(level: QueryLevel, keys: Sequence[FindKey]) -> None:
    """Every key needs a value, and the level's unique key must be among them (C.4.2.2.1)."""
    for key in keys:
        if key.value is None:
            raise ValueError(f"-k {key.keyword} needs =VALUE (a retrieve has no return keys)")
    unique = FindKey(UNIQUE_KEYS[level])
    if not any(key.tag == unique.tag and key.value for key in keys):
        raise ValueError(f"a {level.value} level retrieve needs -k {unique.keyword}=...")


def get_contexts(extra_classes: Iterable[str] = ()
                 ) -> tuple[ContextList, tuple[RoleSelection, ...]]:
    """The storage contexts and role items a C-GET SCU proposes (PS3.7 D.3.3.4).

    The SCP role is what lets the peer send C-STOREs on our association; the SCU role is not
    proposed (0) for these classes. One context is left for the Q/R GET class itself.
    """
    contexts: ContextList = []
    classes = list(dict.fromkeys([*DEFAULT_STORAGE_CLASSES, *extra_classes]))
    for uid in classes:
        syntaxes = NATIVE_SYNTAXES + (COMPRESSED_SYNTAXES if uid in COMPRESSED_CLASSES else ())
        contexts.extend((uid, (ts,)) for ts in syntaxes)
    room = MAX_PRESENTATION_CONTEXTS - 1
    if len(contexts) > room:
        raise ValueError(f"{len(contexts)} storage contexts needed, at most {room} fit next to "
                         "the C-GET one (PS3.8 §9.3.2.2): give fewer --sop-class")
    roles = tuple(RoleSelection(uid, scu_role=False, scp_role=True) for uid in classes)
    return contexts, roles


class _Run:
    """The counts and files of one C-MOVE/C-GET, reported as they change."""

    def __init__(self, service: str, progress: Callable[[RetrieveProgress], None] | None
                 ) -> None:
        self.service = service
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.progress = progress
        self.counts: tuple[int | None, ...] = (None, None, None, None)
        self.files = self.bytes_written = self.write_failures = 0
        self.cancel_sent = False

    def report(self) -> None:
        if self.progress is not None:
            self.progress(RetrieveProgress(*self.counts, self.files, self.bytes_written,
                                           self.loop.time() - self.started))

    def outcome(self, final: CMoveRSP | CGetRSP | None, dataset: bytes | None,
                transfer_syntax: str, error: str | None = None) -> RetrieveOutcome:
        elapsed = self.loop.time() - self.started
        common = {"elapsed": elapsed, "cancel_sent": self.cancel_sent, "files": self.files,
                  "bytes_written": self.bytes_written, "write_failures": self.write_failures}
        if final is None:
            return RetrieveOutcome(self.service, None, None, *self.counts, (), error=error,
                                   **common)  # type: ignore[arg-type]
        return RetrieveOutcome(
            self.service, final.status, final.error_comment,
            final.number_of_remaining_suboperations, final.number_of_completed_suboperations,
            final.number_of_failed_suboperations, final.number_of_warning_suboperations,
            _failed_uids(dataset, transfer_syntax), **common)  # type: ignore[arg-type]


def _failed_uids(dataset: bytes | None, transfer_syntax: str) -> tuple[str, ...]:
    """Failed SOP Instance UID List (0008,0058) of a final response; () if absent or unreadable."""
    if not dataset:
        return ()
    try:
        value = decode_answer(dataset, transfer_syntax).get("FailedSOPInstanceUIDList")
    except Exception:  # a broken identifier must not hide the status that came with it
        return ()
    if value is None or not value:
        return ()
    uids = [value] if isinstance(value, str) else list(value)
    return tuple(str(uid) for uid in uids[:MAX_SHOWN_FAILED])


def _qr_context(channel: Channel, sop_class: str) -> tuple[int, str]:
    context = next((c for c in sorted(channel.info.negotiated.contexts.values(),
                                      key=lambda c: c.context_id)
                    if c.abstract_syntax == sop_class and c.scu_role), None)
    if context is None:
        raise LookupError(f"the peer did not accept {name_of(sop_class)}")
    return context.context_id, context.transfer_syntax


async def _exchange(channel: Channel, run: _Run, context_id: int, transfer_syntax: str,
                    message: CMoveRQ | CGetRQ, identifier: bytes, *, cancel: asyncio.Event,
                    timeout: float, deadline_box: list[asyncio.Timeout]) -> RetrieveOutcome:
    """Send the request; count pending responses; C-CANCEL once when `cancel` is set."""

    async def cancel_when_asked() -> None:
        await cancel.wait()
        # PS3.7 §9.3.4.3 / §9.3.3.3: C-CANCEL-RQ names the Message ID of the operation. The
        # request took the send lock before its first suspension, so this follows it.
        await channel.send(context_id, CCancelRQ(message_id_being_responded_to=message.message_id))
        run.cancel_sent = True

    replies = channel.request(context_id, message, identifier)
    watcher = asyncio.create_task(cancel_when_asked(), name="retrieve-cancel")
    final: CMoveRSP | CGetRSP | None = None
    dataset: bytes | None = None
    try:
        async with asyncio.timeout(timeout) as deadline:
            deadline_box.append(deadline)
            async for reply in replies:
                rsp = reply.message
                assert isinstance(rsp, CMoveRSP | CGetRSP)
                deadline.reschedule(run.loop.time() + timeout)  # each response restarts it
                if category(rsp.status) is StatusCategory.PENDING:
                    run.counts = (rsp.number_of_remaining_suboperations,
                                  rsp.number_of_completed_suboperations,
                                  rsp.number_of_failed_suboperations,
                                  rsp.number_of_warning_suboperations)
                    run.report()
                else:
                    final, dataset = rsp, reply.dataset
    except TimeoutError:
        return run.outcome(None, None, transfer_syntax, f"no response for {timeout:g} s")
    except AssociationClosed as exc:
        return run.outcome(None, None, transfer_syntax, f"association lost ({exc})")
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, AssociationClosed):
            await watcher
        close = getattr(replies, "aclose", None)  # an async generator: run its cleanup now
        if close is not None:
            await close()
    if final is None:
        return run.outcome(None, None, transfer_syntax, "no final response")
    return run.outcome(final, dataset, transfer_syntax)


async def move(channel: Channel, sop_class: str, level: QueryLevel, keys: Sequence[FindKey],
               destination: str, *, cancel: asyncio.Event, timeout: float,
               progress: Callable[[RetrieveProgress], None] | None = None) -> RetrieveOutcome:
    """C-MOVE SCU (PS3.4 C.4.2.2): the peer sends the instances to `destination`.

    Raises LookupError when the peer did not accept `sop_class`; an outcome whose `error` is
    set means the association is unusable (the caller aborts it).
    """
    context_id, syntax = _qr_context(channel, sop_class)
    identifier = build_identifier(level, keys, syntax)
    message = CMoveRQ(message_id=channel.next_message_id(), affected_sop_class_uid=sop_class,
                      move_destination=destination)
    run = _Run("C-MOVE", progress)
    return await _exchange(channel, run, context_id, syntax, message, identifier,
                           cancel=cancel, timeout=timeout, deadline_box=[])


async def get(channel: Channel, sop_class: str, level: QueryLevel, keys: Sequence[FindKey],
              files: ReceivedFiles, *, cancel: asyncio.Event, timeout: float,
              progress: Callable[[RetrieveProgress], None] | None = None) -> RetrieveOutcome:
    """C-GET SCU (PS3.4 C.4.3.2): the C-STORE sub-operations arrive on this association.

    Each is answered after its file is written (0x0000), or with 0xA700 when it cannot be
    written, 0xC000 when its SOP Instance UID cannot name a file. Raises LookupError when the
    peer did not accept `sop_class`.
    """
    context_id, syntax = _qr_context(channel, sop_class)
    identifier = build_identifier(level, keys, syntax)
    message = CGetRQ(message_id=channel.next_message_id(), affected_sop_class_uid=sop_class)
    run = _Run("C-GET", progress)
    deadline_box: list[asyncio.Timeout] = []

    def touch() -> None:  # an incoming sub-operation is progress too
        if deadline_box:
            deadline_box[0].reschedule(run.loop.time() + timeout)

    async def serve() -> None:
        async for request in channel.requests():
            await _answer(channel, request, files, run, touch)

    server = asyncio.create_task(serve(), name="get-stores")
    try:
        outcome = await _exchange(channel, run, context_id, syntax, message, identifier,
                                  cancel=cancel, timeout=timeout, deadline_box=deadline_box)
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError, AssociationClosed):
            await server
    return outcome


async def _answer(channel: Channel, request: Request, files: ReceivedFiles, run: _Run,
                  touch: Callable[[], None]) -> None:
    """One incoming request: a C-STORE sub-operation is written; anything else refused."""
    message = request.message
    context_id = request.context.context_id
    if not isinstance(message, CStoreRQ) or not request.context.scp_role:
        # Only C-STOREs on contexts where we took the SCP role (PS3.7 D.3.3.4).
        if request.data is not None:
            await request.data.drain()
        status = (Status.UNRECOGNIZED_OPERATION if not isinstance(message, CStoreRQ)
                  else Status.SOP_CLASS_NOT_SUPPORTED)
        await channel.send(context_id, response_for(message, status))
        return
    info = channel.info
    meta = FileMeta(sop_class_uid=message.affected_sop_class_uid,
                    sop_instance_uid=message.affected_sop_instance_uid,
                    transfer_syntax_uid=request.context.transfer_syntax,
                    sending_ae_title=info.called_ae, receiving_ae_title=info.calling_ae)
    status, comment = await _write(request, files, meta, run, touch)
    if status != Status.SUCCESS:
        run.write_failures += 1
    run.report()
    await channel.send(context_id, response_for(message, status, comment))


async def _write(request: Request, files: ReceivedFiles, meta: FileMeta, run: _Run,
                 touch: Callable[[], None]) -> tuple[Status, str | None]:
    """Stream the data set into a new file: one thread hop when it fits in WRITE_BUFFER."""
    assert request.data is not None
    buffer = bytearray()
    spool: Spool | None = None
    chunks = aiter(request.data)
    try:
        try:
            async for chunk in chunks:
                touch()
                buffer += chunk
                if len(buffer) >= WRITE_BUFFER:
                    if spool is None:
                        spool = await asyncio.to_thread(files.open_spool, meta)
                    await asyncio.to_thread(spool.write, bytes(buffer))
                    buffer.clear()
            stored = await asyncio.to_thread(_finish, files, spool, meta, bytes(buffer))
        except (StorageError, ValueError) as exc:
            # PS3.4 B.2.3: read the rest of the message, then answer the failure.
            await request.data.drain()
            if isinstance(exc, ValueError):
                return Status.CANNOT_UNDERSTAND, str(exc)
            return Status.OUT_OF_RESOURCES, str(exc)
    except BaseException:
        if spool is not None:
            spool.discard()
        raise
    run.files += 1
    run.bytes_written += stored.size - stored.dataset_offset
    return Status.SUCCESS, None


def _finish(files: ReceivedFiles, spool: Spool | None, meta: FileMeta, rest: bytes
            ) -> StoredFile:
    """Open (for a small data set), write what is left, commit: in one thread hop."""
    if spool is None:
        spool = files.open_spool(meta)
    try:
        if rest:
            spool.write(rest)
        return spool.commit()
    except BaseException:
        spool.discard()
        raise
