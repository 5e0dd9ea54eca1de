"""MPPS attribute rules as data: PS3.4 Table F.7.2-1, checked on DICOM JSON data sets.

The table gives each attribute a requirement for the N-CREATE, the N-SET and the final
state (COMPLETED or DISCONTINUED). What we enforce (docs/conformance.md 3.1.5.6):
- N-CREATE: the Type 1 attributes, at the top level and inside the sequence items that are
  sent; absent → 0120H Missing Attribute, present without a value → 0121H.
- N-SET: the attributes marked "Not allowed" → 0105H No Such Attribute; Type 1 item
  attributes of a sequence it replaces as for N-CREATE.
- Final state: the attributes Table F.7.2-1 requires then (after merging) → 0121H.
Type 2 attributes are not enforced: many modalities leave them out, and nothing we do with
an MPPS needs them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from ..proto.status import Status

__all__ = [
    "COMPLETED",
    "CREATE_RULES",
    "DISCONTINUED",
    "FINAL_RULES",
    "FINAL_STATES",
    "IN_PROGRESS",
    "NOT_SETTABLE",
    "SET_RULES",
    "STATUSES",
    "Rule",
    "Violation",
    "check",
    "json_key",
    "text_of",
]

# PS3.3 C.4.14 Performed Procedure Step Status (0040,0252) enumerated values.
IN_PROGRESS: Final = "IN PROGRESS"
COMPLETED: Final = "COMPLETED"
DISCONTINUED: Final = "DISCONTINUED"
STATUSES: Final = frozenset({IN_PROGRESS, COMPLETED, DISCONTINUED})
FINAL_STATES: Final = frozenset({COMPLETED, DISCONTINUED})

# Tags of PS3.4 Table F.7.2-1.
TAG_SPECIFIC_CHARACTER_SET: Final = 0x00080005
TAG_SOP_CLASS_UID: Final = 0x00080016
TAG_SOP_INSTANCE_UID: Final = 0x00080018
TAG_MODALITY: Final = 0x00080060
TAG_REFERENCED_PATIENT_SEQUENCE: Final = 0x00081120
TAG_REFERENCED_IMAGE_SEQUENCE: Final = 0x00081140
TAG_REFERENCED_SOP_CLASS_UID: Final = 0x00081150
TAG_REFERENCED_SOP_INSTANCE_UID: Final = 0x00081155
TAG_PATIENT_NAME: Final = 0x00100010
TAG_PATIENT_ID: Final = 0x00100020
TAG_ISSUER_OF_PATIENT_ID: Final = 0x00100021
TAG_ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE: Final = 0x00100024
TAG_PATIENT_BIRTH_DATE: Final = 0x00100030
TAG_PATIENT_SEX: Final = 0x00100040
TAG_PROTOCOL_NAME: Final = 0x00181030
TAG_STUDY_INSTANCE_UID: Final = 0x0020000D
TAG_SERIES_INSTANCE_UID: Final = 0x0020000E
TAG_STUDY_ID: Final = 0x00200010
TAG_ADMISSION_ID: Final = 0x00380010
TAG_ISSUER_OF_ADMISSION_ID_SEQUENCE: Final = 0x00380014
TAG_SCHEDULED_PROCEDURE_STEP_ID: Final = 0x00400009
TAG_REFERENCED_NON_IMAGE_COMPOSITE_SEQUENCE: Final = 0x00400220
TAG_PERFORMED_STATION_AE_TITLE: Final = 0x00400241
TAG_PERFORMED_STATION_NAME: Final = 0x00400242
TAG_PERFORMED_LOCATION: Final = 0x00400243
TAG_PPS_START_DATE: Final = 0x00400244
TAG_PPS_START_TIME: Final = 0x00400245
TAG_PPS_END_DATE: Final = 0x00400250
TAG_PPS_END_TIME: Final = 0x00400251
TAG_PPS_STATUS: Final = 0x00400252
TAG_PPS_ID: Final = 0x00400253
TAG_SCHEDULED_STEP_ATTRIBUTES_SEQUENCE: Final = 0x00400270
TAG_PERFORMED_SERIES_SEQUENCE: Final = 0x00400340


@dataclass(frozen=True, slots=True)
class Rule:
    """One attribute's requirement: Type 1 (a value) or only checked inside its items."""

    type1: bool = True
    items: Mapping[int, Rule] | None = None  # rules for each item of a sequence


def _rules(entries: dict[int, Rule]) -> Mapping[int, Rule]:
    return MappingProxyType(entries)


# >Referenced Image Sequence / >Referenced Non-Image Composite SOP Instance Sequence items:
# Referenced SOP Class and Instance UID are 1/1 (N-CREATE and N-SET).
_REFERENCE_ITEM: Final = _rules({
    TAG_REFERENCED_SOP_CLASS_UID: Rule(),
    TAG_REFERENCED_SOP_INSTANCE_UID: Rule(),
})
# Performed Series Sequence items: Protocol Name and Series Instance UID are 1/1; the
# reference sequences are Type 2 (their items, when sent, are checked).
_SERIES_ITEM: Final = _rules({
    TAG_PROTOCOL_NAME: Rule(),
    TAG_SERIES_INSTANCE_UID: Rule(),
    TAG_REFERENCED_IMAGE_SEQUENCE: Rule(type1=False, items=_REFERENCE_ITEM),
    TAG_REFERENCED_NON_IMAGE_COMPOSITE_SEQUENCE: Rule(type1=False, items=_REFERENCE_ITEM),
})
_PERFORMED_SERIES: Final = Rule(type1=False, items=_SERIES_ITEM)

