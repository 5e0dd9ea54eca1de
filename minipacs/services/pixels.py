"""Frames and Part 10 files of stored instances, for retrieval by frame or by media type.

PS3.5 §8.1.1 (native pixel data: frames one after another, each Rows x Columns x Samples
per Pixel x Bits Allocated bits), §8.2 and Annex A.4 (encapsulated: one or more fragments
per frame behind a Basic Offset Table), PS3.10 §7.1 (the File Meta Information), PS3.18
§8.7.3 (media types of compressed frames). Everything here blocks: call it from a thread.

Stored data sets are read with pydicom up to the pixel data (values deferred), so a frame
costs the header parse plus the frame's own bytes, never the whole file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import BinaryIO, Final

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info

from ..proto.sop import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    JPEG_2000,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE_8BIT,
    JPEG_EXTENDED_12BIT,
    JPEG_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    RLE_LOSSLESS,
    dataset_encoding,
)
from .transcode import NATIVE_SYNTAXES, TranscodeError, convert

__all__ = [
    "FRAME_MEDIA_TYPES",
    "FrameError",
    "PixelInfo",
    "part10_header",
    "read_frames",
]

TAG_NUMBER_OF_FRAMES: Final = 0x00280008
TAG_ROWS: Final = 0x00280010
TAG_COLUMNS: Final = 0x00280011
TAG_SAMPLES_PER_PIXEL: Final = 0x00280002
TAG_BITS_ALLOCATED: Final = 0x00280100
TAG_PIXEL_DATA: Final = 0x7FE00010
UNDEFINED_LENGTH: Final = 0xFFFFFFFF
DEFER: Final = 1024  # values above this many bytes are not read while finding the pixels
OCTET_STREAM: Final = "application/octet-stream"

# PS3.18 Table 8.7.3-2: the media type a compressed frame is sent as, by transfer syntax.
FRAME_MEDIA_TYPES: Final[Mapping[str, str]] = MappingProxyType({
    JPEG_BASELINE_8BIT: "image/jpeg",
    JPEG_EXTENDED_12BIT: "image/jpeg",
    JPEG_LOSSLESS: "image/jpeg",
    JPEG_LOSSLESS_SV1: "image/jpeg",
    JPEG_LS_LOSSLESS: "image/jls",
    JPEG_LS_NEAR_LOSSLESS: "image/jls",
    JPEG_2000_LOSSLESS: "image/jp2",
    JPEG_2000: "image/jp2",
    RLE_LOSSLESS: "image/dicom-rle",
})


class FrameError(Exception):
    """Frames that cannot be served: `missing` for a frame number the instance does not
    have (a client error), otherwise the stored data set cannot give them."""

    def __init__(self, reason: str, *, missing: bool = False) -> None:
        super().__init__(reason)
        self.missing = missing


@dataclass(frozen=True, slots=True)
class PixelInfo:
    """Where the pixel data of a stored data set lies and how it is laid out."""

    frames: int
    frame_size: int  # bytes of one native frame (0 for encapsulated data)
    offset: int  # position of the pixel data value in the file
    length: int  # its length (UNDEFINED_LENGTH when encapsulated)

    @property
    def encapsulated(self) -> bool:
        return self.length == UNDEFINED_LENGTH


def _int(ds: Dataset, tag: int, default: int = 0) -> int:
    elem = ds.get(tag)
    if elem is None or elem.value in (None, b"", ""):
        return default
    try:
        return int(elem.value)
    except (TypeError, ValueError):
        raise FrameError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is not a number") from None


def pixel_info(fp: BinaryIO, transfer_syntax: str) -> PixelInfo:
    """Read the data set at `fp`'s position up to its Pixel Data (deferred, PS3.5 §8)."""
    implicit, little, deflated = dataset_encoding(transfer_syntax)
    if deflated:
        raise FrameError("deflated data sets are converted, not read in place")
    try:
        ds = read_dataset(fp, implicit, little, defer_size=DEFER,
                          stop_when=lambda tag, vr, length: int(tag) > TAG_PIXEL_DATA)
    except Exception as exc:
        raise FrameError(f"cannot read the stored data set: {type(exc).__name__}") from exc
    raw = ds.get_item(TAG_PIXEL_DATA, keep_deferred=True)
    if not isinstance(raw, RawDataElement) or raw.value_tell is None:
        raise FrameError("the instance has no Pixel Data", missing=True)
    frames = max(_int(ds, TAG_NUMBER_OF_FRAMES, 1), 1)
    bits = _int(ds, TAG_BITS_ALLOCATED, 8)
    pixels = _int(ds, TAG_ROWS) * _int(ds, TAG_COLUMNS) * _int(ds, TAG_SAMPLES_PER_PIXEL, 1)
    # PS3.5 §8.1.1: 1-bit frames are packed; a frame may end inside a byte.
    frame_size = math.ceil(pixels * bits / 8)
    return PixelInfo(frames, frame_size, raw.value_tell, raw.length)


