"""Rules that check one YAML value: each takes (value, key path) and returns the value to
keep or raises a `ConfigError` naming the key."""

from __future__ import annotations

import difflib
import enum
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

from ..ports import ALL_OPERATIONS, Operation
from ..proto.uid import is_valid_uid
from .model import LOG_LEVELS, ConfigError, check_ae_title, check_host

Rule = Callable[[object, str], Any]
E = TypeVar("E", bound=enum.StrEnum)

_SIMPLE_KEY: Final = re.compile(r"^[A-Za-z0-9_\-]+$")


def read_section(raw: object, where: str, table: Mapping[str, Rule],
                 known: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keys of one section that are present, each checked by its rule in `table`.

    Keys in `known` are accepted but left to the caller. Omitted keys are left out, so the
    section's type supplies their defaults.
    """
    data = mapping(raw, where, (*table, *known))
    return {key: rule(data[key], join(where, key)) for key, rule in table.items()
            if key in data}


def mapping(raw: object, where: str, known: tuple[str, ...]) -> Mapping[Any, Any]:
    """A section; left empty (``listen:``) it takes every default."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(where or "<top level>", f"expected a mapping, got {describe(raw)}")
    for key in raw:
        if key not in known:
            hint = ""
            if isinstance(key, str) and (close := difflib.get_close_matches(key, known, n=1)):
                hint = f" (did you mean {close[0]!r}?)"
            raise ConfigError(join(where, key),
                              f"unknown key{hint}; known keys: {', '.join(known)}")
    return raw


def text(value: object, where: str) -> str:
    if not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, bool | int | float) else ""
        raise ConfigError(where, f"expected a string, got {describe(value)}{hint}")
    return value


def non_empty(value: object, where: str) -> str:
    result = text(value, where)
    if not result.strip():
        raise ConfigError(where, "must not be empty")
    return result


def boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {describe(value)}")
    return value


def integer(low: int, high: int) -> Rule:
    """An integer from `low` to `high` inclusive."""

    def rule(value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, f"expected an integer, got {describe(value)}")
        if not low <= value <= high:
            raise ConfigError(where, f"{value} is out of range {low}-{high}")
        return value

    return rule


def seconds(*, zero_allowed: bool) -> Rule:
    """A finite, non-negative number of seconds; 0 only where it means "disabled"."""

    def rule(value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(where, f"expected a number of seconds, got {describe(value)}")
        result = float(value)
        if not math.isfinite(result) or result < 0 or (result == 0 and not zero_allowed):
            allowed = "0 (disabled) or more" if zero_allowed else "more than 0"
            raise ConfigError(where, f"{value} is not a valid duration: it must be {allowed}")
        return result

    return rule


def one_of(choices: type[E]) -> Callable[[object, str], E]:
    """One of an enumeration's values."""

    def rule(value: object, where: str) -> E:
        given = text(value, where)
        try:
            return choices(given)
        except ValueError:
            names = ", ".join(choice.value for choice in choices)
            raise ConfigError(where, f"{given!r} is not one of {names}") from None

    return rule


def log_level(value: object, where: str) -> str:
    level = text(value, where).upper()
    if level not in LOG_LEVELS:
        raise ConfigError(where, f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def ae_title(value: object, where: str) -> str:
    try:
        return check_ae_title(text(value, where))
    except ValueError as exc:
        raise ConfigError(where, str(exc)) from None


def host(value: object, where: str) -> str:
    try:
        return check_host(text(value, where))
    except ValueError as exc:
        raise ConfigError(where, str(exc)) from None


def uid_list(value: object, where: str) -> tuple[str, ...]:
    """A list of distinct UIDs."""
    if not isinstance(value, list):
        raise ConfigError(where, f"expected a list of UIDs, got {describe(value)}")
    uids: list[str] = []
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        uid = text(item, at)
        if not is_valid_uid(uid):  # PS3.5 §9.1, the one grammar (proto/uid.py)
            raise ConfigError(at, f"{uid!r} is not a valid UID")
        if uid in uids:
            raise ConfigError(at, f"{uid!r} is listed twice")
        uids.append(uid)
    return tuple(uids)


ALL_WORD: Final = "all"


def permissions(value: object, where: str) -> frozenset[Operation]:
    """A list of permission words (``[echo, store]``), or ``[all]``; ``[]`` allows nothing."""
    words = ", ".join(op.value for op in Operation)
    if not isinstance(value, list):
        raise ConfigError(where, f"expected a list of permission words ({words} or all), "
                                 f"got {describe(value)}")
    allowed: set[Operation] = set()
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        word = text(item, at)
        if word == ALL_WORD:
            if len(value) != 1:
                raise ConfigError(at, "'all' stands alone: it already names every operation")
            return ALL_OPERATIONS
        try:
            operation = Operation(word)
        except ValueError:
            raise ConfigError(at, f"{word!r} is not a permission word: {words} or all") from None
        if operation in allowed:
            raise ConfigError(at, f"{word!r} is listed twice")
        allowed.add(operation)
    return frozenset(allowed)


def resolve_path(value: str | Path, base: Path) -> Path:
    path = Path(value).expanduser()
    # Relative paths follow the config file, not wherever the daemon was started.
    return path if path.is_absolute() else Path(os.path.normpath(base / path))


def join(where: str, key: object) -> str:
    """The path of `key` inside the section at `where`, e.g. ``peers.WORKSTATION``."""
    name = str(key)
    if not _SIMPLE_KEY.match(name):
        name = f"[{name!r}]"
        return f"{where}{name}" if where else name
    return f"{where}.{name}" if where else name


def describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"{type(value).__name__} {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
