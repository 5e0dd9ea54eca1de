"""Modality Performed Procedure Step SCP (PS3.4 Annex F): N-CREATE, N-SET, and N-GET through
the MPPS Retrieve SOP class (F.8).

An MPPS is created IN PROGRESS (F.7.2.1.3), updated by N-SET while it stays so, and frozen once
it is COMPLETED or DISCONTINUED (F.7.2.2.3). Data sets are kept as DICOM JSON (PS3.18 F.2):
an N-SET's elements replace the stored ones whole, sequences included (PS3.7 10.1.3). When an
instance reaches a final state, `on_step_ended` hears it once, with the (Study Instance UID,
Scheduled Procedure Step ID) pairs of its Scheduled Step Attributes Sequence.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

from pydicom.dataset import Dataset

from ..ports import Channel, MppsIndex, MppsRecord, Request
from ..proto.dimse import NCreateRQ, NGetRQ, NSetRQ
from ..proto.status import Status
from ..proto.uid import is_valid_uid
from .answers import answer_charset, encode_dataset
from .dispatcher import Outcome, response_for
from .identifier import decode_identifier
from .matching import CHARSET_VRS, IdentifierError
from .mpps_rules import (
    CREATE_RULES,
    FINAL_RULES,
    FINAL_STATES,
    IN_PROGRESS,
    NOT_SETTABLE,
    SET_RULES,
    STATUSES,
    TAG_MODALITY,
    TAG_PATIENT_ID,
    TAG_PERFORMED_STATION_AE_TITLE,
    TAG_PPS_END_DATE,
    TAG_PPS_END_TIME,
    TAG_PPS_START_DATE,
    TAG_PPS_START_TIME,
    TAG_PPS_STATUS,
    TAG_SCHEDULED_PROCEDURE_STEP_ID,
    TAG_SCHEDULED_STEP_ATTRIBUTES_SEQUENCE,
    TAG_SPECIFIC_CHARACTER_SET,
    TAG_STUDY_INSTANCE_UID,
    Violation,
    check,
    json_key,
    text_of,
)

__all__ = ["ERROR_ID_MAY_NO_LONGER_BE_UPDATED", "MppsService", "StepEndedHook"]

log = logging.getLogger("minipacs.services")

# PS3.4 F.7.2.2.4, Table F.7.2-2: N-SET of an MPPS that is no longer IN PROGRESS.
ERROR_ID_MAY_NO_LONGER_BE_UPDATED: Final = 0xA710
MAY_NO_LONGER_BE_UPDATED: Final = "Performed Procedure Step Object may no longer be updated"
# An MPPS data set is a few KiB; this bounds what one message may cost us.
MAX_MPPS_BYTES: Final = 1 << 20

# Called once per instance that reaches a final state; what it returns is ignored.
StepEndedHook = Callable[[str, tuple[tuple[str, str], ...]], Awaitable[object]]
JsonObject = dict[str, Any]


class _Refusal(Exception):
    """A request we answer with a failure status (and the fields PS3.7 C.4 relates to it)."""

    def __init__(self, status: Status, comment: str, *, tags: tuple[int, ...] | None = None,
                 dataset: Dataset | None = None, error_id: int | None = None) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment
        self.tags = tags
        self.dataset = dataset
        self.error_id = error_id

    @classmethod
    def of(cls, violation: Violation) -> _Refusal:
        return cls(violation.status, violation.comment, tags=violation.tags)


def new_uid() -> str:
    """A UID from a random UUID (PS3.5 B.2): no organisation root needed."""
    return f"2.25.{uuid.uuid4().int}"


class MppsService:
    """Handlers for the dispatcher: `create` (N-CREATE) and `set` (N-SET) on the MPPS SOP
    class, `get` (N-GET) on MPPS Retrieve."""

    def __init__(self, index: MppsIndex, *, on_step_ended: StepEndedHook | None = None,
                 max_dataset_bytes: int = MAX_MPPS_BYTES) -> None:
        self._index = index
        self._on_step_ended = on_step_ended
        self._max_bytes = max_dataset_bytes
        # N-SET is read, merge, write: one at a time, so two updates never lose one another.
        self._set_lock = asyncio.Lock()

    # --- N-CREATE (PS3.4 F.7.2.1) ----------------------------------------------------------

    async def create(self, channel: Channel, request: Request) -> Outcome:
        message = request.message
        assert isinstance(message, NCreateRQ)
        uid = message.affected_sop_instance_uid or new_uid()  # F.7.2.1.3: SCP may assign
        try:
            if not is_valid_uid(uid):  # PS3.5 §9.1, the one grammar
                raise _Refusal(Status.INVALID_OBJECT_INSTANCE, "SOP Instance UID is not a UID")
            ds = await self._read(request, charset=None)
            attributes = _to_json(ds)
            violation = check(attributes, CREATE_RULES)
            if violation is not None:
                raise _Refusal.of(violation)
            status = text_of(attributes, TAG_PPS_STATUS)
            if status != IN_PROGRESS:
                # F.7.2.1.3: any other status is 0106H, with the Attribute List.
                raise _Refusal(Status.INVALID_ATTRIBUTE_VALUE,
                               f"status must be {IN_PROGRESS}, not {status!r}",
                               dataset=_subset(ds, [TAG_PPS_STATUS]))
            record = _record(uid, attributes, calling_ae=channel.info.calling_ae)
            if not await self._index.create_mpps(record):
                raise _Refusal(Status.DUPLICATE_SOP_INSTANCE, f"MPPS {uid} exists")
        except _Refusal as refusal:
            return _refuse(request, refusal)
        log.info("MPPS %s created IN PROGRESS by %s (patient %r, %d step(s))", uid,
                 channel.info.calling_ae, record.patient_id, len(record.steps))
        return Outcome(response_for(message, Status.SUCCESS, affected_sop_instance_uid=uid))

    # --- N-SET (PS3.4 F.7.2.2) -------------------------------------------------------------

    async def set(self, channel: Channel, request: Request) -> Outcome:
        message = request.message
        assert isinstance(message, NSetRQ)
        uid = message.requested_sop_instance_uid
        async with self._set_lock:
            try:
                record = await self._index.get_mpps(uid)
                if record is None:
                    raise _Refusal(Status.NO_SUCH_SOP_INSTANCE, f"no MPPS {uid}")
                if record.status != IN_PROGRESS:
                    raise _frozen()
                charset = record.dataset.get(json_key(TAG_SPECIFIC_CHARACTER_SET))
                ds = await self._read(request, charset=charset)
                changes = _to_json(ds)
                merged = self._merge(record.dataset, changes, ds)
                updated = _record(uid, merged, calling_ae=record.calling_ae,
                                  steps=record.steps)
                if not await self._index.update_mpps(updated):
                    raise _frozen()  # another process finished it in between
            except _Refusal as refusal:
                return _refuse(request, refusal)
        log.info("MPPS %s set by %s: %s", uid, channel.info.calling_ae, updated.status)
        if updated.status in FINAL_STATES:
            await self._step_ended(updated)
        return Outcome(response_for(message, Status.SUCCESS))

    def _merge(self, stored: Mapping[str, Any], changes: JsonObject, ds: Dataset) -> JsonObject:
        """The stored data set with the modification list applied; raises _Refusal."""
        refused = sorted(tag for tag in (int(key, 16) for key in changes)
                         if tag in NOT_SETTABLE)
        if refused:
            # Table F.7.2-1 "Not allowed"; PS3.7 C.4: 0105H with the Attribute Identifier List.
            raise _Refusal(Status.NO_SUCH_ATTRIBUTE, "N-SET may not change these attributes",
                           tags=tuple(refused))
        violation = check(changes, SET_RULES, only_present=True)
        if violation is not None:
            raise _Refusal.of(violation)
        if json_key(TAG_PPS_STATUS) in changes:
            status = text_of(changes, TAG_PPS_STATUS)
            if not status:
                raise _Refusal(Status.MISSING_ATTRIBUTE_VALUE, "status without a value",
                               tags=(TAG_PPS_STATUS,))
            if status not in STATUSES:  # PS3.3 C.4.14 enumerated values
                raise _Refusal(Status.INVALID_ATTRIBUTE_VALUE, f"unknown status {status!r}",
                               dataset=_subset(ds, [TAG_PPS_STATUS]))
        merged = {**stored, **changes}  # PS3.7 10.1.3: an element sent replaces it whole
        if text_of(merged, TAG_PPS_STATUS) in FINAL_STATES:
            # Table F.7.2-1 Final State column, checked on the result of the merge.
            violation = check(merged, FINAL_RULES,
                              absent_status=Status.MISSING_ATTRIBUTE_VALUE)
            if violation is not None:
                raise _Refusal.of(violation)
        return dict(sorted(merged.items()))

    async def _step_ended(self, record: MppsRecord) -> None:
        """Tell the hook once; its failure is logged, never the modality's problem."""
        if self._on_step_ended is None:
            return
        try:
            await self._on_step_ended(record.status, record.steps)
        except Exception:
            log.exception("MPPS %s: the step-ended hook failed", record.sop_instance_uid)

    # --- N-GET through MPPS Retrieve (PS3.4 F.8) -------------------------------------------

    async def get(self, channel: Channel, request: Request) -> Outcome:
        message = request.message
        assert isinstance(message, NGetRQ)
        uid = message.requested_sop_instance_uid
        record = await self._index.get_mpps(uid)
        if record is None:
            return _refuse(request, _Refusal(Status.NO_SUCH_SOP_INSTANCE, f"no MPPS {uid}"))
        wanted = message.attribute_identifier_list
        attributes = dict(record.dataset)
        if wanted:  # PS3.7 10.1.2.1.3: the listed attributes; all when the list is absent
            keys = {json_key(tag) for tag in wanted} | {json_key(TAG_SPECIFIC_CHARACTER_SET)}
            attributes = {key: value for key, value in attributes.items() if key in keys}
        dataset = _encode(attributes, request.context.transfer_syntax)
        return Outcome(response_for(message, Status.SUCCESS, has_dataset=True), dataset)

    # --- helpers -----------------------------------------------------------------------------

    async def _read(self, request: Request, *, charset: Any) -> Dataset:
        """The request's data set; an empty one when none came. Raises _Refusal."""
        if request.data is None:
            return Dataset()
        try:
            data = await request.data.read_all(self._max_bytes)
        except ValueError:
            raise _Refusal(Status.RESOURCE_LIMITATION,
                           f"data set over {self._max_bytes} bytes") from None
        if not data:
            return Dataset()
        try:
            ds = decode_identifier(data, request.context.transfer_syntax)
        except IdentifierError as exc:
            raise _Refusal(Status.PROCESSING_FAILURE, exc.comment) from None
        if charset is not None and TAG_SPECIFIC_CHARACTER_SET not in ds:
            # An N-SET without (0008,0005) is read in the instance's character set.
            ds[TAG_SPECIFIC_CHARACTER_SET] = Dataset.from_json(
                {json_key(TAG_SPECIFIC_CHARACTER_SET): charset})[TAG_SPECIFIC_CHARACTER_SET]
        return ds