def _check(numbers: Sequence[int], frames: int) -> None:
    for number in numbers:
        if not 1 <= number <= frames:
            raise FrameError(f"frame {number} does not exist: the instance has {frames}",
                             missing=True)


def _native(fp: BinaryIO, info: PixelInfo, numbers: Sequence[int]) -> list[bytes]:
    if info.frame_size == 0 or info.frame_size * info.frames > info.length:
        raise FrameError("Pixel Data is shorter than its frames")
    out = []
    for number in numbers:
        fp.seek(info.offset + (number - 1) * info.frame_size)
        data = fp.read(info.frame_size)
        if len(data) != info.frame_size:
            raise FrameError("the stored file ends inside a frame")
        out.append(data)
    return out


def _encapsulated(fp: BinaryIO, info: PixelInfo, numbers: Sequence[int]) -> list[bytes]:
    fp.seek(info.offset)
    wanted = set(numbers)
    found: dict[int, bytes] = {}
    try:
        for number, frame in enumerate(generate_frames(fp, number_of_frames=info.frames), 1):
            if number in wanted:
                found[number] = frame
                if len(found) == len(wanted):
                    break
    except Exception as exc:
        raise FrameError(f"cannot split the encapsulated frames: {exc}") from exc
    if len(found) != len(wanted):
        raise FrameError("the encapsulated Pixel Data holds fewer frames than it says")
    return [found[number] for number in numbers]


def read_frames(fp: BinaryIO, transfer_syntax: str, numbers: Sequence[int] | None, *,
                target: str | None = None) -> list[bytes]:
    """Frames `numbers` (1-based; None: all) of the data set at `fp`'s position.

    `target` None: as stored (native frames of a little-endian native syntax, or the
    compressed bitstream of each frame). `target` EXPLICIT_VR_LITTLE_ENDIAN: native frames,
    the data set decompressed or byte-swapped first through the transcoding (in memory).
    """
    stored_native_le = transfer_syntax in NATIVE_SYNTAXES and dataset_encoding(
        transfer_syntax)[1:] == (True, False)
    if target is not None and not stored_native_le:
        try:
            data = convert(fp, transfer_syntax, EXPLICIT_VR_LITTLE_ENDIAN)
        except TranscodeError as exc:
            raise FrameError(str(exc)) from exc
        return read_frames(DicomBytesIO(data), EXPLICIT_VR_LITTLE_ENDIAN, numbers)
    if transfer_syntax in NATIVE_SYNTAXES and not stored_native_le:
        raise FrameError("frames of this transfer syntax are sent converted only")
    info = pixel_info(fp, transfer_syntax)
    if numbers is None:
        numbers = range(1, info.frames + 1)
    _check(numbers, info.frames)
    if info.encapsulated:
        return _encapsulated(fp, info, numbers)
    return _native(fp, info, numbers)


def part10_header(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, "DICM" and File Meta Information for a data set we send (PS3.10 §7.1)."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_file_meta_info(fp, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + fp.getvalue()
