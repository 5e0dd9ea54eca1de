"""One C-FIND matching key against one column: PS3.4 C.2.2.2 as SQL expressions.

Values are Unicode (the service decoded them); every value becomes a bound parameter.
Which column, table or EXISTS a key lives in is ``query``'s business; the rules here are
listed in its docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, or_

from ..ports import Condition, DataSetError, MatchKind
from .engine import Dialect
from .models import KeyKind, fold, normalize_date, normalize_time

__all__ = [
    "MAX_LIST_PATTERNS",
    "MAX_LIST_VALUES",
    "MAX_PATTERN_LENGTH",
    "bad",
    "chunked",
    "combined_range",
    "predicate",
]

MAX_LIST_VALUES: Final = 10_000  # UIDs in one list key (C.2.2.2.2)
# Characters in one wildcard value: SQLite refuses GLOB/LIKE patterns over 50,000 bytes.
MAX_PATTERN_LENGTH: Final = 4096
# Values of one list key matched each on its own (PN, wildcards): SQLite parses an OR chain
# as a tree deeper than its 1,000-level expression limit long before MAX_LIST_VALUES.
MAX_LIST_PATTERNS: Final = 100
_IN_CHUNK: Final = 900  # bound parameters per IN (SQLite builds before 3.32 allow 999)
_END_OF_DAY: Final = "235959.999999"
_START_OF_DAY: Final = "000000.000000"



def bad(cond: Condition, what: str) -> DataSetError:
    """An identifier the index cannot match, as the service's Error Comment (0000,0902)."""
    return DataSetError(f"({cond.tag >> 16:04X},{cond.tag & 0xFFFF:04X}) {what}")


def _one(cond: Condition) -> str:
    if len(cond.values) != 1:
        raise bad(cond, "needs one value")
    return cond.values[0].strip()


def _date(cond: Condition, value: str) -> str:
    date = normalize_date(value)
    if date is None:
        raise bad(cond, f"not a date: {value[:24]!r}")
    return date


def _time_low(cond: Condition, value: str) -> str:
    time = normalize_time(value)
    if time is None:
        raise bad(cond, f"not a time: {value[:24]!r}")
    return time


def _time_high(cond: Condition, value: str) -> str:
    """The last moment a TM value of its precision covers (PS3.4 C.2.2.2.5.2)."""
    low = _time_low(cond, value)
    digits = len(value.strip().replace(":", "").split(".")[0])
    fraction = value.partition(".")[2].strip()
    filled = low[:digits] + "5959"[digits - 2:] if digits < 6 else low[:6]
    return f"{filled}.{fraction.ljust(6, '9')}"


def _datetime(cond: Condition, value: str, *, high: bool) -> str:
    """A combined date-time bound as YYYYMMDDHHMMSS.FFFFFF (C.2.2.2.5.4)."""
    date, time = _date(cond, value[:8]), value[8:].strip()
    if not time:
        return date + (_END_OF_DAY if high else _START_OF_DAY)
    return date + (_time_high(cond, time) if high else _time_low(cond, time))


def _universal(value: str, kind: KeyKind) -> bool:
    """A value of only `*` (and, for PN, group delimiters) matches everything (C.2.2.2.4)."""
    allowed = {"*", "="} if kind is KeyKind.PN else {"*"}
    return set(value) <= allowed


def _pn(col: ColumnElement[Any], value: str, wildcard: bool, dialect: Dialect
        ) -> ColumnElement[bool]:
    """A folded PN value against a folded PN column, by leading component groups."""
    groups = value.split("=")
    while len(groups) > 1 and not groups[-1]:
        groups.pop()
    if len(groups) > 1 and not all(groups):  # an empty group matches any value there
        groups, wildcard = [group or "*" for group in groups], True
    value = "=".join(groups)
    if not wildcard:
        return or_(col == value, dialect.starts_with(col, value + "="))
    if value.endswith("*"):  # already spans any further groups
        return dialect.wildcard(col, value)
    return or_(dialect.wildcard(col, value), dialect.wildcard(col, value + "=*"))


def chunked(values: Sequence[Any]) -> list[Sequence[Any]]:
    """`values` in slices short enough for one IN list of bound parameters."""
    return [values[i:i + _IN_CHUNK] for i in range(0, len(values), _IN_CHUNK)]


