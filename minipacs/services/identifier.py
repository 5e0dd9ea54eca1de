"""C-FIND identifiers: decode, check against the information model, turn keys into conditions.

PS3.4 C.2.2 (matching rules), C.4.1.3.1 (hierarchical search) and C.4.1.3.2 (relational),
C.6.1 / C.6.2 (Patient Root and Study Root models). Text is decoded to Unicode with the
identifier's Specific Character Set before any condition is built (PS3.4 C.2.2.2).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from ..ports import Condition, FindQuery, MatchKind, QueryLevel
from ..proto.sop import PATIENT_ROOT_QR_FIND, STUDY_ROOT_QR_FIND
from ..proto.status import Status
from .dataset_codec import InflateError, plain_bytes, read_plain
from .matching import (
    IdentifierError,
    RangeForm,
    combine_date_time,
    describe_tag,
    key_condition,
    value_list,
)

__all__ = [
    "MAX_IDENTIFIER_BYTES",
    "IdentifierError",
    "Model",
    "ParsedQuery",
    "ReturnKey",
    "decode_identifier",
    "model_of",
    "parse_identifier",
]

# Bounds on what a peer's identifier may cost us.
MAX_IDENTIFIER_BYTES: Final = 1 << 20  # the whole data set, inflated
UNDEFINED_LENGTH: Final = 0xFFFFFFFF  # PS3.5 §7.1.1

# Tags with a role in every identifier (PS3.4 C.4.1.1.3, C.6.1.1.1).
TAG_SPECIFIC_CHARACTER_SET: Final = 0x00080005
TAG_QUERY_RETRIEVE_LEVEL: Final = 0x00080052
TAG_QUERY_RETRIEVE_VIEW: Final = 0x00080053
TAG_RETRIEVE_AE_TITLE: Final = 0x00080054
TAG_INSTANCE_AVAILABILITY: Final = 0x00080056
TAG_TIMEZONE_OFFSET_FROM_UTC: Final = 0x00080201
TAG_STORAGE_MEDIA_FILE_SET_ID: Final = 0x00880130
TAG_STORAGE_MEDIA_FILE_SET_UID: Final = 0x00880140
TAG_PATIENT_ID: Final = 0x00100020
TAG_STUDY_INSTANCE_UID: Final = 0x0020000D
TAG_SERIES_INSTANCE_UID: Final = 0x0020000E
TAG_SOP_INSTANCE_UID: Final = 0x00080018
# Keys that describe the query or the answer and are never matched (PS3.4 C.4.1.1.3.1).
NEVER_MATCHED: Final = frozenset({
    TAG_QUERY_RETRIEVE_VIEW, TAG_RETRIEVE_AE_TITLE, TAG_INSTANCE_AVAILABILITY,
    TAG_TIMEZONE_OFFSET_FROM_UTC, TAG_STORAGE_MEDIA_FILE_SET_ID, TAG_STORAGE_MEDIA_FILE_SET_UID,
})

class Model(enum.StrEnum):
    """The two query/retrieve information models (PS3.4 C.6.1, C.6.2)."""

    PATIENT_ROOT = "Patient Root"
    STUDY_ROOT = "Study Root"


_P, _ST, _SE, _IM = QueryLevel.PATIENT, QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE

MODELS: Final[Mapping[str, Model]] = MappingProxyType({
    PATIENT_ROOT_QR_FIND: Model.PATIENT_ROOT,
    STUDY_ROOT_QR_FIND: Model.STUDY_ROOT,
})
# PS3.4 C.6.1.1.1, C.6.2.1.1: the levels of each model, top down (Study Root has no PATIENT).
MODEL_LEVELS: Final[Mapping[Model, tuple[QueryLevel, ...]]] = MappingProxyType({
    Model.PATIENT_ROOT: (_P, _ST, _SE, _IM),
    Model.STUDY_ROOT: (_ST, _SE, _IM),
})
_DEPTH: Final = {_P: 0, _ST: 1, _SE: 2, _IM: 3}
# PS3.4 C.6.1.1.2-C.6.1.1.5: the unique key of each level.
UNIQUE_KEYS: Final[Mapping[QueryLevel, int]] = MappingProxyType({
    _P: TAG_PATIENT_ID, _ST: TAG_STUDY_INSTANCE_UID, _SE: TAG_SERIES_INSTANCE_UID,
    _IM: TAG_SOP_INSTANCE_UID,
})

# The keys PS3.4 Tables C.6-1 to C.6-4 place at each level of the Patient Root model; in Study
# Root the patient keys belong to the study level (C.6.2.1.2). Other attributes are "all other
# attributes at that level" whose level we do not guess: they are never refused as "below".
# fmt: off
KEY_LEVELS: Final[Mapping[int, QueryLevel]] = MappingProxyType({
    **dict.fromkeys((
        0x00100010, 0x00100020, 0x00100021, 0x00100024, 0x00081120, 0x00100030, 0x00100032,
        0x00100040, 0x00101000, 0x00101001, 0x00101002, 0x00102160, 0x00104000, 0x00201200,
        0x00201202, 0x00201204,
    ), _P),
    **dict.fromkeys((
        0x00080020, 0x00080030, 0x00080050, 0x00080051, 0x00200010, 0x0020000D, 0x00080061,
        0x00080062, 0x00080063, 0x00080090, 0x00081030, 0x00081032, 0x00081048, 0x00081060,
        0x00081080, 0x00081110, 0x00101010, 0x00101020, 0x00101030, 0x00102180, 0x001021B0,
        0x00201070, 0x00201206, 0x00201208,
    ), _ST),
    **dict.fromkeys((
        0x00080060, 0x00200011, 0x0020000E, 0x00201209, 0x00080021, 0x00080031, 0x0008103E,
        0x00180015, 0x00400244, 0x00400245, 0x00400275, 0x00081050, 0x00081070, 0x00200060,
    ), _SE),
    **dict.fromkeys((
        0x00200013, 0x00080018, 0x00080016, 0x00080023, 0x00080033, 0x00083001, 0x0008001A,
        0x0040A043, 0x0040A504, 0x00400512, 0x00400560,
    ), _IM),
})
# fmt: on
# PS3.4 C.2.2.2.5.4: the date and time pairs that combined date-time matching joins.
DATE_TIME_PAIRS: Final[Mapping[int, int]] = MappingProxyType({
    0x00080020: 0x00080030,  # Study Date / Time
    0x00080021: 0x00080031,  # Series Date / Time
    0x00080022: 0x00080032,  # Acquisition Date / Time
    0x00080023: 0x00080033,  # Content Date / Time
    0x00100030: 0x00100032,  # Patient's Birth Date / Time
    0x00400244: 0x00400245,  # Performed Procedure Step Start Date / Time
})


@dataclass(frozen=True, slots=True)
class ReturnKey:
    """A key to return: its tag, the VR to use when empty, and for a sequence its item keys."""

    tag: int
    vr: str
    items: tuple[ReturnKey, ...] | None = None  # None: the whole sequence


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """A checked identifier: what to ask the index, what to answer, in which character set."""

    model: Model
    query: FindQuery
    return_keys: tuple[ReturnKey, ...]
    unsupported: tuple[int, ...]  # keys not matched or not returned: pending status 0xFF01
    charset: tuple[str, ...]  # the identifier's Specific Character Set terms ((), default)


@dataclass(slots=True)
class _Parser:
    model: Model
    level: QueryLevel
    encodings: list[str]
    matchable: Callable[[QueryLevel], frozenset[int]]
    relational: bool
    strict: bool
    conditions: dict[int, Condition] = field(default_factory=dict)
    forms: dict[int, RangeForm] = field(default_factory=dict)
    unsupported: list[int] = field(default_factory=list)


def model_of(sop_class: str) -> Model:
    """The information model of a FIND SOP class (PS3.4 C.6.1.2, C.6.2.2)."""
    return MODELS[sop_class]


def decode_identifier(data: bytes, transfer_syntax: str) -> Dataset:
    """The identifier as a pydicom data set (PS3.7 §9.1.2.1); raises IdentifierError (C000)."""
    try:  # PS3.5 A.5: a deflated one is inflated within a bound (a bomb stops here)
        data = plain_bytes(data, transfer_syntax, limit=MAX_IDENTIFIER_BYTES)
    except InflateError as exc:
        raise IdentifierError(Status.UNABLE_TO_PROCESS, f"identifier {exc}") from None
    except ValueError:
        raise IdentifierError(Status.UNABLE_TO_PROCESS, "unknown transfer syntax") from None
    if not data:
        raise IdentifierError(Status.UNABLE_TO_PROCESS, "empty identifier")
    try:
        ds = read_plain(data, transfer_syntax)
        _check_parsed(ds)
    except IdentifierError:
        raise
    except Exception as exc:  # a peer's bytes can break pydicom in any way
        raise IdentifierError(Status.UNABLE_TO_PROCESS,
                              f"cannot decode identifier: {type(exc).__name__}") from None
    return ds


def _check_parsed(ds: Dataset) -> None:
    """Refuse what pydicom read quietly but would fail on later, in a parser.

    A value shorter than its declared length is truncated. Sequences, and elements whose
    value pydicom converts on access (read with none), are converted here as the parsers
    would, items included, so that a bad one (an unknown VR) is C000 now rather than an
    exception in a parser. Other elements stay raw: the parsers decode their bytes with the
    identifier's character set and their own checks.
    """
    if not len(ds):
        raise IdentifierError(Status.UNABLE_TO_PROCESS, "identifier holds no element")
    pending = [ds]  # bounded: every item was read from at most MAX_IDENTIFIER_BYTES
    while pending:
        item = pending.pop()
        for tag in list(item.keys()):
            raw = item.get_item(tag, keep_deferred=True)
            if isinstance(raw, RawDataElement):
                if raw.length != UNDEFINED_LENGTH and len(raw.value or b"") < raw.length:
                    raise IdentifierError(Status.UNABLE_TO_PROCESS, "identifier is truncated")
                if raw.value is not None and _vr_of(raw, tag) != "SQ":
                    continue
            elem = item[tag]
            if elem.VR == "SQ":
                pending.extend(elem.value or ())


def parse_identifier(ds: Dataset, model: Model, *,
                     matchable: Callable[[QueryLevel], frozenset[int]],
                     relational: bool = False, combined_datetime: bool = False,
                     strict_hierarchy: bool = True) -> ParsedQuery:
    """Check an identifier and build the index query (PS3.4 C.4.1.3, C.2.2.2).

    Without `strict_hierarchy` (workstation leniency, documented), the unique keys above the
    level may be missing or use any matching, as in a relational query; keys below the
    level still need relational queries negotiated.
    Raises IdentifierError: 0xA900 for a level or key the model does not allow, a value
    that is not valid for its VR, or one too long; 0xC000 when text cannot be decoded.
    """
    charset = _charset_terms(ds)
    encodings = _encodings(charset)
    level = _level(ds, model)
    parser = _Parser(model, level, encodings, matchable, relational, strict_hierarchy)
    return_keys: list[ReturnKey] = []
    for tag in sorted(map(int, ds.keys())):
        if tag in (TAG_SPECIFIC_CHARACTER_SET, TAG_QUERY_RETRIEVE_LEVEL) or tag & 0xFFFF == 0:
            continue  # group lengths are recomputed; the two above are answered by us
        if tag >> 16 in (0x0000, 0x0002) or tag >> 16 & 1 or not dictionary_has_tag(tag):
            parser.unsupported.append(tag)  # command, meta, private or unknown: omitted
            continue
        key = _key(parser, ds, tag)
        if key is not None:
            return_keys.append(key)
    _check_unique_keys(parser)
    if combined_datetime:
        _combine_date_time(parser)
    requested = {key.tag for key in return_keys}
    levels = MODEL_LEVELS[model]
    for upper in levels[: levels.index(level) + 1]:
        tag = UNIQUE_KEYS[upper]
        if tag not in requested:  # PS3.4 C.4.1.1.3.2: the unique keys are always answered
            return_keys.append(ReturnKey(tag, _dictionary_vr(tag)))
    return ParsedQuery(
        model=model,
        query=FindQuery(level, tuple(parser.conditions[t] for t in sorted(parser.conditions))),
        return_keys=tuple(sorted(return_keys, key=lambda k: k.tag)),
        unsupported=tuple(parser.unsupported),
        charset=charset,
    )


def _encodings(charset: tuple[str, ...]) -> list[str]:
    """Python codecs of Specific Character Set terms (the default repertoire for ())."""
    try:
        return convert_encodings(list(charset) or None)
    except Exception:  # an unknown term: pydicom falls back to the default repertoire
        return convert_encodings(None)


def _charset_terms(ds: Dataset) -> tuple[str, ...]:
    elem = ds.get_item(TAG_SPECIFIC_CHARACTER_SET)
    if elem is None or elem.value is None:
        return ()
    value = elem.value
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace")
        terms = [term.strip(" \0") for term in text.split("\\")]
    else:
        terms = [str(v).strip() for v in value_list(value)]
    # PS3.3 C.12.1.1.2: an empty first value is the default repertoire (ISO 2022 only).
    return tuple(terms) if any(terms) else ()


def _level(ds: Dataset, model: Model) -> QueryLevel:
    """PS3.4 C.6.1.1.1 / C.6.2.1.1: the level is required, one of the model's."""
    elem = ds.get_item(TAG_QUERY_RETRIEVE_LEVEL)
    raw = elem.value if elem is not None else None
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    text = str(raw or "").strip(" \0")
    if not text:
        raise IdentifierError(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                              "QueryRetrieveLevel (0008,0052) is missing",
                              TAG_QUERY_RETRIEVE_LEVEL)
    levels = MODEL_LEVELS[model]
    if text not in {lvl.value for lvl in levels}:
        raise IdentifierError(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                              f"QueryRetrieveLevel {text[:16]!r} not in {model.value}",
                              TAG_QUERY_RETRIEVE_LEVEL)
    return QueryLevel(text)


