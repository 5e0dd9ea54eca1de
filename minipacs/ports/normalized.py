"""Ports of the normalized services: Modality Worklist, MPPS, Storage Commitment."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .index import JsonDataset
from .query import Condition, FindPage

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


@dataclass(frozen=True, slots=True)
class CommitmentClaim:
    """Transactions this process has claimed for delivery, and when to look again."""

    transaction_uids: tuple[str, ...]
    rescan_in: float  # seconds until another may be due, or a dead process's claim free


class CommitmentIndex(Protocol):
    """Storage Commitment transactions and the instance lookups their checks need.

    Several processes may share the transactions: one attempts a delivery only while it
    holds the transaction's claim, so each report is delivered by one process, and the
    claims of a process that died are taken over.
    """

    async def add_transaction(self, transaction: CommitmentTransaction) -> bool:
        """Persist a new transaction, claimed by this process; False (nothing written) if
        its UID is already known."""
        ...

    async def transaction(self, transaction_uid: str) -> CommitmentTransaction | None:
        ...

    async def pending(self) -> tuple[CommitmentTransaction, ...]:
        """Every transaction whose report is still owed, oldest first."""
        ...

    async def claim(self, limit: int) -> CommitmentClaim:
        """Claim at most `limit` due pending transactions that no live process holds."""
        ...

    async def make_due(self) -> int:
        """Make every pending transaction no live process holds due now (a process starting
        tries the reports still owed at once); how many."""
        ...

    async def locate(self, sop_instance_uids: Sequence[str]) -> Mapping[str, StoredCopy]:
        """The stored copies of those instances that are in the index."""
        ...

    async def record_results(self, transaction_uid: str, reasons: Sequence[int]) -> None:
        """Each item's failure reason (0: committed), in item order."""
        ...

    async def record_attempt(self, transaction_uid: str, *, state: CommitmentState,
                             attempts: int, retry_in: float | None,
                             error: str | None) -> bool:
        """The outcome of a delivery attempt (the next one `retry_in` seconds on), releasing
        this process's claim; False, nothing written, when another process had taken the
        transaction over."""
        ...