# PS3.4 Table F.7.2-1, N-CREATE column, SCU Type 1.
CREATE_RULES: Final = _rules({
    TAG_SCHEDULED_STEP_ATTRIBUTES_SEQUENCE: Rule(items=_rules({TAG_STUDY_INSTANCE_UID: Rule()})),
    TAG_PPS_ID: Rule(),
    TAG_PERFORMED_STATION_AE_TITLE: Rule(),
    TAG_PPS_START_DATE: Rule(),
    TAG_PPS_START_TIME: Rule(),
    TAG_PPS_STATUS: Rule(),
    TAG_MODALITY: Rule(),
    TAG_PERFORMED_SERIES_SEQUENCE: _PERFORMED_SERIES,
})
# PS3.4 Table F.7.2-1, N-SET column: only the items of sequences sent are checked here.
SET_RULES: Final = _rules({TAG_PERFORMED_SERIES_SEQUENCE: _PERFORMED_SERIES})
# PS3.4 Table F.7.2-1, Final State column (and its note: the Performed Series Sequence holds
# at least one item when the step is COMPLETED or DISCONTINUED).
FINAL_RULES: Final = _rules({
    TAG_PPS_END_DATE: Rule(),
    TAG_PPS_END_TIME: Rule(),
    TAG_PERFORMED_SERIES_SEQUENCE: Rule(items=_SERIES_ITEM),
})
# PS3.4 Table F.7.2-1: "Not allowed" in N-SET (the patient, the scheduled steps, where and
# when the step started); the SOP Common identifiers are the instance's identity.
NOT_SETTABLE: Final = frozenset({
    TAG_SOP_CLASS_UID, TAG_SOP_INSTANCE_UID, TAG_SCHEDULED_STEP_ATTRIBUTES_SEQUENCE,
    TAG_PATIENT_NAME, TAG_PATIENT_ID, TAG_ISSUER_OF_PATIENT_ID,
    TAG_ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE, TAG_PATIENT_BIRTH_DATE, TAG_PATIENT_SEX,
    TAG_REFERENCED_PATIENT_SEQUENCE, TAG_ADMISSION_ID, TAG_ISSUER_OF_ADMISSION_ID_SEQUENCE,
    TAG_PPS_ID, TAG_PERFORMED_STATION_AE_TITLE, TAG_PERFORMED_STATION_NAME,
    TAG_PERFORMED_LOCATION, TAG_PPS_START_DATE, TAG_PPS_START_TIME, TAG_MODALITY,
    TAG_STUDY_ID,
})


@dataclass(frozen=True, slots=True)
class Violation:
    """A data set that breaks a rule: the status to answer and the tags it is about."""

    status: Status
    tags: tuple[int, ...]
    comment: str


def json_key(tag: int) -> str:
    """The DICOM JSON key of a tag (PS3.18 F.2.1.1)."""
    return f"{tag:08X}"


def _has_value(element: Mapping[str, Any] | None) -> bool:
    """Whether a JSON element has a non-empty value (PS3.18 F.2.2: no "Value" = empty)."""
    if not element:
        return False
    if "InlineBinary" in element or "BulkDataURI" in element:
        return True
    values = element.get("Value") or []
    return any(value not in (None, "", {}) for value in values)


def text_of(ds: Mapping[str, Any], tag: int) -> str:
    """The first value of an element as text ("" when absent or empty); PN alphabetic."""
    element = ds.get(json_key(tag)) or {}
    values = element.get("Value") or []
    if not values or values[0] is None:
        return ""
    value = values[0]
    if isinstance(value, dict):
        return str(value.get("Alphabetic", ""))
    return str(value)


def _walk(ds: Mapping[str, Any], rules: Mapping[int, Rule], *, only_present: bool
          ) -> Iterator[tuple[Status, int]]:
    for tag, rule in rules.items():
        element = ds.get(json_key(tag))
        if element is None:
            if rule.type1 and not only_present:
                yield Status.MISSING_ATTRIBUTE, tag
            continue
        if rule.type1 and not _has_value(element):
            yield Status.MISSING_ATTRIBUTE_VALUE, tag
            continue
        if rule.items is not None:
            for item in element.get("Value") or []:
                if isinstance(item, Mapping):
                    yield from _walk(item, rule.items, only_present=False)


def check(ds: Mapping[str, Any], rules: Mapping[int, Rule], *, only_present: bool = False,
          absent_status: Status = Status.MISSING_ATTRIBUTE) -> Violation | None:
    """The first kind of violation of `rules` in a DICOM JSON data set, with all its tags.

    `only_present`: top-level attributes that are absent are not checked (N-SET).
    `absent_status`: what an absent Type 1 attribute is (0120H; 0121H for the final state).
    """
    found: dict[Status, list[int]] = {}
    for status, tag in _walk(ds, rules, only_present=only_present):
        status = absent_status if status is Status.MISSING_ATTRIBUTE else status
        tags = found.setdefault(status, [])
        if tag not in tags:
            tags.append(tag)
    for status in (Status.MISSING_ATTRIBUTE, Status.MISSING_ATTRIBUTE_VALUE):
        if status in found:
            tags = tuple(found[status])
            what = "missing" if status is Status.MISSING_ATTRIBUTE else "without a value"
            listed = ", ".join(f"({tag >> 16:04X},{tag & 0xFFFF:04X})" for tag in tags)
            return Violation(status, tags, f"{what}: {listed}")
    return None
