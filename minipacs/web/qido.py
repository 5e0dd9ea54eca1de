"""QIDO-RS (PS3.18 §10.6): query parameters → the C-FIND identifier → DICOM JSON answers.

A search is turned into the identifier a C-FIND would carry (a pydicom data set at the
resource's level) and checked by the same code (`services.identifier.parse_identifier`,
Study Root, relational), so wildcards, case-insensitive names, ranges, UID and value lists
match exactly as in C-FIND. The index's answers are already DICOM JSON (PS3.18 F.2); this
module only picks the attributes to return (PS3.18 Table 10.6.3-3 to -5, `includefield`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydicom.datadict import dictionary_has_tag, dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from ..ports import JsonDataset, QueryLevel
from ..services.identifier import Model, ParsedQuery, parse_identifier
from ..services.matching import IdentifierError

__all__ = [
    "QidoError",
    "QidoSearch",
    "parse_search",
    "select_attributes",
]

TAG_SPECIFIC_CHARACTER_SET: Final = 0x00080005
TAG_QUERY_RETRIEVE_LEVEL: Final = 0x00080052
UTF8: Final = "ISO_IR 192"
TAG_INSTANCE_AVAILABILITY: Final = 0x00080056
TAG_RETRIEVE_URL: Final = 0x00081190
TAG_STUDY_INSTANCE_UID: Final = 0x0020000D
TAG_SERIES_INSTANCE_UID: Final = 0x0020000E
TAG_SOP_INSTANCE_UID: Final = 0x00080018
INSTANCE_ONLINE: Final = "ONLINE"
MAX_VALUE_LENGTH: Final = 4096  # one query value, in characters: more is a 400
MAX_LIMIT: Final = 1_000_000

# PS3.18 Table 10.6.3-3 (study), -4 (series), -5 (instance): returned by default, plus the
# fields OHIF's study and series lists read (StudyDescription, SeriesDate/Time).
# fmt: off
STUDY_DEFAULTS: Final = (
    0x00080020, 0x00080030, 0x00080050, 0x00080056, 0x00080061, 0x00080090, 0x00080201,
    0x00081030, 0x00100010, 0x00100020, 0x00100030, 0x00100040, 0x0020000D, 0x00200010,
    0x00201206, 0x00201208,
)
SERIES_DEFAULTS: Final = (
    0x00080021, 0x00080031, 0x00080060, 0x00080201, 0x0008103E, 0x0020000E, 0x00200011,
    0x00201209, 0x00400244, 0x00400245, 0x00400275,
)
INSTANCE_DEFAULTS: Final = (
    0x00080016, 0x00080018, 0x00080056, 0x00080201, 0x00200013, 0x00280008, 0x00280010,
    0x00280011, 0x00280100,
)
# fmt: on
_LEVEL_DEFAULTS: Final = {
    QueryLevel.STUDY: STUDY_DEFAULTS,
    QueryLevel.SERIES: SERIES_DEFAULTS,
    QueryLevel.IMAGE: INSTANCE_DEFAULTS,
}
_ABOVE: Final = {
    QueryLevel.STUDY: (),
    QueryLevel.SERIES: (QueryLevel.STUDY,),
    QueryLevel.IMAGE: (QueryLevel.STUDY, QueryLevel.SERIES),
}
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
# VRs whose values may hold a comma: a comma is never read as a value separator there.
_NO_COMMA_LISTS: Final = frozenset({"PN", "ST", "LT", "UT", "UR", "UC"})
_BOOLEAN: Final = {"true": True, "false": False}


class QidoError(Exception):
    """A search we refuse with 400 Bad Request; str() says why in one line."""


@dataclass(frozen=True, slots=True)
class QidoSearch:
    """A checked QIDO-RS request: the C-FIND query, what to return, and the paging."""

    parsed: ParsedQuery
    level: QueryLevel
    return_tags: frozenset[int] | None  # None: includefield=all
    limit: int | None
    offset: int
    fuzzy: bool


def _tag_of(attribute: str) -> int:
    """A keyword or an 8-digit hex tag (PS3.18 §8.3.4.1 attributeID)."""
    if _HEX_TAG.fullmatch(attribute):
        tag = int(attribute, 16)
    else:
        found = tag_for_keyword(attribute)
        if found is None:
            raise QidoError(f"unknown attribute {attribute[:64]!r}")
        tag = int(found)
    if not dictionary_has_tag(tag) and not tag >> 16 & 1:
        raise QidoError(f"unknown attribute {attribute[:64]!r}")
    return tag


def _vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "UN"  # a private attribute: the identifier parser leaves it out


def _element(tag: int, value: str | None) -> RawDataElement:
    """The key as an identifier carries it: raw UTF-8 bytes (the identifier says ISO_IR 192),
    decoded and checked by C-FIND's own code."""
    vr = _vr(tag)
    if value is not None and vr not in _NO_COMMA_LISTS:
        value = value.replace(",", "\\")  # PS3.18 §8.3.4.1: comma-separated value lists
    raw = value.encode("utf-8") if value else b""
    return RawDataElement(BaseTag(tag), vr, len(raw), raw, 0, False, True)