def _frozen() -> _Refusal:
    # PS3.4 F.7.2.2.3, Table F.7.2-2: 0110H with Error ID A710H.
    return _Refusal(Status.PROCESSING_FAILURE, MAY_NO_LONGER_BE_UPDATED,
                    error_id=ERROR_ID_MAY_NO_LONGER_BE_UPDATED)


def _refuse(request: Request, refusal: _Refusal) -> Outcome:
    """The failure response; it names the instance only when the request did (PS3.7 10.3)."""
    fields: dict[str, object] = {}
    if refusal.tags:
        fields["attribute_identifier_list"] = refusal.tags
    if refusal.error_id is not None:
        fields["error_id"] = refusal.error_id
    dataset = None
    if refusal.dataset is not None:
        fields["has_dataset"] = True
        dataset = encode_dataset(refusal.dataset, request.context.transfer_syntax)
    log.debug("%s refused: 0x%04X %s", type(request.message).__name__, refusal.status,
              refusal.comment)
    return Outcome(response_for(request.message, refusal.status, refusal.comment, **fields),
                   dataset)


def _to_json(ds: Dataset) -> JsonObject:
    """DICOM JSON of a received data set, text decoded with its character set."""
    try:
        return ds.to_json_dict(bulk_data_threshold=MAX_MPPS_BYTES)
    except Exception as exc:  # a peer's bytes can break pydicom's conversion in any way
        raise _Refusal(Status.INVALID_ATTRIBUTE_VALUE,
                       f"cannot read the data set: {type(exc).__name__}") from None


