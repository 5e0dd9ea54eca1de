"""The one UID grammar (PS3.5 §9.1), for every UID minipacs receives, stores or is configured with.

Every layer may import this module (tests/test_layers.py allows it by name): a C-STORE, a
C-FIND key, a C-MOVE/C-GET key, an MPPS or Storage Commitment UID, a configured SOP class
and a file named after a UID are all checked by `is_valid_uid`, never by a second regex.

The grammar: one or more components of ASCII digits separated by single periods, at most 64
characters, nothing else (no sign, space, letter, control character or path separator).
PS3.5 §9.1 also forbids a leading zero in a multi-digit component ("1.02"); such UIDs are
**accepted** (documented in docs/conformance.md): devices emit them, and an instance stored
under one must stay findable and retrievable by the UID it came with.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_UID_LENGTH", "UID_PADDING", "is_valid_uid"]

MAX_UID_LENGTH: Final = 64  # PS3.5 §9.1
UID_PADDING: Final = "\0"  # PS3.5 §6.2 UI: a value of odd length is padded with one NUL
_UID: Final = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def is_valid_uid(value: str) -> bool:
    """Whether `value` (its padding already removed) is a UID by the one grammar above."""
    return 0 < len(value) <= MAX_UID_LENGTH and _UID.fullmatch(value) is not None
