"""Part 10 files to send: walk files and folders, read each file's meta, open its data set.

Used by the C-STORE SCU (`minipacs store`). Only group 0002 is parsed (PS3.10 §7.1): the data
set itself is never decoded, so it is sent bit for bit from its first byte. Every function
blocks; callers hand them to a thread.

Rules (documented in README "minipacs store"):
- a readable file without the "DICM" prefix at byte 128 (or shorter than that) is *skipped*,
  not a failure: folders often hold other files; so is a DICOMDIR, which is not an instance;
- a file that cannot be opened or read, or whose "DICM" header lacks the Media Storage SOP
  Class/Instance UID or Transfer Syntax UID, or has no data set after it, is *unreadable*
  and counts as a failure: it may be an instance the user meant to send.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import MediaStorageDirectoryStorage

from ..proto.uid import MAX_UID_LENGTH, is_valid_uid

__all__ = [
    "DicomFile",
    "FileProblem",
    "ScanResult",
    "open_dataset",
    "read_dicom_file",
    "scan",
    "walk",
]

# PS3.10 §7.1: a 128-byte preamble, then the "DICM" prefix, then group 0002.
PREAMBLE_LENGTH: Final = 128
PREFIX: Final = b"DICM"
HEADER_LENGTH: Final = PREAMBLE_LENGTH + len(PREFIX)
FILE_META_GROUP: Final = 0x0002
_UID_PADDING: Final = "\0 "  # UI values are padded to even length with NUL (PS3.5 §9.1)

# (keyword, tag) of the File Meta elements a C-STORE needs (PS3.10 Table 7.1-1).
_REQUIRED: Final = (
    ("MediaStorageSOPClassUID", "(0002,0002)"),
    ("MediaStorageSOPInstanceUID", "(0002,0003)"),
    ("TransferSyntaxUID", "(0002,0010)"),
)


class NotDicom(Exception):
    """A readable file that is not a Part 10 file: skipped, not a failure."""


class UnreadableDicom(Exception):
    """A file that cannot be read, or a Part 10 file whose meta is unusable: a failure."""


@dataclass(frozen=True, slots=True)
class DicomFile:
    """One Part 10 file to send: what the C-STORE needs and where its data set starts."""

    path: Path
    sop_class_uid: str  # (0002,0002) Media Storage SOP Class UID
    sop_instance_uid: str  # (0002,0003) Media Storage SOP Instance UID
    transfer_syntax_uid: str  # (0002,0010) Transfer Syntax UID
    dataset_offset: int  # first byte after the File Meta Information
    dataset_size: int  # bytes from there to the end of the file

    @property
    def source(self) -> str:
        """Where it came from, for messages."""
        return str(self.path)


@dataclass(frozen=True, slots=True)
class FileProblem:
    """A file that is not sent, and why."""

    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What `scan` found: files to send, files skipped, files that failed to read."""

    files: tuple[DicomFile, ...]
    skipped: tuple[FileProblem, ...]
    unreadable: tuple[FileProblem, ...]


def walk(paths: Iterable[Path]) -> Iterator[Path | FileProblem]:
    """Every file under `paths` (folders recursively, sorted), each once; unlistable folders.

    Symbolic links to files are followed; links to folders are not (no cycles). A folder
    that cannot be listed comes back as a FileProblem.
    """
    seen: set[str] = set()
    for top in paths:
        candidates: Iterable[Path | FileProblem] = _walk_folder(top) if top.is_dir() else (top,)
        for entry in candidates:
            if isinstance(entry, FileProblem):
                yield entry
                continue
            real = os.path.realpath(entry)
            if real not in seen:
                seen.add(real)
                yield entry


def _walk_folder(top: Path) -> Iterator[Path | FileProblem]:
    problems: list[OSError] = []
    for folder, dirs, names in os.walk(top, onerror=problems.append):
        dirs.sort()
        while problems:
            exc = problems.pop()
            yield FileProblem(Path(exc.filename or folder), f"cannot list folder: "
                                                           f"{exc.strerror or exc}")
        for name in sorted(names):
            yield Path(folder, name)
    for exc in problems:
        yield FileProblem(Path(exc.filename or top), f"cannot list folder: {exc.strerror or exc}")


def _not_file_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag >> 16 != FILE_META_GROUP


def read_dicom_file(path: Path) -> DicomFile:
    """Read the File Meta Information of `path` (PS3.10 §7.1).

    Raises NotDicom (no "DICM" prefix, or a DICOMDIR) or UnreadableDicom.
    """
    try:
        with open(path, "rb") as fp:
            header = fp.read(HEADER_LENGTH)
            if len(header) < HEADER_LENGTH or header[PREAMBLE_LENGTH:] != PREFIX:
                raise NotDicom("not a DICOM file (no DICM prefix)")
            try:
                # Group 0002 is Explicit VR Little Endian (pydicom also copes with the
                # implicit VR some old writers used); reading stops at the data set.
                meta = read_dataset(fp, is_implicit_VR=False, is_little_endian=True,
                                    stop_when=_not_file_meta)
                values = [_uid_value(meta, keyword, tag) for keyword, tag in _REQUIRED]
            except UnreadableDicom:
                raise
            except Exception as exc:  # pydicom raises many types on a damaged header
                raise UnreadableDicom(f"cannot read the file meta information: {exc}") from exc
            offset = fp.tell()
            size = os.fstat(fp.fileno()).st_size
    except OSError as exc:
        raise UnreadableDicom(f"cannot read: {exc.strerror or exc}") from exc
    sop_class, sop_instance, transfer_syntax = values
    if sop_class == MediaStorageDirectoryStorage:
        raise NotDicom("DICOMDIR (a media directory, not an instance)")
    if offset >= size:
        raise UnreadableDicom("no data set after the file meta information")
    return DicomFile(path, sop_class, sop_instance, transfer_syntax, offset, size - offset)


def _uid_value(meta: object, keyword: str, tag: str) -> str:
    value = str(getattr(meta, keyword, "") or "").rstrip(_UID_PADDING)
    if not value:
        raise UnreadableDicom(f"no {keyword} {tag} in the file meta information")
    if len(value) > MAX_UID_LENGTH:
        raise UnreadableDicom(f"{keyword} {tag} longer than {MAX_UID_LENGTH} characters")
    if not is_valid_uid(value):  # PS3.5 §9.1, the one grammar
        raise UnreadableDicom(f"{keyword} {tag} is not a UID: {value!r}")
    return value


def scan(paths: Iterable[Path]) -> ScanResult:
    """Walk `paths` and sort every file into sendable, skipped or unreadable."""
    files: list[DicomFile] = []
    skipped: list[FileProblem] = []
    unreadable: list[FileProblem] = []
    with warnings.catch_warnings():
        # pydicom warns about each odd header it reads; what matters is in our reasons.
        warnings.simplefilter("ignore")
        for entry in walk(paths):
            if isinstance(entry, FileProblem):
                unreadable.append(entry)
                continue
            try:
                files.append(read_dicom_file(entry))
            except NotDicom as exc:
                skipped.append(FileProblem(entry, str(exc)))
            except UnreadableDicom as exc:
                unreadable.append(FileProblem(entry, str(exc)))
    return ScanResult(tuple(files), tuple(skipped), tuple(unreadable))


def open_dataset(file: DicomFile) -> BinaryIO:
    """Open `file` positioned at its first data-set byte (the caller closes it)."""
    fp = open(file.path, "rb")  # noqa: SIM115 - handed to the caller
    try:
        fp.seek(file.dataset_offset)
    except BaseException:
        fp.close()
        raise
    return fp