def _subset(ds: Dataset, tags: Iterable[int]) -> Dataset:
    out = Dataset()
    for tag in tags:
        if tag in ds:
            out.add(ds[tag])
    return out


def _record(uid: str, attributes: JsonObject, *, calling_ae: str,
            steps: tuple[tuple[str, str], ...] | None = None) -> MppsRecord:
    if steps is None:
        items = (attributes.get(json_key(TAG_SCHEDULED_STEP_ATTRIBUTES_SEQUENCE)) or {})
        steps = tuple((text_of(item, TAG_STUDY_INSTANCE_UID),
                       text_of(item, TAG_SCHEDULED_PROCEDURE_STEP_ID))
                      for item in items.get("Value") or () if isinstance(item, Mapping))
    return MppsRecord(
        sop_instance_uid=uid, status=text_of(attributes, TAG_PPS_STATUS), dataset=attributes,
        patient_id=text_of(attributes, TAG_PATIENT_ID),
        modality=text_of(attributes, TAG_MODALITY),
        station_ae=text_of(attributes, TAG_PERFORMED_STATION_AE_TITLE),
        start_date=text_of(attributes, TAG_PPS_START_DATE),
        start_time=text_of(attributes, TAG_PPS_START_TIME),
        end_date=text_of(attributes, TAG_PPS_END_DATE),
        end_time=text_of(attributes, TAG_PPS_END_TIME),
        calling_ae=calling_ae, steps=steps)


def _texts(ds: Dataset) -> Iterable[str]:
    """Every value the Specific Character Set applies to (PS3.5 6.1.2.3)."""
    for element in ds:
        if element.VR == "SQ":
            for item in element.value or ():
                yield from _texts(item)
        elif element.VR in CHARSET_VRS and element.value is not None:
            values = element.value if element.VM > 1 else [element.value]
            yield from (str(value) for value in values)


def _encode(attributes: Mapping[str, Any], transfer_syntax: str) -> bytes:
    """A stored data set for a response, in a character set that holds its text."""
    ds = Dataset.from_json(dict(attributes))
    declared = ds.get(TAG_SPECIFIC_CHARACTER_SET)
    terms = [] if declared is None else [str(term) for term in (
        declared.value if declared.VM > 1 else [declared.value])]
    charset = answer_charset(_texts(ds), terms)
    if charset:
        ds.SpecificCharacterSet = list(charset) if len(charset) > 1 else charset[0]
    elif "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet
    return encode_dataset(ds, transfer_syntax)
