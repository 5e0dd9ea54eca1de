"""Part 10 test files for the C-STORE interop tests: made with pydicom, transcoded by DCMTK.

Six kinds of object (CT, MR, multi-frame, RGB secondary capture, Basic Text SR, Encapsulated
PDF), small and deterministic, written once in Explicit VR Little Endian by pydicom, then
converted to each transfer syntax under test by DCMTK's `dcmconv`, `dcmcrle` and `dcmcjpeg`
(pydicom has no JPEG encoder). Every file is normalised by DCMTK, so what `storescu` puts on
the wire (it re-encodes the data set it read) is byte for byte the file's data set.
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    BasicTextSRStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EncapsulatedPDFStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
)

from tests.support import DCMTK_BIN, UID_ROOT, dcmtk_env

__all__ = [
    "IMAGE_KINDS",
    "KINDS",
    "ROOT",
    "SYNTAXES",
    "Sent",
    "Syntax",
    "base_dataset",
    "check_dcmtk_tools",
    "dataset_bytes",
    "dataset_offset",
    "deflate_bomb",
    "encode_dataset",
    "inflate",
    "kinds_for",
    "make_file",
    "transcode",
    "write_part10",
    "write_raw_part10",
]

ROOT: Final = f"{UID_ROOT}.70"
SIDE: Final = 64  # 64 x 64 images: small, yet several PDVs at storescu's 16 KiB PDUs
FRAMES: Final = 4
TAG_FRAME_TIME: Final = 0x00181063  # Frame Increment Pointer target (PS3.3 C.8.6.3)
PREAMBLE_AND_PREFIX: Final = 128 + 4  # PS3.10 §7.1: preamble, "DICM"
GROUP_LENGTH_ELEMENT: Final = 12  # (0002,0000) UL in Explicit VR LE: tag, VR, length, value
MIB: Final = 1 << 20
UNDEFINED_LENGTH: Final = 0xFFFFFFFF
# PS3.5 §7.1.2 Explicit VR LE header of OB/SQ (tag, VR, reserved, 32-bit length); §7.5 items.
_EXPLICIT_LONG: Final = struct.Struct("<HH2sHI")
_ITEM: Final = struct.Struct("<HHI")


@dataclass(frozen=True, slots=True)
class Syntax:
    """A transfer syntax under test: how DCMTK makes it and how storescu proposes it."""

    name: str
    uid: str
    tool: tuple[str, ...]  # DCMTK converter and its options
    propose: str  # storescu option proposing this syntax (with the uncompressed ones)
    images_only: bool  # an encapsulated syntax: only for objects with Pixel Data


SYNTAXES: Final = (
    Syntax("implicit", ImplicitVRLittleEndian, ("dcmconv", "+ti"), "-xi", False),
    Syntax("explicit", ExplicitVRLittleEndian, ("dcmconv", "+te"), "-xe", False),
    Syntax("deflated", DeflatedExplicitVRLittleEndian, ("dcmconv", "+td"), "-xd", False),
    Syntax("big-endian", ExplicitVRBigEndian, ("dcmconv", "+tb"), "-xb", False),
    Syntax("rle", RLELossless, ("dcmcrle",), "-xr", True),
    Syntax("jpeg-baseline", JPEGBaseline8Bit, ("dcmcjpeg", "+eb", "+un"), "-xy", True),
)

KINDS: Final = ("ct", "mr", "multiframe", "rgb", "text-sr", "pdf")
IMAGE_KINDS: Final = frozenset({"ct", "mr", "multiframe", "rgb"})


@dataclass(frozen=True, slots=True)
class Sent:
    """One file to send and what the index should say about it."""

    kind: str
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    patient_id: str
    patient_name: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    study_date: str


def _pattern(size: int, seed: int) -> bytes:
    """Deterministic bytes that compress a little (so RLE and JPEG have work to do)."""
    return bytes((i // 7 + seed * 31 + (i % SIDE) * 3) & 0xFF for i in range(size))


def _image(ds: Dataset, *, samples: int, bits: int, frames: int = 1, seed: int) -> None:
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.Rows = ds.Columns = SIDE
    ds.BitsAllocated = bits
    ds.BitsStored = 12 if bits == 16 else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = TAG_FRAME_TIME
        ds.FrameTime = 40
    size = SIDE * SIDE * samples * (bits // 8) * frames
    data = _pattern(size, seed)
    if bits == 16:  # keep values within BitsStored (12): clear the top nibble of each pixel
        data = bytes(b & 0x0F if i % 2 else b for i, b in enumerate(data))
    ds.PixelData = data


def _text_sr(ds: Dataset) -> None:
    def code(value: str, meaning: str) -> Sequence:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        return Sequence([item])

    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = code("121070", "Findings")
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = code("121071", "Finding")
    item.TextValue = "No acute abnormality. " * 4
    ds.ContentSequence = Sequence([item])


def _pdf() -> bytes:
    """A small, valid one-page PDF whose size (~3 KiB) exceeds the index's bulk threshold."""
    text = "BT /F1 12 Tf 72 720 Td (minipacs test) Tj ET\n" + "% filler\n" * 300
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        f"<< /Length {len(text)} >>\nstream\n{text}endstream",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("ascii")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode("ascii")
    out += b"".join(f"{offset:010d} 00000 n \n".encode("ascii") for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"\
        .encode("ascii")
    return out + b"\n" * (len(out) % 2)  # OB: even length


_CLASSES: Final = {
    "ct": (CTImageStorage, "CT"),
    "mr": (MRImageStorage, "MR"),
    "multiframe": (MultiFrameGrayscaleByteSecondaryCaptureImageStorage, "OT"),
    "rgb": (SecondaryCaptureImageStorage, "OT"),
    "text-sr": (BasicTextSRStorage, "SR"),
    "pdf": (EncapsulatedPDFStorage, "DOC"),
}


def base_dataset(kind: str, variant: int = 0, *, name: str = "Interop^Store",
                 charset: str | None = None, patient_id: str = "") -> Dataset:
    """A data set of `kind`; `variant` makes its UIDs (and patient) distinct."""
    sop_class, modality = _CLASSES[kind]
    number = KINDS.index(kind) + 1
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{ROOT}.{variant}.{number}.3"
    ds.StudyDate = "20240315"
    ds.StudyTime = "101500"
    ds.SeriesDate = "20240315"
    ds.ContentDate = "20240316"
    ds.ContentTime = "093000.25"
    ds.AccessionNumber = f"ACC{variant}"
    ds.Modality = modality
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.StudyDescription = "Interop store"
    ds.SeriesDescription = kind
    ds.PatientName = name
    ds.PatientID = patient_id or f"PID-{variant}"
    ds.PatientBirthDate = "19600229"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = f"{ROOT}.{variant}.1"
    ds.SeriesInstanceUID = f"{ROOT}.{variant}.{number}.2"
    ds.StudyID = "S1"
    ds.SeriesNumber = number
    ds.InstanceNumber = 1
    if kind == "ct":
        _image(ds, samples=1, bits=16, seed=1)
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
    elif kind == "mr":
        _image(ds, samples=1, bits=16, seed=2)
    elif kind == "multiframe":
        _image(ds, samples=1, bits=8, frames=FRAMES, seed=3)
    elif kind == "rgb":
        _image(ds, samples=3, bits=8, seed=4)
    elif kind == "text-sr":
        _text_sr(ds)
    else:
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
        ds.DocumentTitle = "Report"
        ds.BurnedInAnnotation = "NO"
        ds.ConceptNameCodeSequence = Sequence()
        ds.EncapsulatedDocument = _pdf()
    return ds


def write_part10(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian,
                 *, media_instance_uid: str | None = None) -> Path:
    """Write `ds` as a Part 10 file (a different Media Storage SOP Instance UID if asked)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)  # completes the meta (version, class UID...)
    if media_instance_uid is not None:  # pydicom insists on the data set's UID: edit after
        written = dcmread(path)
        written.file_meta.MediaStorageSOPInstanceUID = media_instance_uid
        written.save_as(path, enforce_file_format=False)
    return path


def check_dcmtk_tools() -> None:
    """Fail (never skip) unless the DCMTK tools used here are DCMTK's (PATH is ignored)."""
    for tool in ("storescu", "dcmconv", "dcmcrle", "dcmcjpeg"):
        result = subprocess.run([str(DCMTK_BIN / tool), "--version"], capture_output=True,
                                text=True, env=dcmtk_env(), timeout=30, check=False)
        output = result.stdout + result.stderr
        assert "dcmtk" in output.lower(), f"{DCMTK_BIN / tool} is not DCMTK's: {output[:200]!r}"


def transcode(source: Path, target: Path, syntax: Syntax) -> Path:
    """`source` converted to `syntax` by DCMTK (blocking: call it off the event loop)."""
    tool, *options = syntax.tool
    result = subprocess.run([str(DCMTK_BIN / tool), *options, str(source), str(target)],
                            capture_output=True, text=True, env=dcmtk_env(), timeout=30,
                            check=False)
    assert result.returncode == 0, f"{tool} failed: {result.stdout}{result.stderr}"
    written = dcmread(target, stop_before_pixels=True)
    assert written.file_meta.TransferSyntaxUID == syntax.uid, (tool, syntax.name)
    return target


def make_file(directory: Path, kind: str, syntax: Syntax, variant: int = 0) -> Sent:
    """The `kind` object in `syntax`, as a Part 10 file under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ds = base_dataset(kind, variant)
    source = write_part10(ds, directory / f"{kind}-{variant}.base.dcm")
    path = transcode(source, directory / f"{kind}-{variant}.{syntax.name}.dcm", syntax)
    sent = dcmread(path, stop_before_pixels=True)
    return Sent(kind=kind, path=path, sop_class_uid=str(sent.SOPClassUID),
                sop_instance_uid=str(sent.SOPInstanceUID), transfer_syntax_uid=syntax.uid,
                patient_id=str(sent.PatientID), patient_name=str(sent.PatientName),
                study_instance_uid=str(sent.StudyInstanceUID),
                series_instance_uid=str(sent.SeriesInstanceUID), modality=str(sent.Modality),
                study_date=str(sent.StudyDate))


def kinds_for(syntax: Syntax) -> Iterable[str]:
    return [kind for kind in KINDS if kind in IMAGE_KINDS or not syntax.images_only]


def dataset_offset(path: Path) -> int:
    """Where a Part 10 file's data set starts: after preamble, prefix and group 0002."""
    meta = read_file_meta_info(path)
    return PREAMBLE_AND_PREFIX + GROUP_LENGTH_ELEMENT + int(meta.FileMetaInformationGroupLength)


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its File Meta Information (PS3.10 §7.1)."""
    return path.read_bytes()[dataset_offset(path):]


def encode_dataset(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """A data set's bytes as a C-STORE peer sends them (no File Meta), deflate excepted."""
    syntax = UID(transfer_syntax)
    fp = DicomBytesIO()
    fp.is_little_endian = syntax.is_little_endian
    fp.is_implicit_VR = syntax.is_implicit_VR
    write_dataset(fp, ds)
    return fp.getvalue()


def deflate_bomb(ds: Dataset, inflated: int, *, nested: bool, tag: int = 0x00420011) -> bytes:
    """A Deflated Explicit VR LE data set (PS3.5 §A.5) whose last value is `inflated` zeros.

    `ds` is written first (its tags must sort before the bomb's); the zeros are an OB value,
    at the top level as `tag` ((0042,0011) Encapsulated Document, or (7FE0,0010) Pixel Data),
    or, when `nested`, as Pixel Data inside an Icon Image Sequence item (PS3.3 C.7.6.1.1.6),
    where no parser defers values.
    Each MiB of zeros deflates to the same ~1 KiB block after a full flush, so a bomb of
    gigabytes costs milliseconds to build.
    """
    if nested:
        head = (_EXPLICIT_LONG.pack(0x0088, 0x0200, b"SQ", 0, UNDEFINED_LENGTH)
                + _ITEM.pack(0xFFFE, 0xE000, UNDEFINED_LENGTH)
                + _EXPLICIT_LONG.pack(0x7FE0, 0x0010, b"OB", 0, inflated))
        tail = _ITEM.pack(0xFFFE, 0xE00D, 0) + _ITEM.pack(0xFFFE, 0xE0DD, 0)
    else:
        head = _EXPLICIT_LONG.pack(tag >> 16, tag & 0xFFFF, b"OB", 0, inflated)
        tail = b""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [compressor.compress(encode_dataset(ds) + head), compressor.flush(zlib.Z_FULL_FLUSH)]
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(inflated, MIB)
    out.append(block * whole)
    out += [compressor.compress(bytes(rest) + tail), compressor.flush()]
    return b"".join(out)


def write_raw_part10(path: Path, sop_class: str, sop_instance: str, transfer_syntax: str,
                     data: bytes) -> Path:
    """A Part 10 file around data-set bytes made by hand (PS3.10 §7.1)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = f"{ROOT}.99"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, meta, enforce_standard=True)
    path.write_bytes(b"\x00" * 128 + b"DICM" + fp.getvalue() + data)
    return path


def inflate(data: bytes) -> bytes:
    """A Deflated Explicit VR Little Endian data set, inflated (PS3.5 §A.5)."""
    return zlib.decompress(data, -zlib.MAX_WBITS)

