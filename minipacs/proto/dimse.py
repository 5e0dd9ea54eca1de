"""PS3.7 DIMSE command sets: one frozen dataclass per message, and their codec.

A dataclass here *is* the message (no parallel primitives). The command set is group 0000 in
Implicit VR Little Endian (PS3.7 §6.3.1); the codec is table-driven with ``struct`` because it
runs once per message and measurably beats pydicom there (benchmarks/command_codec.py). The
data set that may follow a command travels separately as bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from enum import IntEnum
from types import MappingProxyType
from typing import ClassVar, Final, TypeAlias

from minipacs.proto.status import Status


class DimseError(Exception):
    """A command set that cannot be decoded (PS3.7 §6.3.1, Annex E)."""


class CommandField(IntEnum):
    """PS3.7 Table E.1-1 Command Field (0000,0100) values."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_MOVE_RQ = 0x0021
    C_MOVE_RSP = 0x8021
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    N_EVENT_REPORT_RQ = 0x0100
    N_EVENT_REPORT_RSP = 0x8100
    N_GET_RQ = 0x0110
    N_GET_RSP = 0x8110
    N_SET_RQ = 0x0120
    N_SET_RSP = 0x8120
    N_ACTION_RQ = 0x0130
    N_ACTION_RSP = 0x8130
    N_CREATE_RQ = 0x0140
    N_CREATE_RSP = 0x8140
    N_DELETE_RQ = 0x0150
    N_DELETE_RSP = 0x8150
    C_CANCEL_RQ = 0x0FFF

    @property
    def label(self) -> str:
        """The standard's spelling, e.g. 'C-STORE-RQ'."""
        return self.name.replace("_", "-")


class Priority(IntEnum):
    """PS3.7 Table E.1-1 Priority (0000,0700)."""

    MEDIUM = 0x0000
    HIGH = 0x0001
    LOW = 0x0002


# PS3.7 Table E.1-1: a response's Command Field is its request's with this bit set.
RESPONSE_BIT: Final = 0x8000
# PS3.7 Table E.1-1 Command Data Set Type: 0101H means no data set; any other value means one
# follows. We write 0000H.
DATA_SET_ABSENT: Final = 0x0101
DATA_SET_PRESENT: Final = 0x0000

# PS3.7 Tables E.1-1 and E.2-1: command element tags (group 0000).
TAG_COMMAND_GROUP_LENGTH: Final = 0x0000_0000
TAG_AFFECTED_SOP_CLASS_UID: Final = 0x0000_0002
TAG_REQUESTED_SOP_CLASS_UID: Final = 0x0000_0003
TAG_COMMAND_FIELD: Final = 0x0000_0100
TAG_MESSAGE_ID: Final = 0x0000_0110
TAG_MESSAGE_ID_BEING_RESPONDED_TO: Final = 0x0000_0120
TAG_MOVE_DESTINATION: Final = 0x0000_0600
TAG_PRIORITY: Final = 0x0000_0700
TAG_COMMAND_DATA_SET_TYPE: Final = 0x0000_0800
TAG_STATUS: Final = 0x0000_0900
TAG_OFFENDING_ELEMENT: Final = 0x0000_0901
TAG_ERROR_COMMENT: Final = 0x0000_0902
TAG_ERROR_ID: Final = 0x0000_0903
TAG_AFFECTED_SOP_INSTANCE_UID: Final = 0x0000_1000
TAG_REQUESTED_SOP_INSTANCE_UID: Final = 0x0000_1001
TAG_EVENT_TYPE_ID: Final = 0x0000_1002
TAG_ATTRIBUTE_IDENTIFIER_LIST: Final = 0x0000_1005
TAG_ACTION_TYPE_ID: Final = 0x0000_1008
TAG_NUMBER_OF_REMAINING_SUBOPERATIONS: Final = 0x0000_1020
TAG_NUMBER_OF_COMPLETED_SUBOPERATIONS: Final = 0x0000_1021
TAG_NUMBER_OF_FAILED_SUBOPERATIONS: Final = 0x0000_1022
TAG_NUMBER_OF_WARNING_SUBOPERATIONS: Final = 0x0000_1023
TAG_MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE: Final = 0x0000_1030
TAG_MOVE_ORIGINATOR_MESSAGE_ID: Final = 0x0000_1031

