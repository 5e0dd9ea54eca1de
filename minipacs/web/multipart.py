"""multipart/related bodies (RFC 2387, PS3.18 §8.6.1.2): written as a stream, parsed as one.

Writing: each part is a delimiter line, its Content-Type, an empty line, the bytes, CRLF.
Reading (STOW-RS): python-multipart's streaming parser, fed the request body as it arrives,
calls back per part; this module turns that into one async iterator of parts whose bodies
are themselves async iterators, so a part of any size is never held whole in memory.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Final

from python_multipart.multipart import MultipartParser

__all__ = [
    "MultipartError",
    "Part",
    "new_boundary",
    "part_header",
    "read_parts",
    "trailer",
]

CRLF: Final = b"\r\n"
MAX_HEADER_BYTES: Final = 16 * 1024  # one part's header lines together
MAX_BOUNDARY: Final = 200  # RFC 2046 §5.1.1 allows 70 characters; be lenient


class MultipartError(Exception):
    """The body is not a well-formed multipart/related message; str() says why."""


def new_boundary() -> str:
    return f"minipacs-{secrets.token_hex(16)}"


def part_header(boundary: str, content_type: str, *, first: bool) -> bytes:
    lead = b"" if first else CRLF
    return lead + f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("latin-1")


def trailer(boundary: str, *, empty: bool) -> bytes:
    return (b"" if empty else CRLF) + f"--{boundary}--\r\n".encode("latin-1")


@dataclass
class Part:
    """One part: its headers (names lower-case) and its body, to be iterated once."""

    headers: dict[str, str]
    _reader: _Reader = field(repr=False)
    _done: bool = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, piece by piece as the request delivers it (pull: no buffering)."""
        while not self._done:
            kind, value = await self._reader.next_event()
            if kind == "data":
                assert isinstance(value, bytes)
                yield value
            elif kind == "end":
                self._done = True
            else:
                raise MultipartError("a part began before the previous one ended")

    async def drain(self) -> None:
        async for _ in self.chunks():
            pass

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class _Reader:
    """python-multipart callbacks → a queue of events, refilled from the body on demand."""

    def __init__(self, body: AsyncIterable[bytes], boundary: str) -> None:
        self._body = aiter(body)
        self._events: deque[tuple[str, object]] = deque()
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self.finished = False
        self._parser = MultipartParser(boundary.encode("latin-1"), {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._add(self._field, d[s:e]),
            "on_header_value": lambda d, s, e: self._add(self._value, d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self._events.append(("part", dict(self._headers))),
            "on_part_data": lambda d, s, e: self._events.append(("data", bytes(d[s:e]))),
            "on_part_end": lambda: self._events.append(("end", None)),
            "on_end": self._end,
        })

    def _add(self, buffer: bytearray, data: bytes) -> None:
        self._header_bytes += len(data)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise MultipartError(f"part headers exceed {MAX_HEADER_BYTES} bytes")
        buffer += data

    def _begin(self) -> None:
        self._headers, self._header_bytes = {}, 0

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self._headers[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def _end(self) -> None:
        self.finished = True
        self._events.append(("finished", None))

    async def next_event(self) -> tuple[str, object]:
        while not self._events:
            try:
                chunk = await anext(self._body)
            except StopAsyncIteration:
                raise MultipartError("the body ends before the closing boundary") from None
            try:
                self._parser.write(chunk)
            except MultipartError:
                raise
            except Exception as exc:  # python-multipart's own errors: a malformed body
                raise MultipartError(f"malformed multipart body: {exc}") from None
        return self._events.popleft()


async def read_parts(body: AsyncIterable[bytes], boundary: str) -> AsyncIterator[Part]:
    """The parts of a multipart body, in order. A part's body not consumed when the next
    part is asked for is skipped. Raises MultipartError for a malformed body."""
    if not boundary or len(boundary) > MAX_BOUNDARY:
        raise MultipartError("missing or invalid boundary parameter")
    reader = _Reader(body, boundary)
    current: Part | None = None
    while True:
        if current is not None and not current._done:
            await current.drain()
        kind, value = await reader.next_event()
        if kind == "finished":
            return
        if kind == "part":
            assert isinstance(value, dict)
            current = Part(value, reader)
            yield current
        elif kind == "data" and current is None:
            continue  # preamble bytes are ignored (RFC 2046 §5.1.1)
