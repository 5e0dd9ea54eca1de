"""What the index reads from a stored data set: pydicom parsing, bounded, into DICOM JSON.

Runs in a worker thread. The file is parsed from its data-set offset with the transfer
syntax already known (no second read of the Part 10 header), stopping before Pixel Data;
values over ``defer_size`` are never read, and bulk values (PS3.18 F.2.6 VRs over
``bulk_threshold`` bytes, at any depth) never reach the JSON (`dicomjson`). Deflated data
sets are inflated lazily through a bounded window, so neither a zip bomb nor a huge element
costs more than the configured budgets.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from ..ports import DataSetError, InstanceAttributes, JsonDataset
from .dicomjson import dataset_json

__all__ = [
    "DEFLATED_TRANSFER_SYNTAXES",
    "AttributeReader",
    "ExtractLimits",
    "read_attributes",
    "split_levels",
]

# Transfer syntaxes whose whole data set is deflated (PS3.5 §A.5, PS3.5 §A.6 JPIP).
DEFLATED_TRANSFER_SYNTAXES: Final = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})

TAG_SPECIFIC_CHARACTER_SET: Final = 0x00080005
TAG_SOP_CLASS_UID: Final = 0x00080016
TAG_SOP_INSTANCE_UID: Final = 0x00080018
TAG_STUDY_INSTANCE_UID: Final = 0x0020000D
TAG_SERIES_INSTANCE_UID: Final = 0x0020000E
TAG_PATIENT_ID: Final = 0x00100020
TAG_ISSUER_OF_PATIENT_ID: Final = 0x00100021
LO_MAX_CHARS: Final = 64  # PS3.5 Table 6.2-1: Long String
TAG_FIRST_PIXEL_ELEMENT: Final = 0x7FE00008  # Float Pixel Data; then Double Float, Pixel Data
GROUP_PATIENT: Final = 0x0010

# Level membership of the attributes that are not patient-level group 0010 (PS3.3 C.7.2.2
# Patient Study module, C.7.2.1 General Study, C.7.3.1 General Series, C.7.5.1 General
# Equipment, C.7.4.1 Frame of Reference; PS3.4 C.6.1.1.3/C.6.1.1.4 study and series keys).
STUDY_TAGS: Final = frozenset({
    0x00080020, 0x00080030, 0x00080050, 0x00080051, 0x00080090, 0x00080096, 0x0008009C,
    0x0008009D, 0x00081030, 0x00081032, 0x00081048, 0x00081049, 0x00081060, 0x00081062,
    0x00081080, 0x00081084, 0x00081110, 0x0020000D, 0x00200010, 0x00201070, 0x00321034,
    0x00401012,
    # Patient Study module: group 0010 but study-level
    0x00101010, 0x00101020, 0x00101021, 0x00101022, 0x00101023, 0x00101024, 0x00102180,
    0x001021A0, 0x001021B0, 0x001021C0, 0x001021D0, 0x00102203,
})
SERIES_TAGS: Final = frozenset({
    0x00080021, 0x00080031, 0x00080060, 0x00080070, 0x00080080, 0x00080081, 0x00081010,
    0x0008103E, 0x0008103F, 0x00081040, 0x00081050, 0x00081052, 0x00081070, 0x00081072,
    0x00081090, 0x00081111, 0x00081250, 0x00180015, 0x00181000, 0x00181020, 0x00181030,
    0x00181200, 0x00181201, 0x00185100, 0x0020000E, 0x00200011, 0x00200052, 0x00200060,
    0x00201040, 0x00400244, 0x00400245, 0x00400250, 0x00400251, 0x00400253, 0x00400254,
    0x00400260, 0x00400275, 0x00400280,
    0x00102210,  # Anatomical Orientation Type: group 0010 but series-level
})


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    """Bounds on what one parse may cost."""

    defer_size: int = 1 << 20  # values larger than this are skipped, never read
    bulk_threshold: int = 1024  # bulk-capable values larger than this stay out of the JSON
    max_read: int = 64 << 20  # bytes parsed into memory (nested sequences are not deferred)
    max_inflate: int = 1 << 30  # inflated bytes walked through, read or skipped


class _BudgetReader:
    """A read-only view of `fp` that refuses to hand out more than `budget` bytes."""

    def __init__(self, fp: BinaryIO, budget: int) -> None:
        self._fp = fp
        self._left = budget
        self._budget = budget

    def read(self, size: int = -1) -> bytes:
        if size > self._left:  # refuse before reading: a huge nested value is never loaded
            raise DataSetError(f"attributes exceed {self._budget} bytes")
        data = self._fp.read(size if size >= 0 else self._left + 1)
        self._left -= len(data)
        if self._left < 0:
            raise DataSetError(f"attributes exceed {self._budget} bytes")
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()


class _InflatingReader:
    """Raw deflate (PS3.5 §A.5) inflated on demand, forward-seekable, bounded.

    Holds at most one step of output plus a window for pydicom's short look-backs; skipping
    a deferred value inflates and drops it. `max_inflate` bounds the total work (a bomb).
    """

    STEP: Final = 64 * 1024
    WINDOW: Final = 64 * 1024

    def __init__(self, raw: BinaryIO, budget: int, max_inflate: int) -> None:
        self._raw = raw
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buf = bytearray()
        self._base = 0  # stream position of self._buf[0]
        self._pos = 0
        self._eof = False
        self._inflated = 0
        self._max_inflate = max_inflate
        self._left = budget
        self._budget = budget

    def _fill(self, upto: int) -> None:
        """Inflate until stream position `upto` is buffered, or the stream ends."""
        while not self._eof and self._base + len(self._buf) < upto:
            data = self._z.unconsumed_tail or self._raw.read(self.STEP)
            if data:
                out = self._z.decompress(data, self.STEP)
            else:
                out, self._eof = self._z.flush(), True
            if self._z.eof:
                self._eof = True  # anything after the deflate stream is ignored
            self._inflated += len(out)
            if self._inflated > self._max_inflate:
                raise DataSetError(f"deflated data set inflates past {self._max_inflate} bytes")
            self._buf += out
            drop = min(self._pos - self.WINDOW - self._base, len(self._buf))
            if drop > 0:
                del self._buf[:drop]
                self._base += drop

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = self._left + 1  # "everything" may not exceed the budget either
        elif size > self._left:
            # Refuse before inflating: pydicom never defers values inside sequence items, so
            # a bomb there would otherwise be inflated into memory up to `max_inflate`.
            raise DataSetError(f"attributes exceed {self._budget} bytes")
        self._fill(self._pos + size)
        start = self._pos - self._base
        data = bytes(self._buf[start:start + size])
        self._pos += len(data)
        self._left -= len(data)
        if self._left < 0:
            raise DataSetError(f"attributes exceed {self._budget} bytes")
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self._pos
        elif whence != 0:
            raise OSError("a deflated stream cannot seek from its end")
        if offset < self._base:
            raise OSError("cannot seek back past the inflate window")
        if offset > self._max_inflate:  # skipping there would inflate past the cap: a bomb
            raise DataSetError(f"deflated data set inflates past {self._max_inflate} bytes")
        self._pos = offset
        return offset

    def tell(self) -> int:
        return self._pos


def _stop_before_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
    # int.__ge__: BaseTag's own comparison operators are Python code, called per element.
    return int.__ge__(tag, TAG_FIRST_PIXEL_ELEMENT)


def _first_string(json_ds: JsonDataset, tag: int) -> str:
    """The first value of a string element of a JSON data set, "" when absent or empty."""
    values = json_ds.get(f"{tag:08X}", {}).get("Value") or [""]
    return str(values[0] if values[0] is not None else "").strip()


def split_levels(
    json_ds: JsonDataset,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split a data set into patient, study, series and instance attributes."""
    levels: tuple[dict[str, Any], ...] = ({}, {}, {}, {})
    for key, value in json_ds.items():
        tag = int(key, 16)
        if tag >> 16 == 0x0002 or tag & 0xFFFF == 0 or tag == TAG_SPECIFIC_CHARACTER_SET:
            continue  # the JSON is Unicode: the character set describes the file, not it
        if tag in STUDY_TAGS:
            level = 1
        elif tag in SERIES_TAGS:
            level = 2
        elif tag >> 16 == GROUP_PATIENT:
            level = 0
        else:
            level = 3
        levels[level][key] = value
    patient, study, series, instance = levels
    return patient, study, series, instance


