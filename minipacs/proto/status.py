"""DIMSE status codes as data: PS3.7 Annex C general statuses plus PS3.4 service statuses.

One ``Status`` IntEnum names every code we send or recognise. A code that two services use with
different meanings is one member (with an alias per meaning); the per-service wording lives in
the description tables, and ``describe()`` picks it for log lines and CLI output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from types import MappingProxyType
from typing import Final


class Status(IntEnum):
    """DIMSE Status (0000,0900) values: PS3.7 Annex C; PS3.4 B.2.3, C.4.1.1.4-C.4.3.1.5."""

    # PS3.7 C.1 success
    SUCCESS = 0x0000
    # PS3.4 H.4 (e.g. Print Management N-GET) warning
    OPTIONAL_ATTRIBUTES_NOT_SUPPORTED = 0x0001
    # PS3.7 Annex C general statuses
    NO_SUCH_ATTRIBUTE = 0x0105
    INVALID_ATTRIBUTE_VALUE = 0x0106
    ATTRIBUTE_LIST_ERROR = 0x0107  # warning
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_SOP_INSTANCE = 0x0112
    NO_SUCH_EVENT_TYPE = 0x0113
    NO_SUCH_ARGUMENT = 0x0114
    INVALID_ARGUMENT_VALUE = 0x0115
    ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116  # warning
    INVALID_OBJECT_INSTANCE = 0x0117
    NO_SUCH_SOP_CLASS = 0x0118
    CLASS_INSTANCE_CONFLICT = 0x0119
    MISSING_ATTRIBUTE = 0x0120
    MISSING_ATTRIBUTE_VALUE = 0x0121
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NO_SUCH_ACTION = 0x0123
    NOT_AUTHORIZED = 0x0124
    DUPLICATE_INVOCATION = 0x0210
    UNRECOGNIZED_OPERATION = 0x0211
    MISTYPED_ARGUMENT = 0x0212
    RESOURCE_LIMITATION = 0x0213
    # PS3.4 B.2.3 / C.4.1.1.4 refused (first code of the A7xx range)
    OUT_OF_RESOURCES = 0xA700
    # PS3.4 C.4.2.1.5 / C.4.3.1.5
    OUT_OF_RESOURCES_NUMBER_OF_MATCHES = 0xA701
    OUT_OF_RESOURCES_SUBOPERATIONS = 0xA702
    MOVE_DESTINATION_UNKNOWN = 0xA801
    # PS3.4 B.2.3 "Data Set does not match SOP Class"; Q/R "Identifier does not match"
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    # PS3.4 B.2.3 "Coercion of Data Elements"; C-MOVE/C-GET "one or more failures"
    COERCION_OF_DATA_ELEMENTS = 0xB000
    SUBOPERATIONS_COMPLETE_WITH_FAILURES = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
    # PS3.4 B.2.3 "Cannot understand"; Q/R "Unable to process" (first code of Cxxx)
    CANNOT_UNDERSTAND = 0xC000
    UNABLE_TO_PROCESS = 0xC000
    # PS3.7 C.3 cancel, C.2 pending
    CANCEL = 0xFE00
    PENDING = 0xFF00
    PENDING_WARNING = 0xFF01


class StatusCategory(Enum):
    """PS3.7 Annex C status classes."""

    SUCCESS = "Success"
    WARNING = "Warning"
    FAILURE = "Failure"
    CANCEL = "Cancel"
    PENDING = "Pending"


_WARNING_CODES: Final = frozenset(
    {
        Status.OPTIONAL_ATTRIBUTES_NOT_SUPPORTED,
        Status.ATTRIBUTE_LIST_ERROR,
        Status.ATTRIBUTE_VALUE_OUT_OF_RANGE,
    }
)
# PS3.4 B.2.3, C.4.2.1.5: Bxxx is the warning range of the composite services.
_WARNING_RANGE_FIRST: Final = 0xB000
_WARNING_RANGE_LAST: Final = 0xBFFF
_PENDING_CODES: Final = frozenset({Status.PENDING, Status.PENDING_WARNING})


def category(code: int) -> StatusCategory:
    """Status class of ``code``; unknown codes are failures (PS3.7 Annex C, PS3.4 B.2.3)."""
    if code == Status.SUCCESS:
        return StatusCategory.SUCCESS
    if code in _PENDING_CODES:
        return StatusCategory.PENDING
    if code == Status.CANCEL:
        return StatusCategory.CANCEL
    if code in _WARNING_CODES or _WARNING_RANGE_FIRST <= code <= _WARNING_RANGE_LAST:
        return StatusCategory.WARNING
    return StatusCategory.FAILURE


@dataclass(frozen=True, slots=True)
class StatusRange:
    """A PS3.4 code range ('A7xx', 'Cxxx') whose members all share one meaning."""

    first: int
    last: int
    description: str

    def __contains__(self, code: object) -> bool:
        return isinstance(code, int) and self.first <= code <= self.last


def _table(entries: dict[int, str]) -> Mapping[int, str]:
    return MappingProxyType(entries)


# PS3.7 Annex C: statuses that any DIMSE-N service may return.
N_STATUSES: Final = _table(
    {
        Status.SUCCESS: "Success",
        Status.OPTIONAL_ATTRIBUTES_NOT_SUPPORTED: "Requested optional attributes not supported",
        Status.NO_SUCH_ATTRIBUTE: "No such attribute",
        Status.INVALID_ATTRIBUTE_VALUE: "Invalid attribute value",
        Status.ATTRIBUTE_LIST_ERROR: "Attribute list error",
        Status.PROCESSING_FAILURE: "Processing failure",
        Status.DUPLICATE_SOP_INSTANCE: "Duplicate SOP instance",
        Status.NO_SUCH_SOP_INSTANCE: "No such SOP instance",
        Status.NO_SUCH_EVENT_TYPE: "No such event type",
        Status.NO_SUCH_ARGUMENT: "No such argument",
        Status.INVALID_ARGUMENT_VALUE: "Invalid argument value",
        Status.ATTRIBUTE_VALUE_OUT_OF_RANGE: "Attribute value out of range",
        Status.INVALID_OBJECT_INSTANCE: "Invalid object instance",
        Status.NO_SUCH_SOP_CLASS: "No such SOP class",
        Status.CLASS_INSTANCE_CONFLICT: "Class-instance conflict",
        Status.MISSING_ATTRIBUTE: "Missing attribute",
        Status.MISSING_ATTRIBUTE_VALUE: "Missing attribute value",
        Status.SOP_CLASS_NOT_SUPPORTED: "Refused: SOP class not supported",
        Status.NO_SUCH_ACTION: "No such action",
        Status.NOT_AUTHORIZED: "Refused: not authorized",
        Status.DUPLICATE_INVOCATION: "Duplicate invocation",
        Status.UNRECOGNIZED_OPERATION: "Unrecognized operation",
        Status.MISTYPED_ARGUMENT: "Mistyped argument",
        Status.RESOURCE_LIMITATION: "Resource limitation",
        Status.CANCEL: "Cancel",
    }
)

# Statuses of Annex C that the composite (C-) services share.
_C_GENERAL: Final = {
    Status.SUCCESS: "Success",
    Status.SOP_CLASS_NOT_SUPPORTED: "Refused: SOP class not supported",
    Status.NOT_AUTHORIZED: "Refused: not authorized",
    Status.DUPLICATE_INVOCATION: "Duplicate invocation",
    Status.UNRECOGNIZED_OPERATION: "Unrecognized operation",
    Status.MISTYPED_ARGUMENT: "Mistyped argument",
    Status.PROCESSING_FAILURE: "Processing failure",
}

# PS3.4 A.4 Verification: only the general statuses.
ECHO_STATUSES: Final = _table(dict(_C_GENERAL))

# PS3.4 B.2.3 Storage Service Class.
STORE_STATUSES: Final = _table(
    _C_GENERAL
    | {
        Status.INVALID_OBJECT_INSTANCE: "Invalid SOP instance",
        Status.OUT_OF_RESOURCES: "Out of resources",
        Status.DATASET_DOES_NOT_MATCH_SOP_CLASS: "Data set does not match SOP class",
        Status.CANNOT_UNDERSTAND: "Cannot understand",
        Status.COERCION_OF_DATA_ELEMENTS: "Coercion of data elements",
        Status.ELEMENTS_DISCARDED: "Elements discarded",
        Status.DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING: "Data set does not match SOP class",
    }
)

# PS3.4 C.4.1.1.4 C-FIND.
FIND_STATUSES: Final = _table(
    _C_GENERAL
    | {
        Status.OUT_OF_RESOURCES: "Out of resources",
        Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: "Identifier does not match SOP class",
        Status.UNABLE_TO_PROCESS: "Unable to process",
        Status.CANCEL: "Matching terminated due to cancel",
        Status.PENDING: "Matches are continuing",
        Status.PENDING_WARNING: "Matches are continuing, optional keys not supported",
    }
)

_RETRIEVE: Final = _C_GENERAL | {
    Status.OUT_OF_RESOURCES_NUMBER_OF_MATCHES: "Out of resources: unable to calculate matches",
    Status.OUT_OF_RESOURCES_SUBOPERATIONS: "Out of resources: unable to perform sub-operations",
    Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: "Identifier does not match SOP class",
    Status.UNABLE_TO_PROCESS: "Unable to process",
    Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES: "Sub-operations complete with failures",
    Status.CANCEL: "Sub-operations terminated due to cancel",
    Status.PENDING: "Sub-operations are continuing",
}

# PS3.4 C.4.2.1.5 C-MOVE.
MOVE_STATUSES: Final = _table(
    _RETRIEVE | {Status.MOVE_DESTINATION_UNKNOWN: "Move destination unknown"}
)

# PS3.4 C.4.3.1.5 C-GET.
GET_STATUSES: Final = _table(dict(_RETRIEVE))

# Ranges whose every code carries one meaning (PS3.4 B.2.3, C.4.1.1.4-C.4.3.1.5).
_OUT_OF_RESOURCES_RANGE: Final = StatusRange(0xA700, 0xA7FF, "Out of resources")
_CANNOT_UNDERSTAND_RANGE: Final = StatusRange(0xC000, 0xCFFF, "Cannot understand")
_UNABLE_TO_PROCESS_RANGE: Final = StatusRange(0xC000, 0xCFFF, "Unable to process")
STATUS_RANGES: Final[Mapping[str, tuple[StatusRange, ...]]] = MappingProxyType(
    {
        "C-STORE": (
            _OUT_OF_RESOURCES_RANGE,
            StatusRange(0xA900, 0xA9FF, "Data set does not match SOP class"),
            _CANNOT_UNDERSTAND_RANGE,
        ),
        "C-FIND": (_UNABLE_TO_PROCESS_RANGE,),
        "C-MOVE": (_UNABLE_TO_PROCESS_RANGE,),
        "C-GET": (_UNABLE_TO_PROCESS_RANGE,),
    }
)

# Every DIMSE service name (PS3.7 §9, §10) to its description table.
SERVICE_STATUSES: Final[Mapping[str, Mapping[int, str]]] = MappingProxyType(
    {
        "C-ECHO": ECHO_STATUSES,
        "C-STORE": STORE_STATUSES,
        "C-FIND": FIND_STATUSES,
        "C-MOVE": MOVE_STATUSES,
        "C-GET": GET_STATUSES,
    }
    | {
        name: N_STATUSES
        for name in (
            "N-EVENT-REPORT",
            "N-GET",
            "N-SET",
            "N-ACTION",
            "N-CREATE",
            "N-DELETE",
        )
    }
)

# Wording when no service is given: Annex C, the composite meanings, and a neutral text
# for the codes whose meaning depends on the service.
_GENERAL: Final = {
    **N_STATUSES,
    **{code: text for table in (STORE_STATUSES, MOVE_STATUSES) for code, text in table.items()},
    Status.DATASET_DOES_NOT_MATCH_SOP_CLASS: "Data set or identifier does not match SOP class",
    Status.COERCION_OF_DATA_ELEMENTS: "Coercion of data elements or sub-operation failures",
    Status.CANNOT_UNDERSTAND: "Cannot understand or unable to process",
    Status.PENDING: "Pending",
    Status.PENDING_WARNING: "Pending with warnings",
    Status.CANCEL: "Cancel",
}
_GENERAL_RANGES: Final = (
    _OUT_OF_RESOURCES_RANGE,
    StatusRange(0xA900, 0xA9FF, "Data set or identifier does not match SOP class"),
    StatusRange(0xC000, 0xCFFF, "Cannot understand or unable to process"),
)


def _lookup(code: int, service: str | None) -> str | None:
    if service is None:
        table, ranges = _GENERAL, _GENERAL_RANGES
    else:
        key = service.upper()
        if key not in SERVICE_STATUSES:
            raise ValueError(f"unknown DIMSE service {service!r}")
        table, ranges = SERVICE_STATUSES[key], STATUS_RANGES.get(key, ())
    text = table.get(code)
    if text is not None:
        return text
    for span in ranges:
        if code in span:
            return span.description
    # A code outside the service's own table may still be an Annex C general status.
    return N_STATUSES.get(code)


def describe(code: int, service: str | None = None) -> str:
    """'0xA700 Out of resources': code plus its meaning for ``service`` (e.g. 'C-STORE')."""
    text = _lookup(code, service)
    if text is None:
        text = f"Unknown {category(code).value.lower()} status"
    return f"0x{code:04X} {text}"