def _key_level(tag: int, model: Model) -> QueryLevel | None:
    level = KEY_LEVELS.get(tag)
    if level is _P and model is Model.STUDY_ROOT:
        return _ST  # PS3.4 C.6.2.1.2: patient attributes are study keys in Study Root
    return level


def _dictionary_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        return "UN"


def _vr_of(elem: RawDataElement | DataElement, tag: int) -> str:
    """The element's VR; implicit VR, UN and ambiguous ones from the dictionary (PS3.5 §6.2.2)."""
    vr = str(elem.VR) if elem.VR is not None else "UN"
    if vr == "UN" and dictionary_has_tag(tag):
        vr = _dictionary_vr(tag)
    return vr.split(" or ")[0]


def _key(parser: _Parser, ds: Dataset, tag: int) -> ReturnKey | None:
    elem = ds.get_item(tag)
    assert elem is not None
    vr = _vr_of(elem, tag)
    key_level = _key_level(tag, parser.model)
    below = key_level is not None and _DEPTH[key_level] > _DEPTH[parser.level]
    if below and not parser.relational:
        # PS3.4 C.4.1.3.1.1: hierarchical queries carry no keys below the query level.
        raise IdentifierError(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                              f"{describe_tag(tag)} is below {parser.level.value} level", tag)
    if vr == "SQ":
        return _sequence_key(parser, ds, tag, key_level)
    if tag in NEVER_MATCHED:
        return ReturnKey(tag, vr)
    condition = key_condition(tag, vr, elem, parser.encodings, parser.forms)
    if condition is not None:
        deepest = key_level if below and key_level is not None else parser.level
        if tag in parser.matchable(deepest):
            parser.conditions[tag] = condition
        else:  # return-only: the answer says so with 0xFF01 (PS3.4 C.4.1.1.4)
            parser.unsupported.append(tag)
    return ReturnKey(tag, vr)


