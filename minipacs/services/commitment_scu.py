"""Storage Commitment Push Model SCU (PS3.4 J.3): send the N-ACTION, take the N-EVENT-REPORT.

Used by `minipacs commit`. The report is taken on whichever association it arrives: the
one that carried the N-ACTION (when the SCP reports there) or one the SCP opens to us
(J.3.3.1.3); either way it is answered, then matched to our Transaction UID.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pydicom.dataset import Dataset

from ..ports import AssociationClosed, Channel, Request
from ..proto.dimse import NActionRQ, NEventReportRQ
from ..proto.sop import STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_PUSH_INSTANCE
from ..proto.status import Status
from .answers import encode_dataset
from .commitment import (
    ACTION_REQUEST_COMMITMENT,
    EVENT_ALL_COMMITTED,
    EVENT_FAILURES_EXIST,
    FailureReason,
)
from .dispatcher import response_for
from .identifier import IdentifierError, decode_identifier

__all__ = [
    "CommitReport",
    "CommitResult",
    "ReportWaiter",
    "action_information",
    "parse_report",
    "request_commitment",
]

log = logging.getLogger("minipacs.commitment")

MAX_REPORT_BYTES: Final = 16 << 20


@dataclass(frozen=True, slots=True)
class CommitResult:
    """One instance of a report: failure_reason 0 when committed (PS3.3 C.14.1.1)."""

    sop_class_uid: str
    sop_instance_uid: str
    failure_reason: int


@dataclass(frozen=True, slots=True)
class CommitReport:
    """A Storage Commitment Result (PS3.4 Table J.3-2)."""

    transaction_uid: str
    event_type_id: int
    results: tuple[CommitResult, ...]
    retrieve_ae_title: str | None


def action_information(transaction_uid: str, items: Sequence[tuple[str, str]],
                       transfer_syntax: str) -> bytes:
    """The N-ACTION data set: Transaction UID and Referenced SOP Sequence (Table J.3-1)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    refs = []
    for sop_class, sop_instance in items:
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = sop_instance
        refs.append(ref)
    ds.ReferencedSOPSequence = refs
    return encode_dataset(ds, transfer_syntax)


async def request_commitment(channel: Channel, context_id: int, transaction_uid: str,
                             items: Sequence[tuple[str, str]]) -> tuple[int, str]:
    """Send the N-ACTION (PS3.4 J.3.2); its final status and Error Comment."""
    context = channel.info.negotiated.contexts[context_id]
    message = NActionRQ(
        message_id=channel.next_message_id(),
        requested_sop_class_uid=STORAGE_COMMITMENT_PUSH,
        requested_sop_instance_uid=STORAGE_COMMITMENT_PUSH_INSTANCE,
        action_type_id=ACTION_REQUEST_COMMITMENT, has_dataset=True)
    data = action_information(transaction_uid, items, context.transfer_syntax)
    status, comment = int(Status.PROCESSING_FAILURE), "no response"
    async for reply in channel.request(context_id, message, data):
        status = reply.message.status
        comment = getattr(reply.message, "error_comment", None) or ""
    return status, comment


def parse_report(event_type_id: int, data: bytes, transfer_syntax: str) -> CommitReport:
    """The Event Information of an N-EVENT-REPORT; raises ValueError when unusable."""
    if event_type_id not in (EVENT_ALL_COMMITTED, EVENT_FAILURES_EXIST):
        raise ValueError(f"unknown Event Type ID {event_type_id}")
    try:
        ds = decode_identifier(data, transfer_syntax)
    except IdentifierError as exc:
        raise ValueError(str(exc)) from None
    uid = str(ds.get("TransactionUID", "") or "")
    if not uid:
        raise ValueError("no Transaction UID")
    results: list[CommitResult] = []
    for item in ds.get("ReferencedSOPSequence") or []:
        results.append(CommitResult(str(item.get("ReferencedSOPClassUID", "")),
                                    str(item.get("ReferencedSOPInstanceUID", "")), 0))
    for item in ds.get("FailedSOPSequence") or []:
        reason = item.get("FailureReason")
        results.append(CommitResult(
            str(item.get("ReferencedSOPClassUID", "")),
            str(item.get("ReferencedSOPInstanceUID", "")),
            int(reason) if reason is not None else FailureReason.PROCESSING_FAILURE))
    retrieve = ds.get("RetrieveAETitle")
    return CommitReport(uid, event_type_id, tuple(results),
                        str(retrieve).strip() if retrieve else None)


class ReportWaiter:
    """Answers N-EVENT-REPORTs on any association it serves; resolves on ours."""

    def __init__(self, transaction_uid: str) -> None:
        self.transaction_uid = transaction_uid
        self.report: asyncio.Future[CommitReport] = asyncio.get_running_loop().create_future()

    async def serve(self, channel: Channel) -> None:
        """Handle the requests of one association until it ends."""
        try:
            async for request in channel.requests():
                await self._answer(channel, request)
        except AssociationClosed:
            pass

    async def _answer(self, channel: Channel, request: Request) -> None:
        message = request.message
        if not isinstance(message, NEventReportRQ):
            if request.data is not None:
                await request.data.drain()
            await channel.send(request.context.context_id,
                               response_for(message, Status.UNRECOGNIZED_OPERATION))
            return
        status = Status.SUCCESS
        try:
            data = b"" if request.data is None else await request.data.read_all(MAX_REPORT_BYTES)
            report = parse_report(message.event_type_id, data, request.context.transfer_syntax)
        except ValueError as exc:
            log.warning("unusable N-EVENT-REPORT: %s", exc)
            status = (Status.NO_SUCH_EVENT_TYPE if "Event Type" in str(exc)
                      else Status.INVALID_ARGUMENT_VALUE)
        else:
            if report.transaction_uid == self.transaction_uid and not self.report.done():
                self.report.set_result(report)
            else:
                log.warning("report for another transaction (%s) ignored",
                            report.transaction_uid)
        await channel.send(request.context.context_id,
                           response_for(message, status, event_type_id=message.event_type_id))
