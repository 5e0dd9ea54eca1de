"""C-MOVE / C-GET identifiers: which entities to retrieve, by their unique keys only.

PS3.4 C.4.2.2.1 / C.4.3.2.1 (identifier), C.2.2.1.2-3 (unique keys), C.6.1.1 / C.6.2.1
(levels of the Patient Root and Study Root models). Rules as implemented:

- Query/Retrieve Level (0008,0052) is required and must be a level of the model;
- the unique key of the retrieve level is required: one value at PATIENT level (no
  wildcard), one value or a list of UIDs at STUDY, SERIES and IMAGE level;
- unique keys of the levels above, when present and not empty, must hold one UID and
  narrow the selection (a list there is refused); Patient ID above the PATIENT level is
  ignored (SCUs send it with studies, often under another issuer, empty or "*");
- at PATIENT level, Issuer of Patient ID (0010,0021), when given one value, narrows the
  patient; the configured rule decides what a Patient ID under several issuers means;
- every other key is ignored (reported back for a log line);
- without `strict_hierarchy`, QueryRetrieveLevel PATIENT on the Study Root model (which
  has no such level, C.6.2.1.1) selects that patient's studies, as Orthanc 1.10 asks for a
  patient's move; the selection says it served a non-standard level.
Failures are 0xA900 (Identifier does not match SOP class) with an Error Comment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from pydicom.dataset import Dataset

from ..ports import Condition, FindQuery, MatchKind, QueryLevel
from ..proto.sop import (
    PATIENT_ROOT_QR_GET,
    PATIENT_ROOT_QR_MOVE,
    STUDY_ROOT_QR_GET,
    STUDY_ROOT_QR_MOVE,
)
from ..proto.status import Status
from ..proto.uid import is_valid_uid
from .identifier import (
    MODEL_LEVELS,
    TAG_QUERY_RETRIEVE_LEVEL,
    TAG_SPECIFIC_CHARACTER_SET,
    UNIQUE_KEYS,
    Model,
)
from .matching import IdentifierError, describe_tag, value_list

__all__ = [
    "RETRIEVE_MODELS",
    "TAG_ISSUER_OF_PATIENT_ID",
    "RetrieveSelection",
    "parse_retrieve_identifier",
    "patient_query",
]

TAG_ISSUER_OF_PATIENT_ID: Final = 0x00100021
_WILDCARDS: Final = frozenset("*?")  # PS3.4 C.2.2.2.4; no meaning in a retrieve

RETRIEVE_MODELS: Final[Mapping[str, Model]] = MappingProxyType({
    PATIENT_ROOT_QR_MOVE: Model.PATIENT_ROOT,
    PATIENT_ROOT_QR_GET: Model.PATIENT_ROOT,
    STUDY_ROOT_QR_MOVE: Model.STUDY_ROOT,
    STUDY_ROOT_QR_GET: Model.STUDY_ROOT,
})
_A900: Final = Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS


@dataclass(frozen=True, slots=True)
class RetrieveSelection:
    """A checked retrieve identifier: the entities to send, as an index query."""

    model: Model
    level: QueryLevel
    query: FindQuery  # conditions on unique keys only, at `level`
    ignored: tuple[int, ...]  # keys present but not used for the selection
    patient_id: str | None = None  # at PATIENT level: for the several-issuers rule
    issuer: str | None = None  # at PATIENT level, when the identifier names one
    nonstandard: bool = False  # a level the model lacks, served by leniency

    @property
    def entities(self) -> int:
        """How many entities the identifier names (the values of the level's unique key)."""
        return len(self.uids)

    @property
    def uids(self) -> tuple[str, ...]:
        """The values of the level's unique key: the entities the identifier names."""
        tag = UNIQUE_KEYS[self.level]
        return next((c.values for c in self.query.conditions if c.tag == tag), ())


def _values(ds: Dataset, tag: int) -> list[str] | None:
    """The element's values as text, None when absent; [] when present but empty."""
    if tag not in ds:
        return None
    try:
        value = ds[tag].value
    except Exception:
        raise IdentifierError(Status.UNABLE_TO_PROCESS,
                              f"cannot decode {describe_tag(tag)}", tag) from None
    if value is None or value == "" or value == b"":
        return []
    out = []
    for item in value_list(value):
        text = item.decode("ascii", "replace") if isinstance(item, bytes) else str(item)
        out.append(text.strip(" \0"))
    return [v for v in out if v] if any(out) else []


def _level(ds: Dataset, model: Model, levels: tuple[QueryLevel, ...]) -> QueryLevel:
    values = _values(ds, TAG_QUERY_RETRIEVE_LEVEL)
    if not values:
        raise IdentifierError(_A900, "QueryRetrieveLevel (0008,0052) is missing",
                              TAG_QUERY_RETRIEVE_LEVEL)
    text = values[0]
    if len(values) > 1 or text not in {lvl.value for lvl in levels}:
        raise IdentifierError(_A900, f"QueryRetrieveLevel {text[:16]!r} not in {model.value}",
                              TAG_QUERY_RETRIEVE_LEVEL)
    return QueryLevel(text)


def _uids(values: list[str], tag: int) -> tuple[str, ...]:
    for uid in values:
        if not is_valid_uid(uid):  # PS3.5 §9.1, the one grammar (proto/uid.py)
            raise IdentifierError(_A900, f"{describe_tag(tag)}: {uid[:24]!r} is not a UID", tag)
    return tuple(dict.fromkeys(values))  # a UID listed twice is one entity


def parse_retrieve_identifier(ds: Dataset, model: Model, *,
                              strict_hierarchy: bool = True) -> RetrieveSelection:
    """Check a C-MOVE/C-GET identifier and build the selection (PS3.4 C.4.2.2.1).

    Raises IdentifierError (0xA900) for a missing level or unique key, a list where one
    value is required, a wildcard or a value that is not a UID.
    """
    levels = MODEL_LEVELS[model]
    if not strict_hierarchy:  # leniency: every model accepts the Patient Root levels
        levels = MODEL_LEVELS[Model.PATIENT_ROOT]
    level = _level(ds, model, levels)
    conditions: list[Condition] = []
    used = {TAG_QUERY_RETRIEVE_LEVEL, TAG_SPECIFIC_CHARACTER_SET}
    patient_id: str | None = None
    issuer: str | None = None
    for upper in levels[: levels.index(level) + 1]:
        tag = UNIQUE_KEYS[upper]
        values = _values(ds, tag)
        at_level = upper is level
        if upper is QueryLevel.PATIENT and not at_level:
            continue  # Patient ID with a study or below: ignored (module docstring)
        used.add(tag)
        if not values:
            if at_level:
                raise IdentifierError(_A900, f"{describe_tag(tag)} is required at "
                                      f"{level.value} level", tag)
            continue
        if upper is QueryLevel.PATIENT:
            if len(values) > 1 or _WILDCARDS & set(values[0]):
                raise IdentifierError(_A900, "PatientID needs one value, no wildcard", tag)
            patient_id = values[0]
            conditions.append(Condition(tag, "LO", MatchKind.SINGLE, (patient_id,)))
            issuer_values = _values(ds, TAG_ISSUER_OF_PATIENT_ID)
            if issuer_values:
                if len(issuer_values) > 1 or _WILDCARDS & set(issuer_values[0]):
                    raise IdentifierError(_A900, "IssuerOfPatientID needs one value",
                                          TAG_ISSUER_OF_PATIENT_ID)
                issuer = issuer_values[0]
                used.add(TAG_ISSUER_OF_PATIENT_ID)
                conditions.append(Condition(TAG_ISSUER_OF_PATIENT_ID, "LO", MatchKind.SINGLE,
                                            (issuer,)))
            continue
        uids = _uids(values, tag)
        if len(uids) > 1 and not at_level:
            # PS3.4 C.4.2.2.1: the levels above carry a single value.
            raise IdentifierError(_A900, f"{describe_tag(tag)} needs one value above "
                                  f"{level.value} level", tag)
        kind = MatchKind.LIST if len(uids) > 1 else MatchKind.SINGLE
        conditions.append(Condition(tag, "UI", kind, uids))
    ignored = tuple(sorted(t for t in map(int, ds.keys())
                           if t not in used and t & 0xFFFF != 0))
    return RetrieveSelection(model, level, FindQuery(level, tuple(conditions)), ignored,
                             patient_id, issuer, level not in MODEL_LEVELS[model])


def patient_query(selection: RetrieveSelection) -> FindQuery:
    """The patients a PATIENT-level selection names (for the several-issuers rule)."""
    return FindQuery(QueryLevel.PATIENT, selection.query.conditions)