def _sequence_key(parser: _Parser, ds: Dataset, tag: int,
                  key_level: QueryLevel | None) -> ReturnKey:
    """PS3.4 C.2.2.2.6: one item; its keys match item by item; no item key = universal."""
    item = _only_item(ds, tag)
    if item is None:
        return ReturnKey(tag, "SQ")
    item_keys, conditions = _item_keys(item, parser.encodings)
    if conditions:
        level = key_level if key_level is not None else parser.level
        if _DEPTH[level] < _DEPTH[parser.level]:
            level = parser.level
        if tag in parser.matchable(level):
            parser.conditions[tag] = Condition(tag, "SQ", MatchKind.SEQUENCE,
                                               items=tuple(conditions))
        else:
            parser.unsupported.append(tag)
    return ReturnKey(tag, "SQ", tuple(item_keys) or None)


def _only_item(ds: Dataset, tag: int) -> Dataset | None:
    """The single item a sequence key may hold in an identifier (PS3.4 C.2.2.2.6), if any."""
    try:
        items = list(ds[tag].value or ())
    except Exception:
        raise IdentifierError(Status.UNABLE_TO_PROCESS,
                              f"cannot decode {describe_tag(tag)}", tag) from None
    if len(items) > 1:
        raise IdentifierError(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                              f"{describe_tag(tag)} has more than one item", tag)
    return items[0] if items else None


