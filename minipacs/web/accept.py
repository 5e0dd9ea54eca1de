"""HTTP Accept and Content-Type headers: media ranges with parameters (RFC 9110 §12.5.1).

PS3.18 §8.7 negotiates DICOMweb representations with media types such as
``multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1``;
an Accept header may list several, with quality values. Parameters' values may be quoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

__all__ = ["MediaRange", "parse_accept", "parse_media_type"]

_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM: Final = re.compile(
    rf'\s*;\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*')
_TYPE: Final = re.compile(rf"\s*({_TOKEN})\s*/\s*({_TOKEN})\s*")
MAX_RANGES: Final = 64  # an Accept header listing more is cut there


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One media type or range with its parameters (names lower-case) and quality."""

    type: str
    subtype: str
    params: dict[str, str] = field(default_factory=dict)
    quality: float = 1.0

    @property
    def essence(self) -> str:
        return f"{self.type}/{self.subtype}"

    def matches(self, essence: str) -> bool:
        """Whether this range covers the media type `essence` ("type/subtype")."""
        kind, _, sub = essence.partition("/")
        return (self.type in ("*", kind)) and (self.subtype in ("*", sub))


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _parse_one(text: str, pos: int) -> tuple[MediaRange | None, int]:
    """One media range from `pos`; returns it (None if malformed) and the position after."""
    match = _TYPE.match(text, pos)
    if match is None:
        end = text.find(",", pos)
        return None, len(text) if end < 0 else end
    kind, sub = match.group(1).lower(), match.group(2).lower()
    pos = match.end()
    params: dict[str, str] = {}
    quality = 1.0
    while (param := _PARAM.match(text, pos)) is not None:
        name, value = param.group(1).lower(), _unquote(param.group(2))
        pos = param.end()
        if name == "q":
            try:
                quality = min(max(float(value), 0.0), 1.0)
            except ValueError:
                quality = 0.0
        else:
            params[name] = value
    return MediaRange(kind, sub, params, quality), pos


def parse_accept(header: str | None) -> list[MediaRange]:
    """The ranges of an Accept header, best first (stable for equal quality); `*/*` when
    there is none. Malformed entries are skipped, never fatal."""
    if not header or not header.strip():
        return [MediaRange("*", "*")]
    ranges: list[MediaRange] = []
    pos = 0
    while pos < len(header) and len(ranges) < MAX_RANGES:
        media, pos = _parse_one(header, pos)
        if media is not None and media.quality > 0:
            ranges.append(media)
        comma = header.find(",", pos)
        if comma < 0:
            break
        pos = comma + 1
    return sorted(ranges, key=lambda r: -r.quality)


def parse_media_type(header: str | None) -> MediaRange | None:
    """A Content-Type header; None when missing or malformed."""
    if not header:
        return None
    media, _ = _parse_one(header, 0)
    return media
