"""Transfer syntax conversion of a stored data set, for peers that accept nothing else.

Used on the way out of C-MOVE/C-GET only when no accepted context carries the stored
syntax (DESIGN 7): the data set is decoded with pydicom and re-encoded, in memory, so it
runs in a worker thread. Streaming from the file stays the no-conversion path.

Rules (docs/conformance.md "C-MOVE and C-GET"):
- targets are the native syntaxes (PS3.5 A.1, A.2, A.3, A.5): Explicit VR LE, Implicit VR
  LE, Deflated Explicit VR LE and the retired Explicit VR BE; sources are those plus any
  encapsulated syntax whose pixel data a pydicom decoder installed here can decode (the
  `codecs` extra: pylibjpeg with its libjpeg, openjpeg and rle plugins; numpy);
- Implicit → explicit: each element's VR comes from pydicom's data dictionaries (public,
  and private ones keyed by Private Creator); an element neither knows becomes UN with its
  value bytes unchanged (PS3.5 §6.2.2) — an implicit undefined-length one is read as SQ;
  ambiguous VRs (US or SS, OB or OW) are resolved from Pixel Representation and Bits
  Allocated (pydicom's `correct_ambiguous_vr`);
- private elements are kept as they are; Group Length elements (gggg,0000) above group
  0006 are dropped (retired, PS3.5 §7.2, and wrong once lengths change);
- values of odd length are padded to even length (PS3.5 §7.1.1);
- between byte orders, OW/OL/OF/OD/OV values are byte-swapped by their word size; UN values
  are copied as they are (their VR, hence their word size, is unknown);
- decompression replaces Pixel Data with the native frames (OB when Bits Allocated ≤ 8,
  else OW), YBR colour to RGB with Planar Configuration 0 as pydicom's decoders do, drops
  the Extended Offset Table (only allowed with encapsulated pixel data, PS3.3 C.7.6.3.1.8)
  and keeps every lossy-compression attribute: once "01", Lossy Image Compression stays
  "01" (PS3.3 C.7.6.1.1.5); it is set to "01" when the stored syntax is a lossy JPEG
  process and the data set did not say so. The SOP Instance UID is kept.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable
from typing import BinaryIO, Final

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import correct_ambiguous_vr, write_dataset

from ..proto.sop import (
    ENCAPSULATED_TRANSFER_SYNTAXES,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_BASELINE_8BIT,
    JPEG_EXTENDED_12BIT,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    dataset_encoding,
    name_of,
)

__all__ = [
    "CODECS_HINT",
    "FALLBACK_SYNTAXES",
    "MAX_INFLATED",
    "NATIVE_SYNTAXES",
    "TranscodeError",
    "can_convert",
    "choose_syntax",
    "convert",
    "decoder_missing",
]

# Conversion targets, in our order of preference (PS3.5 §10.1: Implicit LE is the default
# every AE supports; Explicit LE first because it keeps VRs, e.g. of private elements).
NATIVE_SYNTAXES: Final = UNCOMPRESSED_TRANSFER_SYNTAXES
# What C-MOVE proposes for every SOP class besides its stored syntaxes (one context each).
FALLBACK_SYNTAXES: Final = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
CODECS_HINT: Final = "reinstall minipacs (it depends on pylibjpeg and its plugins)"
# Largest inflated Deflated data set we convert; PS3.5 §8.1.1 caps a value at 2^32-2 bytes.
MAX_INFLATED: Final = 1 << 32
# JPEG processes that are lossy by construction (DCT): decoding them never undoes the loss.
LOSSY_JPEG: Final = {JPEG_BASELINE_8BIT: "ISO_10918_1", JPEG_EXTENDED_12BIT: "ISO_10918_1"}

ELEMENT_HEADER: Final = 8  # tag + (VR +) length: what a reader asks for first (PS3.5 §7.1)
TAG_PIXEL_DATA: Final = 0x7FE00010
TAG_EXTENDED_OFFSET_TABLE: Final = 0x7FE00001
TAG_EXTENDED_OFFSET_TABLE_LENGTHS: Final = 0x7FE00002
TAG_LOSSY_IMAGE_COMPRESSION: Final = 0x00282110
TAG_LOSSY_IMAGE_COMPRESSION_METHOD: Final = 0x00282114
LOSSY: Final = "01"
# Word size of the binary VRs whose values change with the byte order (PS3.5 Table 6.2-1).
WORD_SIZE: Final = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


class TranscodeError(Exception):
    """A data set that cannot be converted; str() is one line in words."""


@functools.cache
def decoder_missing(transfer_syntax: str) -> str | None:
    """None when pixel data in `transfer_syntax` can be decoded here, else why not."""
    if transfer_syntax in NATIVE_SYNTAXES:
        return None
    if transfer_syntax not in ENCAPSULATED_TRANSFER_SYNTAXES:
        return f"{name_of(transfer_syntax)} is not a transfer syntax minipacs converts"
    from pydicom.pixels import get_decoder  # imports numpy lazily; kept off module import

    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        return f"no pixel data decoder exists for {name_of(transfer_syntax)}"
    if decoder.is_available:
        return None
    return f"no decoder installed for {name_of(transfer_syntax)}: {CODECS_HINT}"


def can_convert(src_ts: str, dst_ts: str) -> bool:
    """True when a data set stored in `src_ts` can be sent in `dst_ts` (cheap, cached)."""
    if src_ts == dst_ts:
        return True
    return dst_ts in NATIVE_SYNTAXES and decoder_missing(src_ts) is None


def choose_syntax(stored_ts: str, accepted: Iterable[str]) -> str | None:
    """The syntax to send a `stored_ts` data set in, among `accepted`: the stored one, else
    the first convertible target in NATIVE_SYNTAXES order; None when nothing fits."""
    offered = set(accepted)
    if stored_ts in offered:
        return stored_ts
    return next((ts for ts in NATIVE_SYNTAXES
                 if ts in offered and can_convert(stored_ts, ts)), None)


def convert(data: bytes | BinaryIO, src_ts: str, dst_ts: str, *,
            max_inflated: int = MAX_INFLATED) -> bytes:
    """`data` (a data set, or a file positioned at one) re-encoded from `src_ts` in `dst_ts`.

    Raises TranscodeError with a one-line reason.
    """
    if not can_convert(src_ts, dst_ts):
        reason = decoder_missing(src_ts) if dst_ts in NATIVE_SYNTAXES else None
        raise TranscodeError(reason or f"cannot convert {name_of(src_ts)} to "
                             f"{name_of(dst_ts)}: only native syntaxes are targets")
    raw = data if isinstance(data, bytes) else data.read()
    if src_ts == dst_ts:
        return raw
    ds = _decode(raw, src_ts, max_inflated)
    del raw
    try:
        if src_ts not in NATIVE_SYNTAXES:
            _decompress(ds, src_ts)
        return _encode(ds, dst_ts)
    except TranscodeError:
        raise
    except Exception as exc:  # pydicom and the decoders raise many kinds
        raise TranscodeError(f"cannot convert {name_of(src_ts)} to {name_of(dst_ts)}: "
                             f"{_one_line(exc)}") from exc


def _decode(raw: bytes, src_ts: str, max_inflated: int) -> Dataset:
    implicit, little, deflated = dataset_encoding(src_ts)
    if deflated:  # PS3.5 A.5: raw deflate (no zlib header) of an Explicit VR LE data set
        inflater = zlib.decompressobj(wbits=-zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(raw, max_inflated)
        except zlib.error as exc:
            raise TranscodeError(f"the stored Deflated data set is corrupt: {exc}") from None
        if inflater.unconsumed_tail:
            raise TranscodeError(f"the stored Deflated data set inflates beyond "
                                 f"{max_inflated} bytes")
    if not raw:
        raise TranscodeError(f"the stored data set ({name_of(src_ts)}) is empty")
    try:
        ds = read_dataset(_strict_reader(raw), implicit, little)
        # Parse every element now: a malformed value fails here, as one TranscodeError.
        for _ in ds.iterall():
            pass
    except Exception as exc:
        raise TranscodeError(f"cannot decode the stored data set ({name_of(src_ts)}): "
                             f"{_one_line(exc)}") from exc
    return ds


def _strict_reader(raw: bytes) -> DicomBytesIO:
    """A reader that fails on a data set cut inside an element (pydicom reads on)."""
    fp = DicomBytesIO(raw)
    read = fp.read

    def strict(size: int = -1, /) -> bytes:
        data = read(size)
        # An empty 8-byte read is the end of the data set (no next element header).
        if size > 0 and len(data) < size and (data or size != ELEMENT_HEADER):
            raise TranscodeError(f"the data set ({len(raw)} bytes) ends inside an element")
        return data

    fp.read = strict  # type: ignore[method-assign]
    return fp


def _decompress(ds: Dataset, src_ts: str) -> None:
    """Replace encapsulated Pixel Data by native frames (pydicom's decoders)."""
    if TAG_PIXEL_DATA not in ds:
        return  # e.g. an SR sent in a compressed syntax: nothing to decode
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = src_ts
    ds.decompress(generate_instance_uid=False, as_rgb=True)
    del ds.file_meta
    for tag in (TAG_EXTENDED_OFFSET_TABLE, TAG_EXTENDED_OFFSET_TABLE_LENGTHS):
        if tag in ds:
            del ds[tag]
    method = LOSSY_JPEG.get(src_ts)
    if method is not None and TAG_LOSSY_IMAGE_COMPRESSION not in ds:
        ds.LossyImageCompression = LOSSY  # PS3.3 C.7.6.1.1.5
        if TAG_LOSSY_IMAGE_COMPRESSION_METHOD not in ds:
            ds.LossyImageCompressionMethod = method


def _encode(ds: Dataset, dst_ts: str) -> bytes:
    implicit, little, deflated = dataset_encoding(dst_ts)
    was_little = ds.original_encoding[1]
    ds = correct_ambiguous_vr(ds, little)  # the final VRs, before any byte swap
    if was_little is not None and was_little != little:
        _swap_words(ds)
    fp = DicomBytesIO()
    fp.is_little_endian = little
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    out = fp.getvalue()
    if deflated:
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        out = packer.compress(out) + packer.flush()
    return out


def _swap_words(ds: Dataset) -> None:
    """Byte-swap OW/OL/OF/OD/OV values, nested ones included (pydicom copies bytes as-is)."""
    for elem in ds.iterall():
        size = WORD_SIZE.get(str(elem.VR))
        value = elem.value
        if size is None or not isinstance(value, bytes | bytearray) or not value:
            continue
        if len(value) % size:
            raise TranscodeError(f"{elem.tag} ({elem.VR}) has {len(value)} bytes, not a "
                                 f"multiple of {size}: cannot change its byte order")
        swapped = bytearray(len(value))
        for i in range(size):
            swapped[i::size] = value[size - 1 - i::size]
        elem.value = bytes(swapped)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]

