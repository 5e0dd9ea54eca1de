"""PS3.7 DIMSE command sets: one frozen dataclass per message, and their codec.

A dataclass here *is* the message (no parallel primitives). The command set is group 0000 in
Implicit VR Little Endian (PS3.7 §6.3.1); the codec is table-driven with ``struct`` because it
runs once per message and measurably beats pydicom there (benchmarks/command_codec.py). The
data set that may follow a command travels separately as bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
    # PS3.7 C.4: the tags a 0105H/0120H/0121H failure is about.
    attribute_identifier_list: tuple[int, ...] | None = None


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
