"""C-FIND key values: decoded to Unicode, checked against their VR, turned into conditions.

PS3.4 C.2.2.2 (single value, list of UIDs, universal, wildcard, range, empty value) and
PS3.5 §6.2 (what each VR may hold). Values are normalised as the index keeps them: dates
YYYYMMDD, times HHMMSS.FFFFFF, a time bound covering its precision.
"""

from __future__ import annotations

import enum
import re
from datetime import date
from typing import Any, Final

from pydicom.datadict import dictionary_has_tag, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.values import convert_PN, convert_single_string, convert_text, convert_value

from ..ports import Condition, MatchKind
from ..proto.status import Status
from ..proto.uid import is_valid_uid

__all__ = [
    "ASCII_VRS",
    "CHARSET_VRS",
    "EMPTY_VALUE",
    "ISO2022_DEFAULT",
    "MAX_KEY_BYTES",
    "WILDCARD_VRS",
    "IdentifierError",
    "RangeForm",
    "combine_date_time",
    "describe_tag",
    "key_condition",
    "refuse",
    "value_list",
]

MAX_KEY_BYTES: Final = 0xFFFF  # one key's value: a bigger one is refused, not matched

# PS3.5 §6.2 VR families as matching sees them.
TEXT_VRS: Final = frozenset({"SH", "LO", "UC"})  # Specific Character Set, backslash-delimited
SINGLE_TEXT_VRS: Final = frozenset({"ST", "LT", "UT"})  # Specific Character Set, VM 1
CHARSET_VRS: Final = TEXT_VRS | SINGLE_TEXT_VRS | {"PN"}
ASCII_VRS: Final = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
# PS3.4 C.2.2.2.4: the VRs on which "*" and "?" are wildcards.
WILDCARD_VRS: Final = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
WILDCARDS: Final = ("*", "?")
EMPTY_VALUE: Final = '""'  # PS3.4 C.2.2.2.7: two QUOTATION MARK characters
ISO2022_DEFAULT: Final = "ISO 2022 IR 6"

_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TIME = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?")
_DATETIME = re.compile(
    r"\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?(?:[+-]\d{4})?")
_INTEGER = re.compile(r"[+-]?\d{1,12}")
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_AGE = re.compile(r"\d{3}[DWMY]")
_ANY = re.compile(r".*", re.DOTALL)
_NUMBER_FORMS: Final = {"IS": _INTEGER, "DS": _DECIMAL, "AS": _AGE}


class IdentifierError(Exception):
    """An identifier we refuse: the failure status, an Error Comment and the offending key."""

    def __init__(self, status: Status, comment: str, tag: int | None = None) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]  # LO (PS3.5 §6.2)
        self.tag = tag


class RangeForm(enum.Enum):
    """The form of a range key (PS3.4 C.2.2.2.5): combined date-time needs the same on both."""

    CLOSED = "a-b"
    FROM = "a-"
    UNTIL = "-b"
    SINGLE = "a"  # a single TM/DT value, matched as the range of its precision


def describe_tag(tag: int) -> str:
    """'PatientID (0010,0020)' for Error Comments and logs."""
    keyword = keyword_for_tag(tag) if dictionary_has_tag(tag) else ""
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return f"{keyword} {text}" if keyword else text


def refuse(tag: int, why: str) -> IdentifierError:
    """0xA900 naming the key: its value is not one the model allows (PS3.4 C.4.1.1.4)."""
    return IdentifierError(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                           f"{describe_tag(tag)}: {why}", tag)