# tag -> (VR, keyword, dataclass attribute); PS3.7 Tables E.1-1, E.2-1.
# fmt: off
COMMAND_ELEMENTS: Final[Mapping[int, tuple[str, str, str]]] = MappingProxyType({
    TAG_COMMAND_GROUP_LENGTH: ("UL", "CommandGroupLength", ""),
    TAG_AFFECTED_SOP_CLASS_UID: ("UI", "AffectedSOPClassUID", "affected_sop_class_uid"),
    TAG_REQUESTED_SOP_CLASS_UID: ("UI", "RequestedSOPClassUID", "requested_sop_class_uid"),
    TAG_COMMAND_FIELD: ("US", "CommandField", "command_field"),
    TAG_MESSAGE_ID: ("US", "MessageID", "message_id"),
    TAG_MESSAGE_ID_BEING_RESPONDED_TO:
        ("US", "MessageIDBeingRespondedTo", "message_id_being_responded_to"),
    TAG_MOVE_DESTINATION: ("AE", "MoveDestination", "move_destination"),
    TAG_PRIORITY: ("US", "Priority", "priority"),
    TAG_COMMAND_DATA_SET_TYPE: ("US", "CommandDataSetType", "has_dataset"),
    TAG_STATUS: ("US", "Status", "status"),
    TAG_OFFENDING_ELEMENT: ("AT", "OffendingElement", "offending_element"),
    TAG_ERROR_COMMENT: ("LO", "ErrorComment", "error_comment"),
    TAG_ERROR_ID: ("US", "ErrorID", "error_id"),
    TAG_AFFECTED_SOP_INSTANCE_UID:
        ("UI", "AffectedSOPInstanceUID", "affected_sop_instance_uid"),
    TAG_REQUESTED_SOP_INSTANCE_UID:
        ("UI", "RequestedSOPInstanceUID", "requested_sop_instance_uid"),
    TAG_EVENT_TYPE_ID: ("US", "EventTypeID", "event_type_id"),
    TAG_ATTRIBUTE_IDENTIFIER_LIST:
        ("AT", "AttributeIdentifierList", "attribute_identifier_list"),
    TAG_ACTION_TYPE_ID: ("US", "ActionTypeID", "action_type_id"),
    TAG_NUMBER_OF_REMAINING_SUBOPERATIONS:
        ("US", "NumberOfRemainingSuboperations", "number_of_remaining_suboperations"),
    TAG_NUMBER_OF_COMPLETED_SUBOPERATIONS:
        ("US", "NumberOfCompletedSuboperations", "number_of_completed_suboperations"),
    TAG_NUMBER_OF_FAILED_SUBOPERATIONS:
        ("US", "NumberOfFailedSuboperations", "number_of_failed_suboperations"),
    TAG_NUMBER_OF_WARNING_SUBOPERATIONS:
        ("US", "NumberOfWarningSuboperations", "number_of_warning_suboperations"),
    TAG_MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE:
        ("AE", "MoveOriginatorApplicationEntityTitle", "move_originator_ae_title"),
    TAG_MOVE_ORIGINATOR_MESSAGE_ID:
        ("US", "MoveOriginatorMessageID", "move_originator_message_id"),
})
# fmt: on