def _in(col: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    return or_(*(col.in_(chunk) for chunk in chunked(values)))


def _range(col: ColumnElement[Any], kind: KeyKind, cond: Condition) -> ColumnElement[bool]:
    """PS3.4 C.2.2.2.5: DA and TM ranges, inclusive, either end open."""
    if len(cond.values) != 2:
        raise bad(cond, "a range needs two bounds")
    low, high = (value.strip() for value in cond.values)
    if kind is KeyKind.DATE:
        bounds = (low and _date(cond, low), high and _date(cond, high))
    elif kind is KeyKind.TIME:
        bounds = (low and _time_low(cond, low), high and _time_high(cond, high))
    else:
        raise bad(cond, "range matching applies to DA, TM and DT only")
    clauses = []
    if bounds[0]:
        clauses.append(col >= bounds[0])
    if bounds[1]:
        clauses.append(col <= bounds[1])
    return and_(*clauses) if clauses else col.is_not(None)


def predicate(col: ColumnElement[Any], kind: KeyKind, cond: Condition, dialect: Dialect
              ) -> ColumnElement[bool] | None:
    """`cond` on a column holding one value (folded for PN); None is universal matching."""
    match cond.kind:
        case MatchKind.SINGLE | MatchKind.WILDCARD:
            value = _one(cond)
            wildcard = cond.kind is MatchKind.WILDCARD
            if wildcard and _universal(value, kind):
                return None
            if wildcard and len(value) > MAX_PATTERN_LENGTH:
                raise bad(cond, f"wildcard value over {MAX_PATTERN_LENGTH} characters")
            if kind is KeyKind.PN:
                return _pn(col, fold(value) or "", wildcard, dialect)
            if wildcard and kind is KeyKind.TEXT:
                return dialect.wildcard(col, value)
            if wildcard:
                raise bad(cond, "wildcards apply to text VRs only")
            if kind is KeyKind.DATE:
                return col == _date(cond, value)
            if kind is KeyKind.TIME:  # a TM value covers its precision
                return and_(col >= _time_low(cond, value), col <= _time_high(cond, value))
            if kind is KeyKind.INT:
                return col == _integer(cond, value)
            return col == value
        case MatchKind.LIST:
            return _list(col, kind, cond, dialect)
        case MatchKind.RANGE:
            return _range(col, kind, cond)
    raise bad(cond, f"{cond.kind.value} matching is not supported")


def _list(col: ColumnElement[Any], kind: KeyKind, cond: Condition, dialect: Dialect
          ) -> ColumnElement[bool] | None:
    """Any of the values (C.2.2.2.2, and the extension to other VRs), each as alone.

    Plain values are one IN; a wildcard value (text and PN) and every PN value (its
    component-group rules) are each their own clause, at most `MAX_LIST_PATTERNS`.
    """
    values = [value.strip() for value in cond.values]
    if not values or len(values) > MAX_LIST_VALUES:
        raise bad(cond, f"a list holds 1 to {MAX_LIST_VALUES} values")
    if kind is KeyKind.INT:
        return _in(col, [_integer(cond, value) for value in values])
    if kind is KeyKind.DATE:
        return _in(col, [_date(cond, value) for value in values])
    textual = kind in (KeyKind.TEXT, KeyKind.PN)
    patterns = [v for v in values if textual and (kind is KeyKind.PN or _has_wildcard(v))]
    if any(_universal(value, kind) for value in patterns if _has_wildcard(value)):
        return None
    if len(patterns) > MAX_LIST_PATTERNS:
        raise bad(cond, f"a list holds at most {MAX_LIST_PATTERNS} names or wildcard values")
    if any(len(value) > MAX_PATTERN_LENGTH for value in patterns):
        raise bad(cond, f"wildcard value over {MAX_PATTERN_LENGTH} characters")
    clauses = [_pn(col, fold(value) or "", _has_wildcard(value), dialect)
               if kind is KeyKind.PN else dialect.wildcard(col, value) for value in patterns]
    plain = [value for value in values if value not in patterns]
    if plain:
        clauses.append(_in(col, plain))
    return or_(*clauses)


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _integer(cond: Condition, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise bad(cond, f"not an integer: {value[:24]!r}") from None


def combined_range(date: ColumnElement[Any], time: ColumnElement[Any], cond: Condition
                   ) -> ColumnElement[bool]:
    """PS3.4 C.2.2.2.5.4: DA and TM columns matched as one date-time range (date||time)."""
    if cond.kind is not MatchKind.RANGE or len(cond.values) != 2:
        raise bad(cond, "combined date-time matching needs a range")
    low, high = (value.strip() for value in cond.values)
    low = low and _datetime(cond, low, high=False)
    high = high and _datetime(cond, high, high=True)
    # The date part alone bounds the date column (an index serves it); a missing time
    # stands for the whole day.
    on_date, on_time = [date.is_not(None)], []
    if low:
        on_date.append(date >= low[:8])
        on_time.append(date + time >= low)
    if high:
        on_date.append(date <= high[:8])
        on_time.append(date + time <= high)
    return and_(*on_date, or_(time.is_(None), and_(*on_time)))