def value_list(value: object) -> list[Any]:
    """A decoded element value as a list of its values (VM > 1 or not).

    pydicom 3 gives several text values as a `MultiValue`, which is neither a list nor a
    tuple: testing for those two alone turns a list into one string.
    """
    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def _values(tag: int, vr: str, elem: RawDataElement | DataElement,
            encodings: list[str]) -> list[str]:
    """The key's values as Unicode strings, padding removed; [] for zero length."""
    raw = elem.value
    if raw is None or raw == b"" or raw == "":
        return []
    if not isinstance(raw, bytes):  # already converted by pydicom
        return [str(v).strip() for v in value_list(raw)]
    if len(raw) > MAX_KEY_BYTES:
        raise refuse(tag, f"value longer than {MAX_KEY_BYTES} bytes")
    try:
        if vr == "PN":
            decoded: Any = convert_PN(raw, encodings)
        elif vr in TEXT_VRS:
            decoded = convert_text(raw, encodings)
        elif vr in SINGLE_TEXT_VRS:
            return [convert_single_string(raw, encodings).rstrip(" ")]
        elif vr in ASCII_VRS:
            text = raw.decode("ascii").rstrip("\0 ")
            return [v.strip(" \0") for v in (text.split("\\") if vr != "UR" else [text])]
        elif isinstance(elem, RawDataElement):  # binary VRs: pydicom knows their layouts
            decoded = convert_value(vr, elem)
        else:
            return []
    except UnicodeDecodeError:
        raise refuse(tag, f"not valid {vr} characters") from None
    except Exception:
        raise IdentifierError(Status.UNABLE_TO_PROCESS, f"cannot decode {describe_tag(tag)}",
                              tag) from None
    return [str(v).strip(" ") for v in value_list(decoded)]


def key_condition(tag: int, vr: str, elem: RawDataElement | DataElement,
                  encodings: list[str], forms: dict[int, RangeForm]) -> Condition | None:
    """The matching a key asks for (PS3.4 C.2.2.2); None for universal matching."""
    values = _values(tag, vr, elem, encodings)
    if not any(values):
        return None  # C.2.2.2.3 universal matching (zero length or padding only)
    if len(values) == 1 and set(values[0]) == {"*"}:
        return None  # C.2.2.2.4 note: "*" matches everything, entities without a value too
    if values == [EMPTY_VALUE]:
        return Condition(tag, vr, MatchKind.EMPTY, (EMPTY_VALUE,))  # C.2.2.2.7
    if len(values) > 1:
        return _list(tag, vr, values)
    value = values[0]
    if vr in ("DA", "TM", "DT"):
        return _date_time(tag, vr, value, forms)
    if any(w in value for w in WILDCARDS):
        if vr not in WILDCARD_VRS:
            raise refuse(tag, f"no wildcards on VR {vr}")
        return Condition(tag, vr, MatchKind.WILDCARD, (value,))  # C.2.2.2.4
    return Condition(tag, vr, MatchKind.SINGLE, (_single(tag, vr, value),))  # C.2.2.2.1


def _list(tag: int, vr: str, values: list[str]) -> Condition | None:
    """C.2.2.2.2 list of UIDs; other VRs: any of the listed values (documented extension).

    Each value is checked and matched as a single value would be: with wildcards on the VRs
    that allow them (C.2.2.2.4), PN with its case and component-group rules; a value of
    only `*` matches everything, so the list is universal matching.
    """
    if vr in ("TM", "DT"):
        raise refuse(tag, "lists of times are not supported")
    out: list[str] = []
    for value in values:
        if not value or value == EMPTY_VALUE or (vr == "DA" and "-" in value):
            raise refuse(tag, "a list holds no empty value or range")
        if any(w in value for w in WILDCARDS):
            if vr not in WILDCARD_VRS:
                raise refuse(tag, f"no wildcards on VR {vr}")
            if set(value) == {"*"}:
                return None
            out.append(value)
        else:
            out.append(_single(tag, vr, value))
    return Condition(tag, vr, MatchKind.LIST, tuple(dict.fromkeys(out)))


def _single(tag: int, vr: str, value: str) -> str:
    """One plain value, checked against its VR and normalised as the index keeps it."""
    if vr == "UI":
        if not is_valid_uid(value):  # PS3.5 §9.1, the one grammar (proto/uid.py)
            raise refuse(tag, "not a valid UID")
    elif vr == "DA":
        return _date(tag, value)
    elif not _NUMBER_FORMS.get(vr, _ANY).fullmatch(value):
        raise refuse(tag, f"not a valid {vr} value")
    elif vr == "PN":
        # Trailing empty components and groups are not significant (PS3.5 §6.2.1.2).
        return "=".join(group.rstrip("^ ") for group in value.split("=")).rstrip("=")
    return value


