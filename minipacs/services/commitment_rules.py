"""Storage Commitment Push Model messages (PS3.4 Annex J): what the SCP reads and reports.

The N-ACTION's Action Information (Table J.3-1), the N-EVENT-REPORT's Event Information
(Table J.3-2), the Failure Reasons (PS3.3 C.14.1.1) and the file check behind a commitment:
pure functions, used by the SCP (services/commitment.py) and the SCU's output.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from pydicom.dataset import Dataset

from ..ports import CommitmentItem, CommitmentTransaction, Storage, StorageError, StoredCopy
from ..proto.status import Status
from ..proto.uid import is_valid_uid
from .answers import encode_dataset
from .identifier import IdentifierError, decode_identifier

__all__ = [
    "ACTION_REQUEST_COMMITMENT",
    "EVENT_ALL_COMMITTED",
    "EVENT_FAILURES_EXIST",
    "MAX_ACTION_BYTES",
    "ActionError",
    "FailureReason",
    "build_report",
    "describe_reason",
    "file_intact",
    "parse_action",
]

ACTION_REQUEST_COMMITMENT: Final = 1  # PS3.4 J.3.2: Request Storage Commitment
EVENT_ALL_COMMITTED: Final = 1  # PS3.4 J.3.3: Storage Commitment Request Successful
EVENT_FAILURES_EXIST: Final = 2  # PS3.4 J.3.3: Storage Commitment Request Complete - Failures
# The Action Information of one request; beyond this the N-ACTION is refused (0213H).
MAX_ACTION_BYTES: Final = 16 << 20


class FailureReason(enum.IntEnum):
    """PS3.3 C.14.1.1 Failure Reason (0008,1197) values."""

    PROCESSING_FAILURE = 0x0110
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    CLASS_INSTANCE_CONFLICT = 0x0119
    REFERENCED_SOP_CLASS_NOT_SUPPORTED = 0x0122
    DUPLICATE_TRANSACTION_UID = 0x0131
    RESOURCE_LIMITATION = 0x0213


REASON_TEXT: Final[Mapping[int, str]] = {
    0: "committed",
    FailureReason.PROCESSING_FAILURE: "processing failure (file missing, unreadable or altered)",
    FailureReason.NO_SUCH_OBJECT_INSTANCE: "no such object instance",
    FailureReason.CLASS_INSTANCE_CONFLICT: "SOP class differs from the stored instance's",
    FailureReason.REFERENCED_SOP_CLASS_NOT_SUPPORTED: "referenced SOP class not supported",
    FailureReason.DUPLICATE_TRANSACTION_UID: "duplicate transaction UID",
    FailureReason.RESOURCE_LIMITATION: "resource limitation",
}


class ActionError(Exception):
    """An N-ACTION refused with `status` (PS3.7 10.1.4.1.10); `comment` fits an LO."""

    def __init__(self, status: Status, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]


def _uid_of(ds: Dataset, keyword: str, where: str) -> str:
    value = ds.get(keyword)
    text = "" if value is None else str(value).strip("\0 ")
    if not text:
        raise ActionError(Status.INVALID_ARGUMENT_VALUE, f"{where}{keyword} missing")
    if not is_valid_uid(text):  # PS3.5 §9.1, the one grammar
        raise ActionError(Status.INVALID_ARGUMENT_VALUE, f"{where}{keyword} is not a UID")
    return text


def parse_action(data: bytes, transfer_syntax: str) -> tuple[str, tuple[CommitmentItem, ...]]:
    """Transaction UID and references of a Storage Commitment Request (PS3.4 Table J.3-1).

    Missing or malformed Action Information is an invalid argument value (0115H): PS3.7
    10.1.4.1.10 names no missing-attribute status for N-ACTION.
    """
    try:
        ds = decode_identifier(data, transfer_syntax)
    except IdentifierError as exc:
        raise ActionError(Status.INVALID_ARGUMENT_VALUE, str(exc)) from None
    try:
        transaction_uid = _uid_of(ds, "TransactionUID", "")
        sequence = ds.get("ReferencedSOPSequence")
        if not sequence:
            raise ActionError(Status.INVALID_ARGUMENT_VALUE, "ReferencedSOPSequence empty")
        items = tuple(
            CommitmentItem(_uid_of(item, "ReferencedSOPClassUID", f"item {n}: "),
                           _uid_of(item, "ReferencedSOPInstanceUID", f"item {n}: "))
            for n, item in enumerate(sequence, 1))
    except ActionError:
        raise
    except Exception as exc:  # a value pydicom cannot convert: the peer's bytes
        raise ActionError(Status.INVALID_ARGUMENT_VALUE,
                          f"cannot read Action Information: {type(exc).__name__}") from None
    return transaction_uid, items


def build_report(transaction: CommitmentTransaction, retrieve_ae: str,
                 transfer_syntax: str) -> tuple[int, bytes]:
    """Event Type ID and Event Information of a checked transaction (PS3.4 Table J.3-2)."""
    committed = [i for i in transaction.items if i.failure_reason == 0]
    failed = [i for i in transaction.items if i.failure_reason != 0]
    ds = Dataset()
    ds.TransactionUID = transaction.transaction_uid
    if committed:
        ds.RetrieveAETitle = retrieve_ae  # where the committed instances can be retrieved
        ds.ReferencedSOPSequence = [_reference(i) for i in committed]
    if failed:
        items = []
        for item in failed:
            ref = _reference(item)
            ref.FailureReason = item.failure_reason or FailureReason.PROCESSING_FAILURE
            items.append(ref)
        ds.FailedSOPSequence = items
    event = EVENT_FAILURES_EXIST if failed else EVENT_ALL_COMMITTED
    return event, encode_dataset(ds, transfer_syntax)


def _reference(item: CommitmentItem) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = item.sop_class_uid
    ref.ReferencedSOPInstanceUID = item.sop_instance_uid
    return ref


def file_intact(storage: Storage, copy: StoredCopy) -> bool:
    """Whether a stored file still has the checksum recorded at ingest (blocking).

    The checksum covers the whole file, so a file that grew, shrank or changed fails it.
    """
    try:
        return storage.checksum(copy.storage_key) == copy.checksum
    except StorageError:
        return False


def describe_reason(reason: int) -> str:
    """A Failure Reason in words (PS3.3 C.14.1.1)."""
    return REASON_TEXT.get(reason, f"failure reason 0x{reason:04X}")