# --- messages: PS3.7 §9.3 (DIMSE-C) and §10.3 (DIMSE-N) ------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Request:
    """Message ID of every request but C-CANCEL-RQ (PS3.7 §9.3, §10.3)."""

    message_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Response:
    """Elements every response carries (PS3.7 §9.3, §10.3; status fields of Annex C)."""

    message_id_being_responded_to: int
    status: int = Status.SUCCESS
    affected_sop_class_uid: str | None = None
    error_comment: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CEchoRQ(_Request):
    """PS3.7 §9.3.5.1 C-ECHO-RQ."""

    command_field: ClassVar[CommandField] = CommandField.C_ECHO_RQ
    affected_sop_class_uid: str
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CEchoRSP(_Response):
    """PS3.7 §9.3.5.2 C-ECHO-RSP."""

    command_field: ClassVar[CommandField] = CommandField.C_ECHO_RSP
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CStoreRQ(_Request):
    """PS3.7 §9.3.1.1 C-STORE-RQ."""

    command_field: ClassVar[CommandField] = CommandField.C_STORE_RQ
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    priority: Priority = Priority.MEDIUM
    has_dataset: bool = True
    move_originator_ae_title: str | None = None
    move_originator_message_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CStoreRSP(_Response):
    """PS3.7 §9.3.1.2 C-STORE-RSP."""

    command_field: ClassVar[CommandField] = CommandField.C_STORE_RSP
    affected_sop_instance_uid: str | None = None
    offending_element: tuple[int, ...] | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CFindRQ(_Request):
    """PS3.7 §9.3.2.1 C-FIND-RQ."""

    command_field: ClassVar[CommandField] = CommandField.C_FIND_RQ
    affected_sop_class_uid: str
    priority: Priority = Priority.MEDIUM
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CFindRSP(_Response):
    """PS3.7 §9.3.2.2 C-FIND-RSP; pending responses carry an identifier (has_dataset)."""

    command_field: ClassVar[CommandField] = CommandField.C_FIND_RSP
    offending_element: tuple[int, ...] | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CGetRQ(_Request):
    """PS3.7 §9.3.3.1 C-GET-RQ."""

    command_field: ClassVar[CommandField] = CommandField.C_GET_RQ
    affected_sop_class_uid: str
    priority: Priority = Priority.MEDIUM
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class _RetrieveResponse(_Response):
    """Sub-operation counters of C-GET-RSP / C-MOVE-RSP (PS3.7 §9.3.3.2, §9.3.4.2)."""

    number_of_remaining_suboperations: int | None = None
    number_of_completed_suboperations: int | None = None
    number_of_failed_suboperations: int | None = None
    number_of_warning_suboperations: int | None = None
    offending_element: tuple[int, ...] | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CGetRSP(_RetrieveResponse):
    """PS3.7 §9.3.3.2 C-GET-RSP."""

    command_field: ClassVar[CommandField] = CommandField.C_GET_RSP


@dataclass(frozen=True, slots=True, kw_only=True)
class CMoveRQ(_Request):
    """PS3.7 §9.3.4.1 C-MOVE-RQ."""

    command_field: ClassVar[CommandField] = CommandField.C_MOVE_RQ
    affected_sop_class_uid: str
    move_destination: str
    priority: Priority = Priority.MEDIUM
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CMoveRSP(_RetrieveResponse):
    """PS3.7 §9.3.4.2 C-MOVE-RSP."""

    command_field: ClassVar[CommandField] = CommandField.C_MOVE_RSP


@dataclass(frozen=True, slots=True, kw_only=True)
class CCancelRQ:
    """PS3.7 §9.3.2.3 C-CANCEL-RQ (FIND, GET and MOVE alike)."""

    command_field: ClassVar[CommandField] = CommandField.C_CANCEL_RQ
    message_id_being_responded_to: int
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class _NRequest(_Request):
    """Requested SOP Class/Instance of N-GET, N-SET, N-ACTION, N-DELETE (PS3.7 §10.3)."""

    requested_sop_class_uid: str
    requested_sop_instance_uid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _NResponse(_Response):
    """Elements every DIMSE-N response may carry (PS3.7 §10.3, Annex C)."""

    affected_sop_instance_uid: str | None = None
    error_id: int | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NEventReportRQ(_Request):
    """PS3.7 §10.3.1.1 N-EVENT-REPORT-RQ; the event information is the data set."""

    command_field: ClassVar[CommandField] = CommandField.N_EVENT_REPORT_RQ
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    event_type_id: int
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NEventReportRSP(_NResponse):
    """PS3.7 §10.3.1.2 N-EVENT-REPORT-RSP."""

    command_field: ClassVar[CommandField] = CommandField.N_EVENT_REPORT_RSP
    event_type_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NGetRQ(_NRequest):
    """PS3.7 §10.3.2.1 N-GET-RQ."""

    command_field: ClassVar[CommandField] = CommandField.N_GET_RQ
    attribute_identifier_list: tuple[int, ...] | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NGetRSP(_NResponse):
    """PS3.7 §10.3.2.2 N-GET-RSP; the attribute list is the data set."""

    command_field: ClassVar[CommandField] = CommandField.N_GET_RSP
    attribute_identifier_list: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NSetRQ(_NRequest):
    """PS3.7 §10.3.3.1 N-SET-RQ; the modification list is the data set."""

    command_field: ClassVar[CommandField] = CommandField.N_SET_RQ
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class NSetRSP(_NResponse):
    """PS3.7 §10.3.3.2 N-SET-RSP."""

    command_field: ClassVar[CommandField] = CommandField.N_SET_RSP
    attribute_identifier_list: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NActionRQ(_NRequest):
    """PS3.7 §10.3.4.1 N-ACTION-RQ; the action information is the data set."""

    command_field: ClassVar[CommandField] = CommandField.N_ACTION_RQ
    action_type_id: int
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NActionRSP(_NResponse):
    """PS3.7 §10.3.4.2 N-ACTION-RSP."""

    command_field: ClassVar[CommandField] = CommandField.N_ACTION_RSP
    action_type_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NCreateRQ(_Request):
    """PS3.7 §10.3.5.1 N-CREATE-RQ; the attribute list is the data set."""

    command_field: ClassVar[CommandField] = CommandField.N_CREATE_RQ
    affected_sop_class_uid: str
    affected_sop_instance_uid: str | None = None
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class NCreateRSP(_NResponse):
    """PS3.7 §10.3.5.2 N-CREATE-RSP."""

    command_field: ClassVar[CommandField] = CommandField.N_CREATE_RSP


