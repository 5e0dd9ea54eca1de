"""A stored native data set re-encoded in another native syntax, streamed in bounded pieces.

The conversion of `transcode` for native sources (PS3.5 A.1-A.5): never the whole data set
in memory, so a Deflated instance whose Pixel Data inflates to gigabytes (a deflate bomb)
costs a few MiB to send. Two passes over the stored bytes:

1. pydicom parses the data set with values over `DEFER_SIZE` deferred: a deferred value is
   skipped (inflated and dropped when deflated), everything else is held, at most
   `HELD_LIMIT` bytes. Structure errors, a data set cut short and a deflate stream past
   its bound all fail here, before the first byte is sent.
2. The output is produced as it is read: held elements are written by pydicom (the same
   rules as `transcode`: final VRs, group lengths dropped, odd values padded, words
   swapped between byte orders); a deferred value gets its header for the final VR and
   length and is copied from a second pass over the source in `CHUNK` pieces (swapped by
   word size between byte orders). A Deflated target is compressed as it goes.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import (
    correct_ambiguous_vr,
    correct_ambiguous_vr_element,
    write_data_element,
)
from pydicom.tag import BaseTag

from ..proto.sop import dataset_encoding, name_of
from .dataset_codec import ELEMENT_HEADER, DataSetCut, Deflater, InflateError, InflatingReader

__all__ = [
    "CHUNK",
    "DEFER_SIZE",
    "HELD_LIMIT",
    "WORD_SIZE",
    "NativeStream",
    "TranscodeError",
    "one_line",
    "swap_words",
]

DEFER_SIZE: Final = 1 << 18  # values larger than this are copied, never held
HELD_LIMIT: Final = 64 << 20  # bytes held outside deferred values (nested sequences)
CHUNK: Final = 1 << 20  # a multiple of every word size
UNDEFINED_LENGTH: Final = 0xFFFFFFFF
MAX_SHORT_LENGTH: Final = 0xFFFE  # an explicit VR's 16-bit length field (PS3.5 §7.1.2)
# Word size of the binary VRs whose values change with the byte order (PS3.5 Table 6.2-1).
WORD_SIZE: Final = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}
# ... and, for a copied value, the numeric VRs pydicom would otherwise have swapped.
_COPY_WORD_SIZE: Final = {**WORD_SIZE, "US": 2, "SS": 2, "AT": 2, "UL": 4, "SL": 4, "FL": 4,
                          "FD": 8, "SV": 8, "UV": 8}
# PS3.5 §7.1.2: explicit VRs with a reserved field and a 32-bit length.
_LONG_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN",
                              "UR", "UT", "UV"})
_TEXT_VRS: Final = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH",
                              "ST", "TM", "UC", "UR", "UT"})  # padded with a space, not NUL


class TranscodeError(Exception):
    """A data set that cannot be converted; str() is one line in words."""


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def swap_words(ds: Dataset) -> None:
    """Byte-swap OW/OL/OF/OD/OV values, nested ones included (pydicom copies bytes as-is)."""
    for elem in ds.iterall():
        size = WORD_SIZE.get(str(elem.VR))
        value = elem.value
        if size is None or not isinstance(value, bytes | bytearray) or not value:
            continue
        if len(value) % size:
            raise TranscodeError(f"{elem.tag} ({elem.VR}) has {len(value)} bytes, not a "
                                 f"multiple of {size}: cannot change its byte order")
        elem.value = _swapped(value, size)


def _swapped(value: bytes | bytearray, size: int) -> bytes:
    out = bytearray(len(value))
    for i in range(size):
        out[i::size] = value[size - 1 - i::size]
    return bytes(out)


class _Held:
    """Pass 1's view of the source: reads bounded to `HELD_LIMIT`, a cut element refused."""

    def __init__(self, fp: BinaryIO | InflatingReader) -> None:
        self._fp = fp
        self._left = HELD_LIMIT

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self._left:
            raise TranscodeError(f"the data set holds more than {HELD_LIMIT >> 20} MiB "
                                 "outside its large values")
        data = self._fp.read(size)
        self._left -= len(data)
        # An empty 8-byte read is the end of the data set (no next element header).
        if size > 0 and len(data) < size and (data or size != ELEMENT_HEADER):
            raise DataSetCut("the data set ends inside an element")
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()


