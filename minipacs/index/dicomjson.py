"""DICOM JSON (PS3.18 F.2) of a parsed data set, for the index: bulk left out, values as text.

pydicom reads the data set (`extract.py`); this turns its raw elements into the JSON model.
pydicom's own conversion (`DataElement.to_json_dict`) costs ~14 µs per element, mostly in
value objects and validation the index has no use for: ~80 % of parsing an instance. So the
common VRs are converted here straight from the raw bytes by a small table that reproduces
pydicom 3's result exactly (DESIGN principle 8: measured, ~10x faster on a CT header; the
test compares both on every VR and edge case); anything else — sequences' items aside —
goes through pydicom: AT, binary VRs, UN, ambiguous VRs, LUT descriptors, values of a
wrong length, text that is not plain ASCII (its character set must decode it) and any
number or date the table does not parse exactly as pydicom would.
"""

from __future__ import annotations

import logging
import math
import re
import struct
from collections.abc import Callable
from typing import Any, Final

from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

__all__ = ["BULK_VRS", "dataset_json"]

log = logging.getLogger("minipacs.index")

TAG_SPECIFIC_CHARACTER_SET: Final = 0x00080005
GROUP_FILE_META: Final = 0x0002
# PS3.18 F.2.6: the VRs whose value may be sent as a BulkDataURI instead of inline.
BULK_VRS: Final = frozenset({
    "DS", "FL", "FD", "IS", "LT", "OB", "OD", "OF", "OL", "OV", "OW",
    "SL", "SS", "ST", "SV", "UC", "UL", "UN", "US", "UT", "UV",
})
_BULK_MARK: Final = "minipacs:bulk"
# PS3.3 C.11.1.1.1: pydicom rewrites the first value of these (US read as SS); not ours.
_LUT_DESCRIPTORS: Final = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})
_ESC: Final = b"\x1b"  # ISO 2022 escape: the character set switches inside the value
_IS: Final = re.compile(r" *[+-]?[0-9]+ *")
_DS: Final = re.compile(r" *[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)? *")

Values = list[Any] | None  # None: leave the element to pydicom


def _split(text: str) -> Values:
    """AS, CS and (without datetime conversion) DA, DT, TM: PS3.5 §6.2, pydicom's rules."""
    return text.rstrip(" \x00").split("\\")


def _ae(text: str) -> Values:
    return [part.strip() for part in text.split("\\")]  # leading spaces insignificant too


def _ui(text: str) -> Values:
    return [part.strip() for part in text.rstrip("\x00 ").split("\\")]


def _ur(text: str) -> Values:
    return [text.rstrip()]  # VM 1: a backslash is part of the URI


def _text(text: str) -> Values:
    """SH, LO, UC: split, trailing spaces and NULs dropped from each value."""
    return [part.rstrip("\x00 ") for part in text.split("\\")]


def _single(text: str) -> Values:
    """ST, LT, UT: VM 1, a backslash is text."""
    return [text.rstrip("\x00 ")]


def _pn(text: str) -> Values:
    """PN: one object per value, groups Alphabetic=Ideographic=Phonetic (PS3.18 F.2.2)."""
    names = []
    for value in text.rstrip("\x00 ").split("\\"):
        groups = value.split("=")
        while groups and not groups[-1]:
            groups.pop()
        if not groups:
            return None  # pydicom fails on an empty name among several; let it
        name = {"Alphabetic": groups[0]}
        if len(groups) > 1:
            name["Ideographic"] = groups[1]
        if len(groups) > 2:
            name["Phonetic"] = groups[2]
        names.append(name)
    return names


def _is(text: str) -> Values:
    parts = text.rstrip(" \x00").split("\\")
    if not all(_IS.fullmatch(part) for part in parts):
        return None
    return [int(part) for part in parts]


def _ds(text: str) -> Values:
    parts = text.strip().rstrip(" \x00").split("\\")
    if not all(_DS.fullmatch(part) for part in parts):
        return None
    numbers = [float(part) for part in parts]
    return numbers if all(math.isfinite(n) for n in numbers) else None


# VR → (converter of the decoded text, needs the character set when not plain ASCII).
_TEXT: Final[dict[str, tuple[Callable[[str], Values], bool]]] = {
    "AE": (_ae, False), "AS": (_split, False), "CS": (_split, False),
    "DA": (_split, False), "DT": (_split, False), "TM": (_split, False),
    "UI": (_ui, False), "UR": (_ur, False), "IS": (_is, False), "DS": (_ds, False),
    "SH": (_text, True), "LO": (_text, True), "UC": (_text, True),
    "ST": (_single, True), "LT": (_single, True), "UT": (_single, True), "PN": (_pn, True),
}
_DATES: Final = frozenset({"DA", "DT", "TM"})
# Binary numbers: struct format per value (PS3.5 Table 6.2-1).
_NUMBERS: Final = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d",
                   "SV": "q", "UV": "Q"}
_SIZES: Final = {vr: struct.calcsize(f"<{fmt}") for vr, fmt in _NUMBERS.items()}


