"""Ports: the protocols services depend on, and the value types that cross them.

Adapters (``minipacs.storage``, ``minipacs.index``, ``minipacs.net``) implement these;
services see nothing else, so they are tested with in-memory fakes (DESIGN principle 9).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, Protocol, TypeAlias

from .proto.dimse import DimseMessage
from .proto.negotiation import AcceptedContext, Negotiated
from .proto.pdu import RoleSelection

__all__ = [
    "AddOutcome",
    "AddResult",
    "AssociationClosed",
    "AssociationInfo",
    "Channel",
    "CommitmentIndex",
    "CommitmentItem",
    "CommitmentState",
    "CommitmentTransaction",
    "Condition",
    "DataSetError",
    "DataStream",
    "DuplicatePolicy",
    "FileMeta",
    "FindPage",
    "FindQuery",
    "Index",
    "IndexWriteError",
    "InstanceAttributes",
    "InstanceLocation",
    "InstancePage",
    "InstanceRecord",
    "JsonDataset",
    "MatchKind",
    "MppsIndex",
    "MppsRecord",
    "OutOfResources",
    "PeerUnreachable",
    "Peers",
    "QueryIndex",
    "QueryLevel",
    "Reply",
    "Request",
    "RetrieveIndex",
    "Spool",
    "Storage",
    "StorageError",
    "StoredCopy",
    "StoredFile",
    "WorklistIndex",
]

# A data set in the DICOM JSON model, PS3.18 F.2: {"GGGGEEEE": {"vr": ..., "Value": [...]}}.
JsonDataset: TypeAlias = Mapping[str, Any]


# --- Errors ---------------------------------------------------------------------------


class StorageError(Exception):
    """The store could not write, rename, read or delete a file."""


class OutOfResources(StorageError):
    """Disk full, file too large or below the free-space watermark (PS3.4 B.2.3: 0xA700)."""


class DataSetError(Exception):
    """A stored data set cannot be parsed or indexed (PS3.4 B.2.3: 0xC000 Cannot understand).

    ``comment`` is short enough for an Error Comment (0000,0902), LO: 64 characters.
    """

    def __init__(self, comment: str) -> None:
        super().__init__(comment)
        self.comment = comment[:64]


class IndexWriteError(Exception):
    """The index could not record an instance (its row was rolled back, nothing kept)."""


# --- Storage --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileMeta:
    """Per-instance fields of the Part 10 File Meta Information (PS3.10 §7.1)."""

    sop_class_uid: str  # (0002,0002) from the C-STORE command's Affected SOP Class UID
    sop_instance_uid: str  # (0002,0003) from the command's Affected SOP Instance UID
    transfer_syntax_uid: str  # (0002,0010) of the presentation context
    sending_ae_title: str  # (0002,0017) the calling AE title
    receiving_ae_title: str  # (0002,0018) the called AE title


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A committed file: where it is and what was written.

    ``size`` and ``checksum`` cover the whole file, header included, so a check is a plain
    hash of the file; ``checksum`` is ``"<algorithm>:<hex digest>"``.
    """

    key: str  # "ab/cd/<uuid4 hex>.dcm", never derived from a received value
    size: int
    checksum: str
    dataset_offset: int  # first byte after the File Meta Information