def _put(ds: Dataset, path: list[int], value: str | None) -> None:
    """Set `path` (a tag, or a sequence's tag then an item's) in the identifier."""
    tag = path[0]
    if len(path) == 1:
        if tag not in ds or value is not None:
            ds[tag] = _element(tag, value)
        return
    if _vr(tag) != "SQ":
        raise QidoError(f"{tag:08X} is not a sequence")
    if tag not in ds or not ds[tag].value:
        ds.add(DataElement(tag, "SQ", Sequence([Dataset()])))
    _put(ds[tag].value[0], path[1:], value)


def _number(name: str, text: str, high: int) -> int:
    if not text.isdigit() or int(text) > high:
        raise QidoError(f"{name} must be an integer from 0 to {high}")
    return int(text)


def parse_search(level: QueryLevel, path: Mapping[int, str],
                 params: Iterable[tuple[str, str]], *, matchable: Any) -> QidoSearch:
    """The C-FIND query of a search at `level`, the path's UIDs fixed (PS3.18 §10.6.1).

    Raises QidoError (400) for an unknown attribute, a bad parameter or a value C-FIND
    matching refuses.
    """
    ds = Dataset()
    ds.add(DataElement(TAG_SPECIFIC_CHARACTER_SET, "CS", UTF8))  # URLs carry UTF-8 text
    ds.add(DataElement(TAG_QUERY_RETRIEVE_LEVEL, "CS", level.value))
    includes: set[int] = set()
    include_all = False
    limit: int | None = None
    offset = 0
    fuzzy = False
    matched: list[tuple[list[int], str]] = []
    for name, value in params:
        if name == "limit":
            limit = _number(name, value, MAX_LIMIT)
        elif name == "offset":
            offset = _number(name, value, MAX_LIMIT)
        elif name == "fuzzymatching":
            if value.lower() not in _BOOLEAN:
                raise QidoError("fuzzymatching must be true or false")
            fuzzy = _BOOLEAN[value.lower()]
        elif name == "includefield":
            for field in filter(None, (part.strip() for part in value.split(","))):
                if field == "all":
                    include_all = True
                else:
                    includes.add(_tag_of(field.split(".")[0]))
        else:
            if len(value) > MAX_VALUE_LENGTH:
                raise QidoError(f"the value of {name[:64]} is too long")
            matched.append(([_tag_of(part) for part in name.split(".")], value))
    for tags, value in matched:
        _put(ds, tags, value)
    for tag, uid in path.items():  # the resource's UIDs win over the same key in the query
        ds[tag] = _element(tag, uid)
    defaults = {tag for lvl in (*_ABOVE[level], level) for tag in _LEVEL_DEFAULTS[lvl]
                if lvl is level or not _in_path(lvl, path)}
    for tag in (defaults | includes) - set(map(int, ds.keys())):
        _put(ds, [tag], None)
    try:
        parsed = parse_identifier(ds, Model.STUDY_ROOT, matchable=matchable, relational=True)
    except IdentifierError as exc:
        raise QidoError(exc.comment) from None
    returned = None if include_all else frozenset(
        {key.tag for key in parsed.return_keys} | {TAG_RETRIEVE_URL})
    return QidoSearch(parsed, level, returned, limit, offset, fuzzy)


def _in_path(level: QueryLevel, path: Mapping[int, str]) -> bool:
    unique = {QueryLevel.STUDY: TAG_STUDY_INSTANCE_UID, QueryLevel.SERIES: TAG_SERIES_INSTANCE_UID}
    return unique.get(level) in path


def select_attributes(answer: JsonDataset, search: QidoSearch, retrieve_url: str
                      ) -> dict[str, Any]:
    """One answer of the response (PS3.18 §10.6.3.3): the attributes asked for, present or
    not (a requested attribute the entity lacks is returned empty), and its RetrieveURL."""
    out: dict[str, Any] = {}
    if search.return_tags is None:
        out.update(answer)
    else:
        for tag in search.return_tags:
            key = f"{tag:08X}"
            value = answer.get(key)
            out[key] = value if value is not None else {"vr": _vr(tag)}
    availability = f"{TAG_INSTANCE_AVAILABILITY:08X}"
    if availability in out and "Value" not in out[availability]:
        out[availability] = {"vr": "CS", "Value": [INSTANCE_ONLINE]}
    out[f"{TAG_RETRIEVE_URL:08X}"] = {"vr": "UR", "Value": [retrieve_url]}
    return dict(sorted(out.items()))