def _table_json(raw: RawDataElement, vr: str) -> dict[str, Any] | None:
    """The element's JSON from its raw bytes, or None when pydicom must convert it."""
    value = raw.value
    if value is None or int(raw.tag) in _LUT_DESCRIPTORS:
        return None
    if not value:
        return {"vr": vr}
    if vr in _NUMBERS:
        size = _SIZES[vr]
        if len(value) % size:
            return None  # pydicom refuses it, or calls it UN: its answer, not ours
        order = "<" if raw.is_little_endian else ">"
        return {"vr": vr, "Value": list(
            struct.unpack(f"{order}{len(value) // size}{_NUMBERS[vr]}", value))}
    converter, charset_bound = _TEXT[vr]
    if charset_bound and (not value.isascii() or _ESC in value):
        return None  # Specific Character Set (0008,0005) decoding is pydicom's (PS3.5 §6.1)
    values = converter(value.decode("latin-1"))  # pydicom's default for other VRs: ISO 8859-1
    if values is None:
        return None
    if len(values) == 1 and values[0] in ("", None):
        return {"vr": vr}  # VM 0: no "Value" (PS3.18 F.2.3)
    return {"vr": vr, "Value": values}


def _table_vrs() -> frozenset[str]:
    """The VRs the table converts as pydicom would with its present settings."""
    vrs = set(_TEXT) | set(_NUMBERS)
    if config.datetime_conversion:
        vrs -= _DATES
    if config.use_DS_numpy or config.use_DS_decimal:
        vrs.discard("DS")
    if config.use_IS_numpy:
        vrs.discard("IS")
    if config.data_element_callback is not None:
        vrs.clear()
    return frozenset(vrs)


def _vr_of(elem: RawDataElement | DataElement) -> str:
    if elem.VR is not None:
        return str(elem.VR)
    try:
        return dictionary_VR(elem.tag)
    except KeyError:
        return "UN"  # an unknown tag in Implicit VR (PS3.5 §6.2.2)


def _mark_bulk(elem: DataElement) -> str:
    return _BULK_MARK


def _strip(json_ds: dict[str, Any]) -> dict[str, Any]:
    """Remove what pydicom handed to the bulk-data handler, at any depth."""
    out: dict[str, Any] = {}
    for key, value in json_ds.items():
        if "BulkDataURI" in value:
            continue
        if value.get("vr") == "SQ" and "Value" in value:
            value = {**value, "Value": [_strip(item) for item in value["Value"]]}
        out[key] = value
    return out


class _Unreadable(Exception):
    """A sequence pydicom cannot read: the data set, not one element, is broken."""


def dataset_json(ds: Dataset, bulk_threshold: int, *, table: bool = True) -> dict[str, Any]:
    """The DICOM JSON of `ds` for the index, without bulk or deferred values (PS3.18 F.2).

    Leaves out, at the top level, group 0002, group lengths and Specific Character Set (the
    JSON is Unicode). An element that cannot be converted is left out with a warning; one
    inside a sequence costs the whole top-level sequence, as with pydicom. A sequence that
    cannot be read, or a value over a reader's budget, raises. `table=False` converts every
    element with pydicom (the reference the table is tested against).
    """
    vrs = _table_vrs() if table else frozenset()
    try:
        return _json(ds, bulk_threshold, vrs, top=True)
    except _Unreadable as exc:
        raise exc.__cause__ from None  # type: ignore[misc]


def _json(ds: Dataset, bulk_threshold: int, vrs: frozenset[str], *,
          top: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # items(), not iteration: iterating a Dataset converts its values and reads deferred ones.
    for tag, elem in list(ds.items()):
        code = int(tag)  # BaseTag compares in Python code; a plain int in C
        if top and (code >> 16 == GROUP_FILE_META or not code & 0xFFFF
                    or code == TAG_SPECIFIC_CHARACTER_SET):
            continue  # not index attributes (see `extract.split_levels`)
        vr = _vr_of(elem)
        raw = isinstance(elem, RawDataElement)
        deferred = raw and elem.value is None and elem.length  # over defer_size
        bulk = raw and vr != "SQ" and vr.split()[0] in BULK_VRS and elem.length > bulk_threshold
        if deferred or bulk:
            continue  # never read (PS3.18 F.2.6: bulk data is not in the index's JSON)
        if vr == "SQ":
            try:
                items = ds[tag].value  # pydicom reads the items; their elements stay raw
            except Exception as exc:
                raise _Unreadable() from exc
        try:
            if vr == "SQ":
                value: dict[str, Any] | None = {
                    "vr": "SQ", "Value": [_json(item, bulk_threshold, vrs) for item in items]}
            else:
                value = _table_json(elem, vr) if raw and vr in vrs else None
                if value is None:
                    value = _strip({"": ds[tag].to_json_dict(
                        bulk_data_element_handler=_mark_bulk,
                        bulk_data_threshold=bulk_threshold)}).get("")
        except _Unreadable:
            raise
        except Exception as exc:
            if not top:
                raise  # pydicom's rule: one bad element fails its data set's JSON
            log.warning("element (%04X,%04X) left out of the index: %s", tag >> 16,
                        tag & 0xFFFF, exc)
            continue
        if value is not None:
            out[f"{code:08X}"] = value
    return out