@dataclass(frozen=True, slots=True, kw_only=True)
class NDeleteRQ(_NRequest):
    """PS3.7 §10.3.6.1 N-DELETE-RQ."""

    command_field: ClassVar[CommandField] = CommandField.N_DELETE_RQ
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NDeleteRSP(_NResponse):
    """PS3.7 §10.3.6.2 N-DELETE-RSP."""

    command_field: ClassVar[CommandField] = CommandField.N_DELETE_RSP


# fmt: off
DimseRequest: TypeAlias = (
    CEchoRQ | CStoreRQ | CFindRQ | CGetRQ | CMoveRQ | CCancelRQ | NEventReportRQ | NGetRQ
    | NSetRQ | NActionRQ | NCreateRQ | NDeleteRQ
)
DimseResponse: TypeAlias = (
    CEchoRSP | CStoreRSP | CFindRSP | CGetRSP | CMoveRSP | NEventReportRSP | NGetRSP | NSetRSP
    | NActionRSP | NCreateRSP | NDeleteRSP
)
# fmt: on
DimseMessage: TypeAlias = DimseRequest | DimseResponse

_MESSAGE_CLASSES: Final[tuple[type[DimseMessage], ...]] = (
    CEchoRQ, CEchoRSP, CStoreRQ, CStoreRSP, CFindRQ, CFindRSP, CGetRQ, CGetRSP, CMoveRQ,
    CMoveRSP, CCancelRQ, NEventReportRQ, NEventReportRSP, NGetRQ, NGetRSP, NSetRQ, NSetRSP,
    NActionRQ, NActionRSP, NCreateRQ, NCreateRSP, NDeleteRQ, NDeleteRSP,
)  # fmt: skip
MESSAGE_TYPES: Final[Mapping[int, type[DimseMessage]]] = MappingProxyType(
    {cls.command_field: cls for cls in _MESSAGE_CLASSES}
)


def is_request(msg: DimseMessage) -> bool:
    """True for -RQ messages, C-CANCEL-RQ included (PS3.7 Table E.1-1)."""
    return not msg.command_field & RESPONSE_BIT


def is_response(msg: DimseMessage) -> bool:
    """True for -RSP messages (PS3.7 Table E.1-1)."""
    return bool(msg.command_field & RESPONSE_BIT)


def dataset_follows(msg: DimseMessage) -> bool:
    """Whether a data set follows this command (Command Data Set Type, PS3.7 Table E.1-1)."""
    return msg.has_dataset


# --- codec: PS3.5 §7.1.3 implicit VR little endian, §6.2 value padding ---------------------

_HEADER = struct.Struct("<HHI")  # group, element, value length (PS3.5 §7.1.3)
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_US_ELEMENT = struct.Struct("<HHIH")
_AT_VALUE = struct.Struct("<HH")
_MAX_LENGTH: Final = {"UI": 64, "AE": 16, "LO": 64}  # PS3.5 Table 6.2-1
_PAD: Final = {"UI": b"\0", "AE": b" ", "LO": b" "}  # PS3.5 §6.2: UI pads with NUL
_GROUP_LENGTH_HEADER: Final = _HEADER.pack(0, TAG_COMMAND_GROUP_LENGTH, 4)

_Encoder: TypeAlias = Callable[[object], bytes]
_Decoder: TypeAlias = Callable[[bytes, int, int], object]


def _us_encoder(tag: int) -> _Encoder:
    def encode(value: object) -> bytes:
        return _US_ELEMENT.pack(0, tag, 2, value)

    return encode