def _parse(data: bytes | BinaryIO, ts: UID, limits: ExtractLimits) -> Dataset:
    source: Any
    fp = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
    if ts in DEFLATED_TRANSFER_SYNTAXES:
        source = _InflatingReader(fp, limits.max_read, limits.max_inflate)
    elif isinstance(data, bytes | bytearray | memoryview) and len(data) <= limits.max_read:
        source = fp  # already in memory and within the budget: nothing to bound
    else:
        source = _BudgetReader(fp, limits.max_read)
    return read_dataset(
        source,
        ts.is_implicit_VR,
        ts.is_little_endian,
        stop_when=_stop_before_pixels,
        defer_size=limits.defer_size,
    )


def read_attributes(
    data: bytes | BinaryIO, transfer_syntax_uid: str, limits: ExtractLimits | None = None
) -> InstanceAttributes:
    """Parse a data set (bytes, or a file at its position) into what the index keeps (F.2)."""
    limits = limits or ExtractLimits()
    ts = UID(transfer_syntax_uid)
    if not ts.is_transfer_syntax:
        raise DataSetError(f"unknown transfer syntax {transfer_syntax_uid}")
    try:
        ds = _parse(data, ts, limits)
        implicit, _ = ds.original_encoding
        if implicit is not None and implicit != ts.is_implicit_VR:
            # pydicom reads on in the VR it detected; the file's Transfer Syntax UID, which
            # comes from the presentation context (PS3.8 §7.1.1.13), would then be false.
            raise DataSetError(f"data set is in {'implicit' if implicit else 'explicit'} VR, "
                               f"not {ts.name}")
        json_ds = dataset_json(ds, limits.bulk_threshold)
    except DataSetError:
        raise
    except Exception as exc:  # a peer's bytes can break pydicom in any way
        raise DataSetError(f"cannot parse data set: {exc}") from exc
    identity = {tag: _first_string(json_ds, tag) for tag in _REQUIRED}
    for tag, what in _REQUIRED.items():
        if not identity[tag]:
            raise DataSetError(f"no {what} in the data set")
    patient_id = _first_string(json_ds, TAG_PATIENT_ID)
    issuer = _first_string(json_ds, TAG_ISSUER_OF_PATIENT_ID)
    # PS3.5 Table 6.2-1: both are LO, at most 64 characters. The index keys patients by them
    # (columns of that length): a longer value is refused, never cut, which could make two
    # patients one (and PostgreSQL would refuse it where SQLite stores it).
    for what, value in (("Patient ID", patient_id), ("Issuer of Patient ID", issuer)):
        if len(value) > LO_MAX_CHARS:
            raise DataSetError(f"{what} is longer than {LO_MAX_CHARS} characters")
    patient, study, series, instance = split_levels(json_ds)
    return InstanceAttributes(
        sop_class_uid=identity[TAG_SOP_CLASS_UID],
        sop_instance_uid=identity[TAG_SOP_INSTANCE_UID],
        study_instance_uid=identity[TAG_STUDY_INSTANCE_UID],
        series_instance_uid=identity[TAG_SERIES_INSTANCE_UID],
        patient_id=patient_id,
        issuer_of_patient_id=issuer,
        patient=patient,
        study=study,
        series=series,
        instance=instance,
    )


@dataclass(frozen=True, slots=True)
class AttributeReader:
    """`ports.AttributeParser`: `read_attributes` within one set of limits."""

    limits: ExtractLimits = ExtractLimits()

    def parse(self, data: bytes | BinaryIO, transfer_syntax_uid: str) -> InstanceAttributes:
        """Parse a data set in memory or at a file's position (blocking). Raises DataSetError."""
        return read_attributes(data, transfer_syntax_uid, self.limits)


_REQUIRED: Final = {
    TAG_SOP_CLASS_UID: "SOP Class UID",
    TAG_SOP_INSTANCE_UID: "SOP Instance UID",
    TAG_STUDY_INSTANCE_UID: "Study Instance UID",
    TAG_SERIES_INSTANCE_UID: "Series Instance UID",
}