def _item_keys(item: Dataset, encodings: list[str]
               ) -> tuple[list[ReturnKey], list[Condition]]:
    keys: list[ReturnKey] = []
    conditions: list[Condition] = []
    for tag in sorted(map(int, item.keys())):
        if tag & 0xFFFF == 0 or tag == TAG_SPECIFIC_CHARACTER_SET:
            continue
        elem = item.get_item(tag)
        assert elem is not None
        vr = _vr_of(elem, tag)
        if vr == "SQ":
            nested = _only_item(item, tag)
            sub_keys, sub_conditions = _item_keys(nested, encodings) if nested else ([], [])
            keys.append(ReturnKey(tag, "SQ", tuple(sub_keys) or None))
            if sub_conditions:
                conditions.append(Condition(tag, "SQ", MatchKind.SEQUENCE,
                                            items=tuple(sub_conditions)))
            continue
        condition = key_condition(tag, vr, elem, encodings, {})
        keys.append(ReturnKey(tag, vr))
        if condition is not None:
            conditions.append(condition)
    return keys, conditions


def _check_unique_keys(parser: _Parser) -> None:
    """PS3.4 C.4.1.3.1.1: each level above carries its unique key, one value, no wildcard.

    With relational queries (C.4.1.3.2), or when the hierarchy is not enforced, they may be
    missing or carry any matching.
    """
    if parser.relational or not parser.strict:
        return
    levels = MODEL_LEVELS[parser.model]
    for upper in levels[: levels.index(parser.level)]:
        tag = UNIQUE_KEYS[upper]
        condition = parser.conditions.get(tag)
        if condition is None or condition.kind is not MatchKind.SINGLE:
            raise IdentifierError(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                                  f"{describe_tag(tag)} needs one value at "
                                  f"{parser.level.value} level", tag)


def _combine_date_time(parser: _Parser) -> None:
    """PS3.4 C.2.2.2.5.4: a date and a time range of the same form match as one DT range."""
    for date_tag, time_tag in DATE_TIME_PAIRS.items():
        combine_date_time(parser.conditions, parser.forms, date_tag, time_tag, same_form=True)
