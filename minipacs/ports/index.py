"""Index ports: what C-STORE asks of the index (add a record) and of the parser (read one)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Protocol, TypeAlias

from .storage import StoredFile

# A data set in the DICOM JSON model, PS3.18 F.2: {"GGGGEEEE": {"vr": ..., "Value": [...]}}.
JsonDataset: TypeAlias = Mapping[str, Any]


class DataSetError(Exception):
    """A stored data set cannot be parsed or indexed (PS3.4 B.2.3: 0xC000 Cannot understand).

    ``comment`` is short enough for an Error Comment (0000,0902), LO: 64 characters.
    """

    def __init__(self, comment: str) -> None:
        super().__init__(comment)
        self.comment = comment[:64]


class IndexWriteError(Exception):
    """The index could not record an instance (its row was rolled back, nothing kept)."""


# --- Index ----------------------------------------------------------------------------


class DuplicatePolicy(enum.StrEnum):
    """What a re-sent SOP Instance UID does to the index."""

    KEEP_FIRST = "keep-first"  # the index keeps the first; the caller drops the new file
    REPLACE = "replace"  # the new file wins; the old one is deleted after the commit

    @classmethod
    def default(cls) -> DuplicatePolicy:
        """The one default, of ``storage.duplicates`` and of the index alike: keep-first."""
        return cls.KEEP_FIRST


class PatientConflictPolicy(enum.StrEnum):
    """What an instance of a study already indexed under another patient does.

    Never re-parenting: one mislabeled instance must not move a whole study (and every
    instance already stored) to another patient.
    """

    REFUSE = "refuse"  # the instance fails (C-STORE 0xC000 with an Error Comment)
    KEEP_APART = "keep-apart"  # the instance joins the study, which stays with its patient

    @classmethod
    def default(cls) -> PatientConflictPolicy:
        """The one default, of ``storage.patient_conflict`` and of the index alike."""
        return cls.REFUSE


class PatientConflict(IndexWriteError):
    """The instance's patient is not its study's (policy `PatientConflictPolicy.REFUSE`).

    ``comment`` fits an Error Comment (0000,0902), LO: 64 characters.
    """

    def __init__(self, comment: str) -> None:
        super().__init__(comment)
        self.comment = comment[:64]


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


class AttributeParser(Protocol):
    """Reads what the index keeps from a received data set (DESIGN 7: only what it needs)."""

    def parse(self, data: bytes | BinaryIO, transfer_syntax_uid: str) -> InstanceAttributes:
        """Parse a data set, in memory or at a file's position. Raises DataSetError.

        Blocking: call it from a worker thread, next to the storage call it goes with.
        """
        ...


class Index(Protocol):
    """The patient/study/series/instance index."""

    async def add_instance(self, record: InstanceRecord, *,
                           durable: Future[None] | None = None) -> AddResult:
        """Record an instance; returns once the row is durable. Raises IndexWriteError.

        `durable`: the file's sync, running meanwhile; the row commits only after it
        succeeded (DESIGN principle 10), and its exception is this call's if it failed.
        The call returns only once `durable` is done, whatever the outcome.
        """
        ...