def _data_set_type_encoder(tag: int) -> _Encoder:
    present = _US_ELEMENT.pack(0, tag, 2, DATA_SET_PRESENT)
    absent = _US_ELEMENT.pack(0, tag, 2, DATA_SET_ABSENT)
    return lambda value: present if value else absent


def _string_encoder(tag: int, vr: str) -> _Encoder:
    pad, limit = _PAD[vr], _MAX_LENGTH[vr]

    def encode(value: object) -> bytes:
        raw = str(value).encode("ascii")  # PS3.7 §6.3.1: default character repertoire
        if len(raw) > limit:
            raise ValueError(f"{vr} value longer than {limit} bytes: {value!r}")
        if len(raw) % 2:
            raw += pad
        return _HEADER.pack(0, tag, len(raw)) + raw

    return encode


def _at_encoder(tag: int) -> _Encoder:
    def encode(value: object) -> bytes:
        tags = tuple(value)  # type: ignore[call-overload]
        raw = b"".join(_AT_VALUE.pack(t >> 16, t & 0xFFFF) for t in tags)
        return _HEADER.pack(0, tag, len(raw)) + raw

    return encode


def _us_decoder(buf: bytes, start: int, end: int) -> int:
    if end - start != 2:
        raise DimseError(f"US value of {end - start} bytes, expected 2")
    value: int = _U16.unpack_from(buf, start)[0]
    return value


def _string_decoder(buf: bytes, start: int, end: int) -> str:
    # Trailing NUL/space is padding (PS3.5 §6.2); "replace" keeps decoding total.
    return buf[start:end].decode("ascii", "replace").strip("\0 ")


def _at_decoder(buf: bytes, start: int, end: int) -> tuple[int, ...]:
    if (end - start) % 4:
        raise DimseError(f"AT value of {end - start} bytes is not a multiple of 4")
    return tuple((g << 16) | e for g, e in _AT_VALUE.iter_unpack(buf[start:end]))


def _priority_decoder(buf: bytes, start: int, end: int) -> Priority:
    value = _us_decoder(buf, start, end)
    if value not in _PRIORITIES:
        raise DimseError(f"invalid Priority {value:#06x}")
    return _PRIORITIES[value]


def _data_set_type_decoder(buf: bytes, start: int, end: int) -> bool:
    return _us_decoder(buf, start, end) != DATA_SET_ABSENT


def _status_decoder(buf: bytes, start: int, end: int) -> int:
    value = _us_decoder(buf, start, end)
    return _STATUSES.get(value, value)


_PRIORITIES: Final = {int(p): p for p in Priority}
_STATUSES: Final[dict[int, int]] = {int(s): s for s in Status}
_SPECIAL_DECODERS: Final[dict[int, _Decoder]] = {
    TAG_PRIORITY: _priority_decoder,
    TAG_COMMAND_DATA_SET_TYPE: _data_set_type_decoder,
    TAG_STATUS: _status_decoder,
}
_VR_DECODERS: Final[dict[str, _Decoder]] = {
    "US": _us_decoder,
    "UI": _string_decoder,
    "AE": _string_decoder,
    "LO": _string_decoder,
    "AT": _at_decoder,
}
# Mandatory on the wire although the dataclass gives them a default (PS3.7 §9.3, §10.3).
_ALWAYS_REQUIRED: Final = frozenset({TAG_COMMAND_DATA_SET_TYPE, TAG_STATUS})


def _encoder(tag: int, vr: str) -> _Encoder:
    if tag == TAG_COMMAND_DATA_SET_TYPE:
        return _data_set_type_encoder(tag)
    if vr == "US":
        return _us_encoder(tag)
    if vr == "AT":
        return _at_encoder(tag)
    return _string_encoder(tag, vr)


_ATTR_TAG: Final = {attr: tag for tag, (_, _, attr) in COMMAND_ELEMENTS.items() if attr}
# class -> ((attribute, encoder), ...) in ascending tag order (PS3.5 §7.1: sorted elements)
_ENCODE_PLAN: dict[type, tuple[tuple[str, _Encoder], ...]] = {}
# class -> ((tag, attribute, decoder, required), ...); the Command Field is handled first.
_DECODE_PLAN: dict[type, tuple[tuple[int, str, _Decoder, bool], ...]] = {}


