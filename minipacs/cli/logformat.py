"""Log lines a peer cannot forge: every message escaped, pydicom's duplicate warnings dropped.

Peer-supplied strings (AE titles, UIDs, character set terms, values) reach log messages, ours
quoted with repr and those of libraries (pydicom's notes on odd input) raw. The formatter
escapes what is left in every message — C0 and C1 controls, DEL, Unicode line and paragraph
separators — so no line can be split, forged or turn into a terminal escape sequence.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Final

__all__ = ["EscapingFormatter", "drop_pydicom_warnings"]

# C0 controls (newline, ESC, NUL...), DEL, C1 controls (0x9B is a one-byte CSI), NEL's
# Unicode neighbours the line and paragraph separators.
_UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with every character that could break a log line escaped as in repr()."""
    return _UNSAFE.sub(_escaped, text)


class EscapingFormatter(logging.Formatter):
    """A `logging.Formatter` whose messages are escaped (a traceback is appended after)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)


def drop_pydicom_warnings() -> None:
    """Ignore the warnings pydicom issues: it logs each one too (`warn_and_log`).

    Printed by the warnings module they would bypass the log format and its escaping, and
    each distinct text is remembered in a registry for the life of the process, which a
    peer sending endless distinct odd values would grow without bound ("ignore" keeps none).
    """
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