class Spool(Protocol):
    """A file being received; blocking methods, meant for ``asyncio.to_thread``.

    Hand it large pieces (~1 MiB): one thread hop per PDV costs more than it saves
    (DESIGN principle 14). Not thread-safe: one caller at a time.
    """

    @property
    def size(self) -> int:
        """Bytes written so far, header included."""
        ...

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append data-set bytes. Raises OutOfResources (spool removed) or StorageError."""
        ...

    def commit(self) -> StoredFile:
        """Make the file durable and give it its final key (fsync, rename, fsync dirs)."""
        ...

    def discard(self) -> None:
        """Remove the spool file; idempotent, never raises for a missing file."""
        ...


class Storage(Protocol):
    """The store of Part 10 files; blocking methods, meant for ``asyncio.to_thread``."""

    def check_free_space(self) -> None:
        """Raise OutOfResources when free space is under the configured watermark."""
        ...

    def open_spool(self, meta: FileMeta) -> Spool:
        """Create a spool file and write its Part 10 header (PS3.10 §7.1)."""
        ...

    def store(self, meta: FileMeta, data: bytes) -> StoredFile:
        """A whole data set in one call: free-space check, spool, write, commit.

        For a data set already in memory, so it costs one thread hop (DESIGN principle 14).
        Raises OutOfResources or StorageError, leaving nothing behind.
        """
        ...

    def open_dataset(self, key: str, dataset_offset: int | None = None) -> BinaryIO:
        """Open a stored file positioned at its data set (read from the header if None)."""
        ...

    def delete(self, key: str) -> None:
        """Remove a stored file; a missing file is not an error."""
        ...

    def cleanup_spool(self) -> int:
        """Remove leftover spool files (call at start, before serving); returns the count."""
        ...


# --- Index ----------------------------------------------------------------------------


class DuplicatePolicy(enum.StrEnum):
    """What a re-sent SOP Instance UID does to the index."""

    REPLACE = "replace"  # the new file wins; the old one is deleted after the commit
    KEEP_FIRST = "keep-first"  # the index keeps the first; the caller drops the new file


class AddOutcome(enum.StrEnum):
    """What ``Index.add_instance`` did."""

    ADDED = "added"
    REPLACED = "replaced"  # ``AddResult.replaced_key`` is the old file, now unreferenced
    KEPT_FIRST = "kept-first"  # nothing written; the caller's new file is unreferenced


@dataclass(frozen=True, slots=True)
class AddResult:
    """The outcome of one durable index write."""

    outcome: AddOutcome
    replaced_key: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceAttributes:
    """What the index needs from one data set, decoded to Unicode (PS3.18 F.2 per level).

    The identifying values are also in the level data sets; they are lifted out because
    the service compares them with the command (PS3.4 B.2.3: 0xA900) and the index keys
    rows by them. A missing Issuer of Patient ID is ``""``, never None.
    """

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str
    patient: JsonDataset
    study: JsonDataset
    series: JsonDataset
    instance: JsonDataset


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One instance to index: its attributes, its file and how it arrived."""

    attributes: InstanceAttributes
    stored: StoredFile
    transfer_syntax_uid: str
    calling_ae_title: str
    called_ae_title: str
    received_at: datetime  # timezone-aware, UTC


class Index(Protocol):
    """The patient/study/series/instance index."""

    def parse_attributes(
        self, data: bytes | BinaryIO, transfer_syntax_uid: str
    ) -> InstanceAttributes:
        """Parse a data set, in memory or at a file's position. Raises DataSetError.

        Blocking: call it from a worker thread, next to the storage call it goes with.
        """
        ...

    async def add_instance(self, record: InstanceRecord) -> AddResult:
        """Record an instance; returns once the row is durable. Raises IndexWriteError."""
        ...


# --- Query (C-FIND) ---------------------------------------------------------------------
# What the C-FIND service asks of the index: conditions already parsed from the identifier
# (PS3.4 C.2.2.2), answers as DICOM JSON per matching entity, pages by keyset.


