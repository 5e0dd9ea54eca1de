"""Part 10 files named by SOP Instance UID in one plain folder (what `minipacs get` writes).

Unlike the archive store (storage/filesystem.py), the names are the instances' UIDs, so a
user finds a file by its UID; the UID is checked against the UID grammar (PS3.5 §9.1) first,
so a received value can never name a path outside the folder. Each file is written to a
hidden temporary name and renamed when complete: a reader never sees half a file, and an
interrupted run leaves only ``.*.part`` files behind. Methods block (meant for a thread).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Final

from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info

from ..ports import FileMeta, OutOfResources, StorageError, StoredFile
from ..proto.uid import is_valid_uid

__all__ = ["FolderFile", "FolderWriter"]

SUFFIX: Final = ".dcm"
PART_SUFFIX: Final = ".part"
CHECKSUM_ALGORITHM: Final = "sha256"
# errno values that mean "no room": PS3.4 B.2.3 0xA700 Out of Resources.
_NO_ROOM: Final = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def _error(exc: OSError, what: str) -> StorageError:
    if exc.errno in _NO_ROOM:
        return OutOfResources(f"{what}: {os.strerror(exc.errno or 0)}")
    return StorageError(f"{what}: {exc.strerror or exc}")


class FolderFile:
    """One file being written: header, then data-set bytes as received; a `ports.Spool`."""

    def __init__(self, final: Path, header: bytes) -> None:
        self._final = final
        self._digest = hashlib.new(CHECKSUM_ALGORITHM, header)
        self._offset = self._size = len(header)
        self._done = False
        try:
            fd, name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=PART_SUFFIX,
                                        dir=final.parent)
        except OSError as exc:
            raise _error(exc, "cannot create a file") from exc
        self._path = Path(name)
        self._fp = os.fdopen(fd, "wb")
        self._write(header)

    @property
    def size(self) -> int:
        return self._size

    @property
    def path(self) -> Path:
        """The final path (the file exists there only after `commit`)."""
        return self._final

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._fp.write(data)
        except OSError as exc:
            self.discard()
            raise _error(exc, "cannot write") from exc

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append data-set bytes; on an error the partial file is removed before raising."""
        if self._done:
            raise StorageError("file already committed or discarded")
        self._write(data)
        self._digest.update(data)
        self._size += len(data)

    def commit(self) -> StoredFile:
        """Close and rename to `<UID>.dcm` (an existing file of that instance is replaced)."""
        if self._done:
            raise StorageError("file already committed or discarded")
        try:
            self._fp.close()
            os.replace(self._path, self._final)
        except OSError as exc:
            self.discard()
            raise _error(exc, "cannot finish") from exc
        self._done = True
        return StoredFile(self._final.name, self._size,
                          f"{CHECKSUM_ALGORITHM}:{self._digest.hexdigest()}", self._offset)

    def discard(self) -> None:
        """Remove the partial file; safe to call twice."""
        self._done = True
        with contextlib.suppress(OSError):
            self._fp.close()
        with contextlib.suppress(OSError):
            self._path.unlink(missing_ok=True)


class FolderWriter:
    """Writes received instances as `<folder>/<SOP Instance UID>.dcm` (PS3.10 files)."""

    def __init__(self, folder: Path, *, implementation_class_uid: str,
                 implementation_version_name: str) -> None:
        self.folder = Path(folder)
        self._implementation = (implementation_class_uid, implementation_version_name)

    def prepare(self) -> None:
        """Create the folder (and its parents); raises StorageError with the reason."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _error(exc, f"cannot create {self.folder}") from exc
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise StorageError(f"cannot write to {self.folder}: permission denied")

    def open_spool(self, meta: FileMeta) -> FolderFile:
        """A new file for one instance; its SOP Instance UID must be a valid UID."""
        uid = meta.sop_instance_uid.rstrip("\0 ")
        if not is_valid_uid(uid):  # digits and dots only: a safe file name
            raise ValueError(f"not a valid SOP Instance UID: {uid[:64]!r}")
        return FolderFile(self.folder / f"{uid}{SUFFIX}", self.part10_header(meta))

    def part10_header(self, meta: FileMeta) -> bytes:
        """Preamble, "DICM" and the File Meta Information group (PS3.10 §7.1)."""
        file_meta = FileMetaDataset()
        file_meta.MediaStorageSOPClassUID = meta.sop_class_uid
        file_meta.MediaStorageSOPInstanceUID = meta.sop_instance_uid.rstrip("\0 ")
        file_meta.TransferSyntaxUID = meta.transfer_syntax_uid
        file_meta.ImplementationClassUID, file_meta.ImplementationVersionName = \
            self._implementation
        if meta.receiving_ae_title:  # we wrote the file: the Source AE (PS3.10 §7.1)
            file_meta.SourceApplicationEntityTitle = meta.receiving_ae_title
        if meta.sending_ae_title:
            file_meta.SendingApplicationEntityTitle = meta.sending_ae_title
        if meta.receiving_ae_title:
            file_meta.ReceivingApplicationEntityTitle = meta.receiving_ae_title
        fp = DicomBytesIO()
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, file_meta, enforce_standard=True)
        return fp.getvalue()