def combine_date_time(conditions: dict[int, Condition], forms: dict[int, RangeForm],
                      date_tag: int, time_tag: int, *, same_form: bool) -> None:
    """A DA range and a TM range of one pair become one date-time range (C.2.2.2.5.4).

    The period runs from the first date at the first time to the last date at the last
    time; an open end of either key stays open (an open time end is the start or the end
    of that day). With `same_form`, only ranges of one form are joined. In place.
    """
    day, hour = conditions.get(date_tag), conditions.get(time_tag)
    day_form, hour_form = forms.get(date_tag), forms.get(time_tag)
    if day is None or hour is None or day_form in (None, RangeForm.SINGLE) or \
            hour_form in (None, RangeForm.SINGLE) or (same_form and day_form is not hour_form):
        return
    low = day.values[0] + hour.values[0] if day.values[0] else ""
    high = day.values[1] + hour.values[1] if day.values[1] else ""
    conditions[date_tag] = Condition(date_tag, "DA", MatchKind.RANGE, (low, high),
                                     combined_with=time_tag)
    del conditions[time_tag]


def _date_time(tag: int, vr: str, value: str, forms: dict[int, RangeForm]) -> Condition | None:
    """C.2.2.2.1 / C.2.2.2.5: a single value or a range of DA, TM or DT, normalised."""
    if any(w in value for w in WILDCARDS):
        raise refuse(tag, f"no wildcards on VR {vr}")
    low, high, form = _split_range(tag, vr, value)
    if vr == "DA":
        low, high = (_date(tag, low) if low else ""), (_date(tag, high) if high else "")
        if form is RangeForm.SINGLE:
            return Condition(tag, vr, MatchKind.SINGLE, (low,))
    elif vr == "TM":
        # A time is matched over its precision: "1800" is 18:00:00.000000-18:00:59.999999.
        low = _time(tag, low, upper=False) if low else ""
        high = _time(tag, high, upper=True) if high else ""
    elif form is RangeForm.SINGLE:
        return Condition(tag, vr, MatchKind.SINGLE, (low,))
    if not low and not high:
        return None  # "-": both ends open, as universal
    forms[tag] = form
    return Condition(tag, vr, MatchKind.RANGE, (low, high))


def _split_range(tag: int, vr: str, value: str) -> tuple[str, str, RangeForm]:
    if vr != "DT":
        if value.count("-") > 1:
            raise refuse(tag, f"not a valid {vr} range")
        if "-" not in value:
            return value, value, RangeForm.SINGLE
        low, high = value.split("-")
    elif _DATETIME.fullmatch(value):  # "-" may sign a UTC offset: a whole DT is one value
        return value, value, RangeForm.SINGLE
    else:  # a range: split where both sides are datetimes
        for index in [i for i, c in enumerate(value) if c == "-"]:
            low, high = value[:index], value[index + 1:]
            if all(not part or _DATETIME.fullmatch(part) for part in (low, high)):
                break
        else:
            raise refuse(tag, "not a valid DT value")
    low, high = low.strip(), high.strip()
    form = RangeForm.CLOSED if low and high else RangeForm.UNTIL if high else RangeForm.FROM
    return low, high, form


def _date(tag: int, value: str) -> str:
    """DA as YYYYMMDD; the ACR-NEMA form YYYY.MM.DD is accepted (PS3.5 §6.2)."""
    text = value.replace(".", "") if len(value) == 10 else value
    match = _DATE.fullmatch(text)
    if match is None:
        raise refuse(tag, "not a valid DA value")
    try:
        date(*map(int, match.groups()))
    except ValueError:
        raise refuse(tag, "not a valid DA value") from None
    return text


def _time(tag: int, value: str, *, upper: bool) -> str:
    """TM as HHMMSS.FFFFFF; an upper bound takes the end of its precision (PS3.5 §6.2)."""
    match = _TIME.fullmatch(value.replace(":", ""))
    if match is None:
        raise refuse(tag, "not a valid TM value")
    hh, mm, ss, frac = match.groups()
    if int(hh) > 23 or (mm and int(mm) > 59) or (ss and int(ss) > 60):
        raise refuse(tag, "not a valid TM value")
    fill = "59" if upper else "00"
    return f"{hh}{mm or fill}{ss or fill}.{(frac or '').ljust(6, '9' if upper else '0')}"