class QueryLevel(enum.StrEnum):
    """Query/Retrieve levels (PS3.4 C.6.1.1, C.6.2.1), top down."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


class MatchKind(enum.StrEnum):
    """The matching types of PS3.4 C.2.2.2 (universal matching is no condition at all)."""

    SINGLE = "single"  # C.2.2.2.1 single value
    LIST = "list"  # C.2.2.2.2 list of UIDs: values are the UIDs
    WILDCARD = "wildcard"  # C.2.2.2.4: one value holding * and/or ?
    RANGE = "range"  # C.2.2.2.5: values (low, high), "" for an open end
    EMPTY = "empty"  # C.2.2.2.7: the value "" matches entities with no value
    SEQUENCE = "sequence"  # C.2.2.2.6: `items` are the conditions inside the one item


@dataclass(frozen=True, slots=True)
class Condition:
    """One matching key of an identifier. Text values are Unicode (already decoded).

    For a combined date-time range (C.2.2.2.5.4, negotiated) the condition is on the DA tag
    with values ("YYYYMMDDHHMMSS.FFFFFF" low, high), each end possibly "", and `combined_with`
    names the TM tag whose column joins it.
    """

    tag: int
    vr: str
    kind: MatchKind
    values: tuple[str, ...] = ()
    items: tuple[Condition, ...] = ()
    combined_with: int | None = None


@dataclass(frozen=True, slots=True)
class FindQuery:
    """A C-FIND identifier as the index sees it.

    `conditions` may name keys of the query level and of the levels above it (and, when
    relational queries were negotiated, below it: an entity matches when one of its
    descendants does, PS3.4 C.4.1.3.2).
    """

    level: QueryLevel
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class FindPage:
    """One page of answers: one JSON data set per matching entity, in a stable order.

    Each data set holds the entity's attributes and those of the levels above it, plus the
    computed keys of PS3.4 C.6.1.1 (NumberOf...RelatedInstances, ModalitiesInStudy,
    SOPClassesInStudy) of its level. `after` is the keyset cursor of the next page, None at
    the end.
    """

    answers: tuple[JsonDataset, ...]
    after: object | None


class QueryIndex(Protocol):
    """The read side of the index, for C-FIND (and later C-MOVE/C-GET)."""

    def matchable(self, level: QueryLevel) -> frozenset[int]:
        """Tags the index can match on for a query at `level` (the level and above)."""
        ...

    async def find(self, query: FindQuery, *, after: object | None, limit: int) -> FindPage:
        """At most `limit` answers after the cursor, each page in its own short transaction."""
        ...

    async def count(self, query: FindQuery, *, cap: int) -> int:
        """How many entities match, counting at most `cap` + 1 (for a result limit)."""
        ...


# --- Retrieve (C-MOVE / C-GET) ----------------------------------------------------------
# What the retrieve services ask of the index: the stored instances under the entities an
# identifier selects (PS3.4 C.4.2.2.1), with where their data set lies, paged by keyset.


@dataclass(frozen=True, slots=True)
class InstanceLocation:
    """One stored instance as a C-STORE sub-operation needs it (no data set decoded)."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str  # the stored data set's encoding
    storage_key: str
    dataset_offset: int  # first byte of the data set in the file
    file_size: int

    @property
    def dataset_size(self) -> int:
        return self.file_size - self.dataset_offset


@dataclass(frozen=True, slots=True)
class InstancePage:
    """One keyset page of instances; `after` is the cursor of the next page, None at the end."""

    instances: tuple[InstanceLocation, ...]
    after: object | None


class RetrieveIndex(Protocol):
    """The read side of the index for C-MOVE and C-GET (PS3.4 C.4.2, C.4.3)."""

    async def count(self, query: FindQuery, *, cap: int) -> int:
        """How many entities of `query.level` match, counting at most `cap` + 1."""
        ...

    async def instances(self, query: FindQuery, *, after: object | None,
                        limit: int) -> InstancePage:
        """At most `limit` instances under the matching entities, after the cursor."""
        ...

    async def instance_kinds(self, query: FindQuery) -> tuple[tuple[str, str], ...]:
        """The distinct (SOP class, stored transfer syntax) pairs of those instances."""
        ...


# --- Channel (network side) ---------------------------------------------------------------
# What a service sees of one established association. The asyncio adapter in net/ implements
# it; services are tested against in-memory fakes of it.


class AssociationClosed(Exception):
    """The association ended (released, aborted or lost) while an operation still used it."""