@dataclass(frozen=True, slots=True)
class _Copied:
    """A deferred value: copied from the source at `position` with its final VR."""

    tag: int
    vr: str
    position: int
    length: int


class NativeStream(io.RawIOBase):
    """`fp` (positioned at a native data set in `src_ts`; owned) read as `dst_ts` bytes.

    Raises TranscodeError from the constructor for everything pass 1 finds; reading then
    produces the output one piece at a time.
    """

    def __init__(self, fp: BinaryIO, src_ts: str, dst_ts: str, max_inflated: int) -> None:
        super().__init__()
        self._fp = fp
        self._start = fp.tell()
        self._src = dataset_encoding(src_ts)
        self._dst = dataset_encoding(dst_ts)
        self._max_inflated = max_inflated
        self._src_name = name_of(src_ts)
        self._names = f"{self._src_name} to {name_of(dst_ts)}"
        self._pending = bytearray()
        try:
            self._ds, self._plan = self._first_pass()
        except BaseException:
            fp.close()
            raise
        self._output = self._produce()

    # --- pass 1 -----------------------------------------------------------------------

    def _source(self) -> BinaryIO | InflatingReader:
        self._fp.seek(self._start)
        return InflatingReader(self._fp, self._max_inflated) if self._src[2] else self._fp

    def _first_pass(self) -> tuple[Dataset, list[list[BaseTag] | _Copied]]:
        implicit, little, deflated = self._src
        what = "Deflated data set" if deflated else "data set"
        source = self._source()
        begin = source.tell()
        try:
            if not source.read(1):
                raise TranscodeError(f"the stored data set ({self._src_name}) is empty")
            source.seek(begin)
            reader = _Held(source)
            ds = read_dataset(reader, implicit, little,  # type: ignore[arg-type]
                              defer_size=DEFER_SIZE)
            deferred = {tag: raw for tag in list(ds.keys())
                        if isinstance(raw := ds.get_item(tag, keep_deferred=True), RawDataElement)
                        and raw.value is None and raw.length not in (0, UNDEFINED_LENGTH)}
            end = max([raw.value_tell + raw.length for raw in deferred.values()]
                      + [reader.tell()])
            if end > begin:  # a value skipped at the end must be there whole
                reader.seek(end - 1)
                reader.read(1)
            for tag in deferred:
                del ds[tag]
            for _ in ds.iterall():  # a malformed value fails here, as one TranscodeError
                pass
        except TranscodeError:
            raise
        except InflateError as exc:
            if exc.too_large:
                raise TranscodeError(f"the stored Deflated data set inflates beyond "
                                     f"{self._max_inflated} bytes") from None
            raise TranscodeError(f"the stored Deflated data set {exc}") from None
        except Exception as exc:  # a stored file can break pydicom in any way
            raise TranscodeError(f"cannot decode the stored {what} ({self._names}): "
                                 f"{one_line(exc)}") from exc
        try:
            return self._prepare(ds, deferred)
        except TranscodeError:
            raise
        except Exception as exc:
            raise TranscodeError(f"cannot convert {self._names}: {one_line(exc)}") from exc

    def _prepare(self, ds: Dataset, deferred: dict[BaseTag, RawDataElement]
                 ) -> tuple[Dataset, list[list[BaseTag] | _Copied]]:
        """Final VRs and byte order of the held elements; the plan of runs and copies."""
        _, little, _ = self._dst
        ds = correct_ambiguous_vr(ds, little)  # the final VRs, before any byte swap
        if self._src[1] != little:
            swap_words(ds)
        charset = ds.get("SpecificCharacterSet")
        copies = {}
        for tag, raw in deferred.items():
            placeholder = convert_raw_data_element(raw._replace(value=b"", length=0),
                                                   encoding=charset, ds=ds)
            vr = str(correct_ambiguous_vr_element(placeholder, ds, little).VR)
            size = _COPY_WORD_SIZE.get(vr)
            if self._src[1] != little and size and raw.length % size:
                raise TranscodeError(f"{tag} ({vr}) has {raw.length} bytes, not a multiple "
                                     f"of {size}: cannot change its byte order")
            copies[tag] = _Copied(int(tag), vr, raw.value_tell, raw.length)
        plan: list[list[BaseTag] | _Copied] = []
        for tag in sorted([*ds.keys(), *copies]):
            if tag in copies:
                plan.append(copies[tag])
            elif plan and isinstance(plan[-1], list):
                plan[-1].append(tag)
            else:
                plan.append([tag])
        return ds, plan

    # --- pass 2 -----------------------------------------------------------------------

    def _produce(self) -> Iterator[bytes]:
        packer = Deflater() if self._dst[2] else None
        for piece in self._pieces():
            out = packer.compress(piece) if packer else piece
            if out:
                yield out
        if packer is not None:
            yield packer.finish()

    def _pieces(self) -> Iterator[bytes]:
        charset = self._ds.get("SpecificCharacterSet", "iso8859")
        buffer = self._buffer()
        source = self._source()
        for step in self._plan:
            if isinstance(step, list):
                for tag in step:
                    if tag.element == 0 and tag.group > 6:
                        continue  # retired Group Length (PS3.5 §7.2): wrong once lengths change
                    write_data_element(buffer, self._ds[tag], charset)
                    if buffer.tell() >= CHUNK:
                        yield buffer.getvalue()
                        buffer = self._buffer()
                continue
            if buffer.tell():
                yield buffer.getvalue()
                buffer = self._buffer()
            yield self._header(step)
            yield from self._copy(source, step)
        if buffer.tell():
            yield buffer.getvalue()

    def _buffer(self) -> DicomBytesIO:
        fp = DicomBytesIO()
        fp.is_implicit_VR, fp.is_little_endian = self._dst[0], self._dst[1]
        return fp

    def _header(self, copy: _Copied) -> bytes:
        implicit, little, _ = self._dst
        order = "<" if little else ">"
        group, element = copy.tag >> 16, copy.tag & 0xFFFF
        length = copy.length + copy.length % 2  # PS3.5 §7.1.1: even length
        if implicit:
            return struct.pack(f"{order}HHI", group, element, length)
        vr = copy.vr if copy.vr in _LONG_VRS or length <= MAX_SHORT_LENGTH else "UN"
        if vr in _LONG_VRS:
            return struct.pack(f"{order}HH2sHI", group, element, vr.encode(), 0, length)
        return struct.pack(f"{order}HH2sH", group, element, vr.encode(), length)

    def _copy(self, source: BinaryIO | InflatingReader, copy: _Copied) -> Iterator[bytes]:
        size = _COPY_WORD_SIZE.get(copy.vr) if self._src[1] != self._dst[1] else None
        source.seek(copy.position)
        left = copy.length
        while left:
            piece = source.read(min(CHUNK, left))
            if not piece:
                raise TranscodeError(f"the stored data set ended inside {BaseTag(copy.tag)}")
            left -= len(piece)
            yield _swapped(piece, size) if size else piece
        if copy.length % 2:
            yield b" " if copy.vr in _TEXT_VRS else b"\0"

    # --- the file-like ----------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = CHUNK if size is None or size < 0 else size
        while len(self._pending) < want:
            piece = next(self._output, None)
            if piece is None:
                break
            self._pending += piece
        out = bytes(self._pending[:want])
        del self._pending[:want]
        return out

    def readall(self) -> bytes:
        return b"".join(iter(lambda: self.read(CHUNK), b""))

    def close(self) -> None:
        if not self.closed:
            self._fp.close()
            self._pending = bytearray()
        super().close()
