"""Deterministic test data for ``benchmarks/ingest.py``, generated with pydicom.

Three kinds of Part 10 files, all Explicit VR Little Endian (PS3.5 §A.2):
- CT Image Storage 512x512 16-bit (~512 KiB each), one study, a few series;
- the same at 64x64 ("tiny", ~10 KiB each, dominated by per-instance overhead);
- one Multi-frame Grayscale Byte SC instance of ~2 GiB, written streaming: pydicom writes
  the file meta and every element before Pixel Data, then the Pixel Data element header
  (PS3.5 §7.1.2, explicit length) and the frames are appended in chunks, so the instance is
  never held in memory.
The same seed gives the same bytes on every run and every machine.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_ROOT_UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.2"
MF_GRAYSCALE_BYTE_SC_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.7.2"
PIXEL_DATA_TAG: Final = (0x7FE0, 0x0010)
SEED: Final = "minipacs-ingest-benchmark-v1"
GROUPS: Final = 16  # an N-association run sends every Nth group on each (N | 16)


@dataclass(frozen=True, slots=True)
class DataSet:
    """A generated folder of instances split round-robin into `GROUPS` sub-folders."""

    name: str
    label: str
    root: Path
    groups: tuple[Path, ...]
    count: int
    total_bytes: int


def _uid(*parts: object) -> str:
    """A UID derived from the seed and `parts` (same inputs, same UID)."""
    return generate_uid(PYDICOM_ROOT_UID, entropy_srcs=[SEED, *map(str, parts)])


def _base(kind: str, study: int, series: int) -> Dataset:
    """Patient/study/series attributes shared by the instances of one series."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = f"Bench^{kind.capitalize()}^Müller"
    ds.PatientID = f"BENCH-{kind.upper()}"
    ds.IssuerOfPatientID = "MINIPACS-BENCH"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = _uid(kind, "study", study)
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"ACC{study:06d}"
    ds.StudyID = str(study + 1)
    ds.StudyDescription = f"Ingest benchmark {kind}"
    ds.ReferringPhysicianName = "Ref^Doctor"
    ds.SeriesInstanceUID = _uid(kind, "series", study, series)
    ds.SeriesNumber = series + 1
    ds.SeriesDescription = f"Series {series + 1}"
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.FrameOfReferenceUID = _uid(kind, "for", study)
    ds.Manufacturer = "minipacs"
    ds.InstitutionName = "Benchmark Hospital"
    return ds


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _ct_instance(base: Dataset, kind: str, number: int, size: int, pixels: bytes) -> Dataset:
    ds = Dataset()
    ds.update(base)
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = _uid(kind, "instance", number)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = number + 1
    ds.ContentDate = base.StudyDate
    ds.ContentTime = base.StudyTime
    ds.ImagePositionPatient = [-250.0, -250.0, -float(number)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceLocation = -float(number)
    ds.SliceThickness = 1.0
    ds.PixelSpacing = [0.9765625, 0.9765625]
    ds.KVP = 120
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.PixelData = pixels
    ds.file_meta = _file_meta(CT_IMAGE_STORAGE, ds.SOPInstanceUID)
    return ds


def make_ct_set(root: Path, name: str, label: str, count: int, size: int,
                series: int) -> DataSet:
    """`count` CT instances of sizexsize 16-bit in one study of `series` series."""
    groups = tuple(root / f"g{i}" for i in range(GROUPS))
    for group in groups:
        group.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{SEED}:{name}")
    bases = [_base(name, 0, s) for s in range(series)]
    total = 0
    for number in range(count):
        # Pseudo-random pixels: no server compresses, but this keeps every file distinct.
        pixels = rng.randbytes(size * size * 2)
        ds = _ct_instance(bases[number % series], name, number, size, pixels)
        path = groups[number % GROUPS] / f"{name}{number:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        total += path.stat().st_size
    return DataSet(name, label, root, groups, count, total)


def write_big_instance(path: Path, frames: int, rows: int, columns: int,
                       chunk_frames: int = 8) -> int:
    """Write one 8-bit multi-frame instance of framesxrowsxcolumns bytes; returns its size."""
    pixel_length = frames * rows * columns
    if pixel_length % 2 or pixel_length >= 0xFFFFFFFF:  # PS3.5 §7.1.1: even, < 2^32 - 1
        raise ValueError(f"pixel data length {pixel_length} cannot be encoded")
    ds = _base("big", 0, 0)
    ds.Modality = "OT"
    ds.SOPClassUID = MF_GRAYSCALE_BYTE_SC_STORAGE
    ds.SOPInstanceUID = _uid("big", "instance", frames, rows, columns)
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameTime = 40.0
    ds.FrameIncrementPointer = (0x0018, 0x1063)  # Frame Time (PS3.3 C.7.6.6)
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.file_meta = _file_meta(MF_GRAYSCALE_BYTE_SC_STORAGE, ds.SOPInstanceUID)
    ds.save_as(path, enforce_file_format=True)
    rng = random.Random(f"{SEED}:big")
    blocks = [rng.randbytes(rows * columns * chunk_frames) for _ in range(3)]
    with path.open("ab") as out:
        # Explicit VR LE element header for OB: tag, VR, 2 reserved bytes, 32-bit length.
        out.write(struct.pack("<HH2sHI", *PIXEL_DATA_TAG, b"OB", 0, pixel_length))
        written = 0
        index = 0
        while written < pixel_length:
            block = blocks[index % len(blocks)][: pixel_length - written]
            out.write(block)
            written += len(block)
            index += 1
    return path.stat().st_size
