"""`minipacs user add`: a user's salted scrypt hash written into the configuration file.

The file is edited line by line, never re-serialised, so its comments, order and quoting
stay as they were: the entry goes under a block-style ``security:`` / ``users:`` (created
when absent), or replaces the ``password`` of an existing flow-style entry. The edited text
must load to the same configuration with only that password changed; otherwise (a
flow-style ``security: {...}``, an unusual layout) nothing is written and the caller prints
the line to paste.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from ..config import Config, ConfigError, UserConfig, load_config
from ..security.passwords import hash_password

__all__ = ["UserAdded", "add_user", "entry_line", "hash_password", "insert_user"]

_TOP_KEY: Final = re.compile(r"^(?P<key>[A-Za-z_][\w-]*)\s*:(?P<rest>.*)$")
_CHILD: Final = re.compile(r"^(?P<indent>[ ]+)(?P<key>[^\s#:][^:#]*?)\s*:(?P<rest>.*)$")
_EMPTY_REST: Final = re.compile(r"^\s*(#.*)?$")
_FLOW_PASSWORD: Final = re.compile(r"(\bpassword\s*:\s*)(\"[^\"]*\"|'[^']*'|[^,}\s]+)")
DEFAULT_INDENT: Final = "  "


@dataclass(frozen=True, slots=True)
class UserAdded:
    """What `add_user` did: the file edited, or the line to paste when it could not."""

    line: str  # `NAME: {password: "scrypt$..."}`
    written: bool
    replaced: bool = False  # an existing user's passcode changed
    reason: str = ""  # why the file was left alone


def entry_line(name: str, hashed: str) -> str:
    """The YAML entry of a user under ``security.users``."""
    return f'{name}: {{password: "{hashed}"}}'


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """The index after the last line of the block opened at `start` (deeper than `indent`)."""
    end = start + 1
    for index in range(start + 1, len(lines)):
        line = lines[index]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if len(line) - len(line.lstrip(" ")) <= indent:
            break
        end = index + 1
    return end


def _child(lines: list[str], start: int, end: int, key: str) -> tuple[int, str] | None:
    """(line index, indent) of `key:` directly inside lines[start+1:end], if present."""
    depth: int | None = None
    for index in range(start + 1, end):
        match = _CHILD.match(lines[index])
        if match is None:
            continue
        width = len(match["indent"])
        depth = width if depth is None else depth
        if width == depth and match["key"].strip("'\"") == key:
            return index, match["indent"]
    return None


def _child_indent(lines: list[str], start: int, end: int, parent: str) -> str:
    for index in range(start + 1, end):
        if match := _CHILD.match(lines[index]):
            return match["indent"]
    return parent + DEFAULT_INDENT


def insert_user(text: str, name: str, hashed: str) -> tuple[str, bool] | str:
    """`text` with the user's entry set, and whether it replaced one; or why it cannot."""
    lines = text.splitlines()
    entry = entry_line(name, hashed)
    security = next((i for i, line in enumerate(lines)
                     if (m := _TOP_KEY.match(line)) and m["key"] == "security"), None)
    if security is None:
        tail = ["security:", f"{DEFAULT_INDENT}users:", f"{DEFAULT_INDENT * 2}{entry}"]
        return "\n".join([*lines, *tail]) + "\n", False
    if not _EMPTY_REST.match(_TOP_KEY.match(lines[security])["rest"]):  # type: ignore[index]
        return "security: is written in flow style ({...})"
    end = _block_end(lines, security, 0)
    users = _child(lines, security, end, "users")
    if users is None:
        indent = _child_indent(lines, security, end, "")
        new = [f"{indent}users:", f"{indent}{DEFAULT_INDENT}{entry}"]
        return "\n".join(lines[:security + 1] + new + lines[security + 1:]) + "\n", False
    at, indent = users
    if not _EMPTY_REST.match(_CHILD.match(lines[at])["rest"]):  # type: ignore[index]
        return "security.users is written in flow style ({...})"
    users_end = _block_end(lines, at, len(indent))
    existing = _child(lines, at, users_end, name)
    if existing is None:
        child = _child_indent(lines, at, users_end, indent)
        lines.insert(users_end, f"{child}{entry}")
        return "\n".join(lines) + "\n", False
    index, child = existing
    rest = _CHILD.match(lines[index])["rest"]  # type: ignore[index]
    if not rest.strip().startswith("{") or len(_FLOW_PASSWORD.findall(rest)) > 1:
        return f"security.users.{name} is not a one-line {{password: ...}} entry"
    if _FLOW_PASSWORD.search(rest):
        rest = _FLOW_PASSWORD.sub(lambda m: f'{m[1]}"{hashed}"', rest, count=1)
    else:
        rest = re.sub(r"\{\s*", f'{{password: "{hashed}", ', rest, count=1).replace(", }", "}")
    lines[index] = f"{child}{name}:{rest}"
    return "\n".join(lines) + "\n", True


def _expected(before: Config, name: str, hashed: str) -> Config:
    """`before` with the user's password set: what the edited file must load to."""
    users = dict(before.security.users)
    users[name] = dataclasses.replace(users.get(name, UserConfig()), password=hashed)
    security = dataclasses.replace(before.security, users=MappingProxyType(users))
    return dataclasses.replace(before, security=security)


def add_user(path: Path, name: str, passcode: str) -> UserAdded:
    """Hash `passcode` and set it as `name`'s in the file at `path` (ConfigError when the
    file is not a valid configuration to begin with)."""
    before = load_config(path)
    hashed = hash_password(passcode)
    line = entry_line(name, hashed)
    text = path.read_text(encoding="utf-8")
    edited = insert_user(text, name, hashed)
    if isinstance(edited, str):
        return UserAdded(line, written=False, reason=edited)
    new_text, replaced = edited
    folder = path.resolve().parent
    fd, temporary = tempfile.mkstemp(prefix=".minipacs-user-", suffix=".yaml", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(new_text)
        try:
            after = load_config(temporary)
        except ConfigError as exc:
            return UserAdded(line, written=False, reason=f"the edit would not load ({exc})")
        if dataclasses.replace(after, source=before.source) != _expected(before, name, hashed):
            return UserAdded(line, written=False, reason="the edit would change other keys")
        os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)  # atomic: the old file or the new one, never half
        temporary = ""
    finally:
        if temporary:
            os.unlink(temporary)
    return UserAdded(line, written=True, replaced=replaced)