class DataStream(Protocol):
    """A data set arriving fragment by fragment (PS3.7 §8.1); iterate it exactly once."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def read_all(self, limit: int) -> bytes:
        """The whole data set; raises ValueError past `limit` bytes (after draining it)."""
        ...

    async def drain(self) -> None:
        """Discard what is left, so the association can go on (PS3.4 B.2.3 "drain, then answer")."""
        ...


@dataclass(slots=True)
class Request:
    """One incoming DIMSE request: the per-operation state (command, data set, cancel)."""

    context: AcceptedContext
    message: DimseMessage
    data: DataStream | None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class Reply:
    """One response to a request we sent, with its data set when it had one."""

    message: DimseMessage
    dataset: bytes | None = None


@dataclass(frozen=True, slots=True)
class AssociationInfo:
    """The per-association state a service may look at."""

    calling_ae: str
    called_ae: str
    peer_host: str
    peer_port: int
    negotiated: Negotiated


class Channel(Protocol):
    """One established association, either role, as the services use it."""

    @property
    def info(self) -> AssociationInfo: ...

    def requests(self) -> AsyncIterator[Request]:
        """Requests from the peer, each as soon as its command set has arrived; ends at release."""
        ...

    def next_message_id(self) -> int: ...

    async def send(
        self,
        context_id: int,
        message: DimseMessage,
        dataset: bytes | AsyncIterable[bytes] | None = None,
    ) -> None:
        """Send one whole message; fragments of two messages never interleave (PS3.8 Annex E)."""
        ...

    def request(
        self,
        context_id: int,
        message: DimseMessage,
        dataset: bytes | AsyncIterable[bytes] | None = None,
    ) -> AsyncIterator[Reply]:
        """Send a request and yield its responses, the final (non-pending) one last."""
        ...


# --- Peers (outbound associations) ----------------------------------------------------------


class PeerUnreachable(Exception):
    """No association could be opened with a peer (refused, rejected, timed out).

    str() is one line in words, fit for a log line.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Peers(Protocol):
    """The configured remote AEs we open associations to (C-MOVE destinations)."""

    def address(self, ae_title: str) -> str | None:
        """'host:port' of a configured AE title; None when the title is unknown."""
        ...

    def connect(self, ae_title: str, contexts: Sequence[tuple[str, str]], *,
                roles: Sequence[RoleSelection] = (), calling_ae: str | None = None
                ) -> AbstractAsyncContextManager[Channel]:
        """An association to `ae_title` proposing each (abstract syntax, transfer syntax)
        as its own context; released on leaving the block, aborted if the block raised.

        `roles`: SCP/SCU role selection items to propose (PS3.7 D.3.3.4); `calling_ae`:
        our AE title on it, when not the configured one. Entering raises PeerUnreachable
        with the reason in words.
        """
        ...


# --- Modality Worklist (C-FIND of scheduled procedure steps, PS3.4 Annex K) ----------------


class WorklistIndex(Protocol):
    """The scheduled procedure steps: one answer per step (PS3.4 K.6.1.2.1)."""

    def matchable(self, sequence: int | None = None) -> frozenset[int]:
        """Tags matched in SQL at the top level (None) or inside the item of `sequence`."""
        ...

    async def find(self, conditions: Sequence[Condition], *, after: object | None,
                   limit: int) -> FindPage:
        """At most `limit` steps after the cursor; a sequence key's conditions are `items`."""
        ...

    async def mark_steps(self, status: str, steps: Sequence[tuple[str, str]]) -> int:
        """Set the SPS Status of the (Study Instance UID, SPS ID) steps; how many were marked."""
        ...


# --- MPPS (Modality Performed Procedure Step, PS3.4 Annex F) ----------------------------------


@dataclass(frozen=True, slots=True)
class MppsRecord:
    """One MPPS instance: its whole data set (DICOM JSON) and the keys lifted out of it."""

    sop_instance_uid: str
    status: str  # (0040,0252): IN PROGRESS, COMPLETED or DISCONTINUED
    dataset: JsonDataset
    patient_id: str = ""
    modality: str = ""
    station_ae: str = ""  # Performed Station AE Title (0040,0241)
    start_date: str = ""  # (0040,0244), DA
    start_time: str = ""  # (0040,0245), TM
    end_date: str = ""  # (0040,0250)
    end_time: str = ""  # (0040,0251)
    calling_ae: str = ""  # the association that created it
    # (Study Instance UID, Scheduled Procedure Step ID) of each Scheduled Step Attributes
    # Sequence (0040,0270) item, "" where absent.
    steps: tuple[tuple[str, str], ...] = ()
    created: datetime | None = None  # set by the index
    updated: datetime | None = None

    @property
    def study_uids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(uid for uid, _ in self.steps if uid))


