"""Data-set bytes in and out of the services: bounded inflate and decode, deflate encode.

The one place for PS3.5 A.5 (Deflated Explicit VR Little Endian: the data set is a raw
deflate bitstream, no zlib header, padded to even length with one trailing NUL) and for
reading or writing a data set in a transfer syntax's VR and byte order (PS3.5 §10). C-FIND
identifiers and answers, C-MOVE/C-GET responses and conversion, and the C-STORE inflate
bound all use it. Inflating is always bounded: a deflate bomb stops at its bound with an
`InflateError`, never in memory.
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO, Final

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from ..proto.sop import dataset_encoding

__all__ = [
    "ELEMENT_HEADER",
    "STEP",
    "DataSetCut",
    "Deflater",
    "InflateError",
    "InflatingReader",
    "deflate",
    "encode_dataset_bytes",
    "inflate",
    "inflated_size",
    "plain_bytes",
    "read_plain",
]

STEP: Final = 1 << 16  # bytes inflated (or read) at a time by the streaming readers
ELEMENT_HEADER: Final = 8  # tag + (VR +) length: what a reader asks for first (PS3.5 §7.1)
_WBITS: Final = -zlib.MAX_WBITS  # raw deflate, no zlib header (PS3.5 A.5)
_PAD: Final = b"\0"


class InflateError(ValueError):
    """A Deflated data set that is corrupt or inflates past its bound; str() says which."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


class DataSetCut(ValueError):
    """A data set that ends inside an element (pydicom would read on quietly)."""


# --- inflate --------------------------------------------------------------------------------


def inflate(data: bytes, limit: int) -> bytes:
    """`data` inflated whole, at most `limit` bytes; InflateError past it or when corrupt."""
    inflater = zlib.decompressobj(_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InflateError(f"is corrupt: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise InflateError(f"inflates past {limit} bytes", too_large=True)
    return out


class InflatingReader(io.RawIOBase):
    """A deflate stream read forward in `STEP` pieces: a file-like for pydicom and copies.

    Holds one step plus a small window for pydicom's short look-backs; a forward seek
    inflates and drops. Past `limit` inflated bytes it raises InflateError (a bomb).
    """

    WINDOW: Final = 1 << 16

    def __init__(self, raw: BinaryIO, limit: int) -> None:
        super().__init__()
        self._raw = raw
        self._z = zlib.decompressobj(_WBITS)
        self._buf = bytearray()
        self._base = 0  # stream position of self._buf[0]
        self._pos = 0
        self._eof = False
        self._limit = limit

    def readable(self) -> bool:
        return True

    def _fill(self, upto: int) -> None:
        while not self._eof and self._base + len(self._buf) < upto:
            data = self._z.unconsumed_tail or self._raw.read(STEP)
            try:
                out = self._z.decompress(data, STEP) if data else self._z.flush()
            except zlib.error as exc:
                raise InflateError(f"is corrupt: {exc}") from None
            self._eof = self._z.eof or not data  # bytes after the stream's end are ignored
            if self._base + len(self._buf) + len(out) > self._limit:
                raise InflateError(f"inflates past {self._limit} bytes", too_large=True)
            self._buf += out
            drop = min(self._pos - self.WINDOW - self._base, len(self._buf))
            if drop > 0:
                del self._buf[:drop]
                self._base += drop

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._limit + 1 - self._pos
        self._fill(self._pos + size)
        start = self._pos - self._base
        data = bytes(self._buf[start:start + size])
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise OSError("a deflate stream cannot seek from its end")
        if offset < self._base:
            raise OSError("cannot seek back past the inflate window")
        if offset > self._limit:
            raise InflateError(f"inflates past {self._limit} bytes", too_large=True)
        self._pos = offset
        return offset

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._buf = bytearray()
        super().close()


def inflated_size(raw: BinaryIO, limit: int) -> int:
    """How many bytes a deflate stream inflates to, counted in `STEP` pieces, at most `limit`.

    Raises InflateError past `limit` or on a corrupt stream; memory stays one step.
    """
    inflater = zlib.decompressobj(_WBITS)
    total = 0
    while not inflater.eof:
        data = inflater.unconsumed_tail or raw.read(STEP)
        if not data:
            break
        try:
            total += len(inflater.decompress(data, STEP))
        except zlib.error as exc:
            raise InflateError(f"is corrupt: {exc}") from None
        if total > limit:
            raise InflateError(f"inflates past {limit} bytes", too_large=True)
    return total


# --- decode ---------------------------------------------------------------------------------


def plain_bytes(data: bytes, transfer_syntax: str, *, limit: int) -> bytes:
    """The data set's bytes before deflate: inflated (bounded) when the syntax says so.

    Raises InflateError, or ValueError for a transfer syntax that is not one.
    """
    _, _, deflated = dataset_encoding(transfer_syntax)
    return inflate(data, limit) if deflated else data


def read_plain(data: bytes, transfer_syntax: str, *, strict: bool = False) -> Dataset:
    """A data set from its plain (inflated) bytes in the syntax's VR and byte order.

    With `strict`, a data set cut inside an element raises DataSetCut. pydicom's own
    errors pass through (a peer's bytes break it in many ways: callers catch them).
    """
    implicit, little, _ = dataset_encoding(transfer_syntax)
    fp = _strict_reader(data) if strict else DicomBytesIO(data)
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    return read_dataset(fp, implicit, little)


def _strict_reader(raw: bytes) -> DicomBytesIO:
    """A reader that fails on a data set cut inside an element (pydicom reads on)."""
    fp = DicomBytesIO(raw)
    read = fp.read

    def strict(size: int = -1, /) -> bytes:
        data = read(size)
        # An empty 8-byte read is the end of the data set (no next element header).
        if size > 0 and len(data) < size and (data or size != ELEMENT_HEADER):
            raise DataSetCut(f"the data set ({len(raw)} bytes) ends inside an element")
        return data

    fp.read = strict  # type: ignore[method-assign]
    return fp


# --- encode ---------------------------------------------------------------------------------


class Deflater:
    """Raw deflate of a data set handed over in pieces (PS3.5 A.5), padded to even length."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(wbits=_WBITS)
        self._size = 0

    def compress(self, data: bytes) -> bytes:
        out = self._z.compress(data)
        self._size += len(out)
        return out

    def finish(self) -> bytes:
        out = self._z.flush()
        self._size += len(out)
        return out + _PAD if self._size % 2 else out  # PS3.5 A.5: one trailing NUL


def deflate(data: bytes) -> bytes:
    """A whole data set's bytes deflated (PS3.5 A.5), padded to even length."""
    packer = Deflater()
    return packer.compress(data) + packer.finish()


def encode_dataset_bytes(ds: Dataset, transfer_syntax: str) -> bytes:
    """`ds` written by pydicom in the syntax's VR and byte order, deflated when it says so."""
    implicit, little, deflated = dataset_encoding(transfer_syntax)
    fp = DicomBytesIO()
    fp.is_little_endian = little
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    data = fp.getvalue()
    return deflate(data) if deflated else data
