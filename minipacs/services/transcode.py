"""Transfer syntax conversion of a stored data set, for peers that accept nothing else.

Used on the way out of C-MOVE/C-GET only when no accepted context carries the stored
syntax (DESIGN 7). A native source is re-encoded element by element in bounded pieces
(`transcode_stream`: large values are copied, a Deflated source is inflated as it is read,
so a deflate bomb never sits in memory); an encapsulated source is decoded with pydicom in
memory, in a worker thread, once its decoded Pixel Data is known to fit the bound.

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
import io
from collections.abc import Iterable
from typing import BinaryIO, Final

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import correct_ambiguous_vr

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
from .dataset_codec import InflateError, encode_dataset_bytes, plain_bytes, read_plain
from .transcode_stream import NativeStream, TranscodeError, one_line, swap_words

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
    "open_converted",
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

TAG_PIXEL_DATA: Final = 0x7FE00010
TAG_EXTENDED_OFFSET_TABLE: Final = 0x7FE00001
TAG_EXTENDED_OFFSET_TABLE_LENGTHS: Final = 0x7FE00002
TAG_LOSSY_IMAGE_COMPRESSION: Final = 0x00282110
TAG_LOSSY_IMAGE_COMPRESSION_METHOD: Final = 0x00282114
LOSSY: Final = "01"


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


def open_converted(fp: BinaryIO, src_ts: str, dst_ts: str, *,
                   max_inflated: int = MAX_INFLATED) -> BinaryIO:
    """`fp` (a stored data set, positioned at it; owned from here on) readable in `dst_ts`.

    A native source streams element by element in bounded pieces (transcode_stream): a
    Deflated one is inflated as it is read, never whole. An encapsulated source is decoded
    in memory (pixel decoders need whole frames), once its decoded Pixel Data is known to
    fit in `max_inflated` bytes. Raises TranscodeError, before the first byte, with a
    one-line reason for everything that can be known then.
    """
    try:
        if not can_convert(src_ts, dst_ts):
            reason = decoder_missing(src_ts) if dst_ts in NATIVE_SYNTAXES else None
            raise TranscodeError(reason or f"cannot convert {name_of(src_ts)} to "
                                 f"{name_of(dst_ts)}: only native syntaxes are targets")
        if src_ts == dst_ts:
            return fp
        if src_ts in NATIVE_SYNTAXES:
            return NativeStream(fp, src_ts, dst_ts, max_inflated)  # closes fp on error
        raw = fp.read()
    except BaseException:
        fp.close()
        raise
    fp.close()
    return io.BytesIO(_decoded(raw, src_ts, dst_ts, max_inflated))


def convert(data: bytes | BinaryIO, src_ts: str, dst_ts: str, *,
            max_inflated: int = MAX_INFLATED) -> bytes:
    """`data` (a data set, or a file positioned at one) re-encoded from `src_ts` in `dst_ts`,
    whole (for small data sets and tests; C-MOVE/C-GET stream with `open_converted`).

    Raises TranscodeError with a one-line reason.
    """
    if src_ts == dst_ts and isinstance(data, bytes) and can_convert(src_ts, dst_ts):
        return data
    fp = io.BytesIO(data) if isinstance(data, bytes) else data
    with open_converted(fp, src_ts, dst_ts, max_inflated=max_inflated) as out:
        return out.read() if isinstance(out, io.BytesIO) else out.readall()


def _decoded(raw: bytes, src_ts: str, dst_ts: str, max_inflated: int) -> bytes:
    """An encapsulated data set with its Pixel Data decoded, in `dst_ts` (in memory)."""
    ds = _decode(raw, src_ts, max_inflated)
    del raw
    try:
        _check_decoded_size(ds, max_inflated)
        _decompress(ds, src_ts)
        return _encode(ds, dst_ts)
    except TranscodeError:
        raise
    except Exception as exc:  # pydicom and the decoders raise many kinds
        raise TranscodeError(f"cannot convert {name_of(src_ts)} to {name_of(dst_ts)}: "
                             f"{one_line(exc)}") from exc


def _check_decoded_size(ds: Dataset, max_inflated: int) -> None:
    """A compressed Pixel Data may decode to far more than it stores (PS3.3 C.7.6.3)."""
    if TAG_PIXEL_DATA not in ds:
        return
    frames = int(ds.get("NumberOfFrames") or 1)
    size = (int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) * frames
            * int(ds.get("SamplesPerPixel") or 1) * ((int(ds.get("BitsAllocated") or 8) + 7) // 8))
    if size > max_inflated:
        raise TranscodeError(f"the Pixel Data would decode to {size} bytes, beyond "
                             f"{max_inflated} bytes")


def _decode(raw: bytes, src_ts: str, max_inflated: int) -> Dataset:
    try:  # PS3.5 A.5: raw deflate (no zlib header) of an Explicit VR LE data set
        raw = plain_bytes(raw, src_ts, limit=max_inflated)
    except InflateError as exc:
        if exc.too_large:
            raise TranscodeError(f"the stored Deflated data set inflates beyond "
                                 f"{max_inflated} bytes") from None
        raise TranscodeError(f"the stored Deflated data set {exc}") from None
    if not raw:
        raise TranscodeError(f"the stored data set ({name_of(src_ts)}) is empty")
    try:
        ds = read_plain(raw, src_ts, strict=True)
        # Parse every element now: a malformed value fails here, as one TranscodeError.
        for _ in ds.iterall():
            pass
    except Exception as exc:
        raise TranscodeError(f"cannot decode the stored data set ({name_of(src_ts)}): "
                             f"{one_line(exc)}") from exc
    return ds


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
    _, little, _ = dataset_encoding(dst_ts)
    was_little = ds.original_encoding[1]
    ds = correct_ambiguous_vr(ds, little)  # the final VRs, before any byte swap
    if was_little is not None and was_little != little:
        swap_words(ds)
    return encode_dataset_bytes(ds, dst_ts)