def _build_plans() -> None:
    for cls in _MESSAGE_CLASSES:
        attrs = {f.name: f for f in fields(cls)}
        tags = sorted([_ATTR_TAG[name] for name in attrs] + [TAG_COMMAND_FIELD])
        _ENCODE_PLAN[cls] = tuple(
            (COMMAND_ELEMENTS[tag][2], _encoder(tag, COMMAND_ELEMENTS[tag][0])) for tag in tags
        )
        plan = []
        for tag in tags:
            vr, _, attr = COMMAND_ELEMENTS[tag]
            if tag == TAG_COMMAND_FIELD:
                continue
            f = attrs[attr]
            required = tag in _ALWAYS_REQUIRED or f.default is MISSING
            decoder = _SPECIAL_DECODERS.get(tag, _VR_DECODERS[vr])
            plan.append((tag, attr, decoder, required))
        _DECODE_PLAN[cls] = tuple(plan)


_build_plans()


def encode_command(msg: DimseMessage) -> bytes:
    """Command set bytes, group length first, elements ascending (PS3.7 §6.3.1, PS3.5 §7.1)."""
    try:
        parts = [
            encode(value)
            for attr, encode in _ENCODE_PLAN[type(msg)]
            if (value := getattr(msg, attr)) is not None
        ]
    except (struct.error, TypeError) as exc:
        raise ValueError(f"cannot encode {msg.command_field.label}: {exc}") from exc
    body = b"".join(parts)
    return _GROUP_LENGTH_HEADER + _U32.pack(len(body)) + body


def _tag_name(tag: int) -> str:
    keyword = COMMAND_ELEMENTS[tag][1] if tag in COMMAND_ELEMENTS else "element"
    return f"{keyword} (0000,{tag & 0xFFFF:04X})"


def _split(buf: bytes) -> dict[int, tuple[int, int]]:
    """Element tag -> (value start, value end), checking every declared length (PS3.5 §7.1.3)."""
    spans: dict[int, tuple[int, int]] = {}
    size, offset = len(buf), 0
    while offset < size:
        if size - offset < _HEADER.size:
            raise DimseError(f"truncated element header at offset {offset}")
        group, element, length = _HEADER.unpack_from(buf, offset)
        if group != 0:
            raise DimseError(f"element ({group:04X},{element:04X}) outside command group 0000")
        start = offset + _HEADER.size
        end = start + length
        if end > size:
            raise DimseError(f"{_tag_name(element)} length {length} runs past the command set")
        if element in spans:
            raise DimseError(f"duplicate {_tag_name(element)}")
        spans[element] = (start, end)
        offset = end
    return spans


def decode_command(data: bytes | bytearray | memoryview) -> DimseMessage:
    """Decode a complete command set; any malformation raises DimseError (PS3.7 §6.3.1)."""
    try:
        return _decode(bytes(data))
    except DimseError:
        raise
    except Exception as exc:  # defensive: a peer's bytes never raise anything else
        raise DimseError(f"undecodable command set: {exc!r}") from exc


def _decode(buf: bytes) -> DimseMessage:
    spans = _split(buf)
    if TAG_COMMAND_GROUP_LENGTH in spans:  # tolerated when absent: its value is not needed
        _us_or_ul(buf, spans[TAG_COMMAND_GROUP_LENGTH], 4, TAG_COMMAND_GROUP_LENGTH)
    if TAG_COMMAND_FIELD not in spans:
        raise DimseError(f"missing {_tag_name(TAG_COMMAND_FIELD)}")
    field = _us_or_ul(buf, spans[TAG_COMMAND_FIELD], 2, TAG_COMMAND_FIELD)
    cls = MESSAGE_TYPES.get(field)
    if cls is None:
        raise DimseError(f"unknown Command Field {field:#06x}")
    values: dict[str, object] = {}
    for tag, attr, decode, required in _DECODE_PLAN[cls]:
        span = spans.get(tag)
        if span is None or span[0] == span[1]:  # a zero-length value counts as absent
            if required:
                raise DimseError(f"{cls.command_field.label} lacks {_tag_name(tag)}")
            continue
        try:
            values[attr] = decode(buf, *span)
        except DimseError as exc:
            raise DimseError(f"{_tag_name(tag)}: {exc}") from None
    return cls(**values)


def _us_or_ul(buf: bytes, span: tuple[int, int], size: int, tag: int) -> int:
    start, end = span
    if end - start != size:
        raise DimseError(f"{_tag_name(tag)} has {end - start} bytes, expected {size}")
    value: int = (_U16 if size == 2 else _U32).unpack_from(buf, start)[0]
    return value
