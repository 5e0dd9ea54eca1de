"""A Part 10 file arriving as a stream: its File Meta Information, then its data set bytes.

PS3.10 §7.1: a 128-byte preamble, "DICM", then group 0002 in Explicit VR Little Endian.
Only the first `MAX_META_BYTES` are buffered to read the meta with pydicom; the data set
goes on as the same stream of pieces, for the ingest path.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from io import BytesIO
from typing import Final

from pydicom.filereader import _read_file_meta_info

from ..ports import FileMeta

__all__ = ["MAX_META_BYTES", "Part10Error", "read_part10"]

PREAMBLE: Final = 128
PREFIX: Final = b"DICM"
GROUP_START: Final = PREAMBLE + len(PREFIX)
META_GROUP: Final = b"\x02\x00"  # group 0002, little endian: a meta without the preamble
MAX_META_BYTES: Final = 64 * 1024  # a File Meta Information group larger than this is refused


class Part10Error(Exception):
    """Not a Part 10 file we can read; str() says why in one line."""


async def _fill(pieces: AsyncIterator[bytes], buffer: bytearray, size: int) -> None:
    """Buffer at least `size` bytes, or everything when the part is shorter."""
    while len(buffer) < size:
        try:
            buffer += await anext(pieces)
        except StopAsyncIteration:
            return


async def _rest(first: bytes, pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for piece in pieces:
        yield piece


async def read_part10(body: AsyncIterable[bytes], *, sending_ae_title: str,
                      receiving_ae_title: str) -> tuple[FileMeta, AsyncIterator[bytes]]:
    """The file's meta as the store records it, and its data set as a stream of pieces.

    Lenient where writers differ: the preamble and "DICM" may be missing (pydicom's
    `dcmwrite` omits them by default), and so may the group length (0002,0000).
    """
    pieces = aiter(body)
    buffer = bytearray()
    await _fill(pieces, buffer, MAX_META_BYTES)
    if buffer[PREAMBLE:GROUP_START] == PREFIX:
        start = GROUP_START
    elif buffer.startswith(META_GROUP):
        start = 0
    else:
        raise Part10Error("not a DICOM Part 10 file (no DICM prefix, no File Meta group)")
    fp = BytesIO(bytes(buffer))
    fp.seek(start)
    try:
        meta = _read_file_meta_info(fp)  # group 0002, Explicit VR LE (PS3.10 §7.1)
        end = fp.tell()
        sop_class = str(meta.MediaStorageSOPClassUID)
        sop_instance = str(meta.MediaStorageSOPInstanceUID)
        syntax = str(meta.TransferSyntaxUID)
    except Exception as exc:
        raise Part10Error(f"cannot read the File Meta Information: {type(exc).__name__}") \
            from None
    if end >= MAX_META_BYTES:
        raise Part10Error(f"File Meta Information larger than {MAX_META_BYTES} bytes")
    if not (sop_class and sop_instance and syntax):
        raise Part10Error("the File Meta Information lacks a SOP class, instance or syntax")
    file_meta = FileMeta(sop_class_uid=sop_class, sop_instance_uid=sop_instance,
                         transfer_syntax_uid=syntax, sending_ae_title=sending_ae_title,
                         receiving_ae_title=receiving_ae_title)
    return file_meta, _rest(bytes(buffer[end:]), pieces)