class MppsIndex(Protocol):
    """Where MPPS instances are kept (PS3.4 F.7.2)."""

    async def create_mpps(self, record: MppsRecord) -> bool:
        """Insert `record`; False (nothing written) when its SOP Instance UID exists."""
        ...

    async def get_mpps(self, sop_instance_uid: str) -> MppsRecord | None: ...

    async def update_mpps(self, record: MppsRecord) -> bool:
        """Replace the data set and keys (steps stay); False unless the stored instance is
        still IN PROGRESS, so a final state is written once."""
        ...

    async def mpps_for_study(self, study_instance_uid: str) -> tuple[MppsRecord, ...]:
        """The MPPS instances whose scheduled steps name this study, oldest first."""
        ...


# --- Storage Commitment (PS3.4 Annex J) -------------------------------------------------------
# What the Storage Commitment SCP asks of the index: its transactions, persisted before the
# N-ACTION is answered, and where the referenced instances are stored.


class CommitmentState(enum.StrEnum):
    """Where a Storage Commitment transaction stands."""

    PENDING = "pending"  # its N-EVENT-REPORT is still owed
    DELIVERED = "delivered"  # the requestor answered the N-EVENT-REPORT with success
    FAILED = "failed"  # delivery given up after the configured attempts or time


@dataclass(frozen=True, slots=True)
class CommitmentItem:
    """One referenced instance; `failure_reason` None until checked, 0 once committed."""

    sop_class_uid: str
    sop_instance_uid: str
    failure_reason: int | None = None  # else a PS3.3 C.14.1.1 Failure Reason (0008,1197)


@dataclass(frozen=True, slots=True)
class CommitmentTransaction:
    """A Storage Commitment Request and its delivery state (PS3.4 J.3.2, J.3.3)."""

    transaction_uid: str
    requestor_ae_title: str  # the calling AE of the N-ACTION's association
    called_ae_title: str  # our AE title as the requestor called it
    items: tuple[CommitmentItem, ...]
    received_at: datetime  # timezone-aware, UTC
    state: CommitmentState = CommitmentState.PENDING
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None

    @property
    def checked(self) -> bool:
        return all(item.failure_reason is not None for item in self.items)


@dataclass(frozen=True, slots=True)
class StoredCopy:
    """What the index recorded of a stored instance at ingest."""

    sop_class_uid: str
    storage_key: str
    file_size: int
    checksum: str  # "<algorithm>:<hex digest>" of the whole file


class CommitmentIndex(Protocol):
    """Storage Commitment transactions and the instance lookups their checks need."""

    async def add_transaction(self, transaction: CommitmentTransaction) -> bool:
        """Persist a new transaction; False (nothing written) if its UID is already known."""
        ...

    async def transaction(self, transaction_uid: str) -> CommitmentTransaction | None:
        ...

    async def pending(self) -> tuple[CommitmentTransaction, ...]:
        """Every transaction whose report is still owed, oldest first."""
        ...

    async def locate(self, sop_instance_uids: Sequence[str]) -> Mapping[str, StoredCopy]:
        """The stored copies of those instances that are in the index."""
        ...

    async def record_results(self, transaction_uid: str, reasons: Sequence[int]) -> None:
        """Each item's failure reason (0: committed), in item order."""
        ...

    async def record_attempt(self, transaction_uid: str, *, state: CommitmentState,
                             attempts: int, next_attempt_at: datetime | None,
                             error: str | None) -> None:
        """The outcome of a delivery attempt."""
        ...
