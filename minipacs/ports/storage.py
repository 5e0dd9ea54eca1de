"""Storage port: the filesystem store as services see it (spool, commit, read, delete)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Protocol


class StorageError(Exception):
    """The store could not write, rename, read or delete a file."""


class OutOfResources(StorageError):
    """Disk full, file too large or below the free-space watermark (PS3.4 B.2.3: 0xA700)."""


# --- Storage --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileMeta:
    """Per-instance fields of the Part 10 File Meta Information (PS3.10 §7.1)."""

    sop_class_uid: str  # (0002,0002) from the C-STORE command's Affected SOP Class UID
    sop_instance_uid: str  # (0002,0003) from the command's Affected SOP Instance UID
    transfer_syntax_uid: str  # (0002,0010) of the presentation context
    sending_ae_title: str  # (0002,0017) the calling AE title
    receiving_ae_title: str  # (0002,0018) the called AE title


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A committed file: where it is and what was written.

    ``size`` and ``checksum`` cover the whole file, header included, so a check is a plain
    hash of the file; ``checksum`` is ``"<algorithm>:<hex digest>"``.
    """

    key: str  # "ab/cd/<uuid4 hex>.dcm", never derived from a received value
    size: int
    checksum: str
    dataset_offset: int  # first byte after the File Meta Information


class Spool(Protocol):
    """A file being received; blocking methods, meant for ``asyncio.to_thread``.

    Hand it large pieces (~1 MiB): one thread hop per PDV costs more than it saves
    (DESIGN principle 14). Not thread-safe: one caller at a time.
    """

    @property
    def size(self) -> int:
        """Bytes written so far, header included."""
        ...

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append data-set bytes. Raises OutOfResources (spool removed) or StorageError."""
        ...

    def commit(self) -> StoredFile:
        """Make the file durable under its final key (`link`, then `sync`); until
        `Storage.release` or `Storage.delete` of that key, a crash is recoverable."""
        ...

    def link(self) -> StoredFile:
        """Give the file its final key without waiting for the disk: `sync` does that, and
        an index row may commit only after it (DESIGN principle 10). Raises StorageError
        (spool removed)."""
        ...

    def sync(self) -> None:
        """Make a linked file durable (data and directory entries). Raises StorageError:
        the file is then not durable and goes with `Storage.delete`."""
        ...

    def discard(self) -> None:
        """Remove the spool file; idempotent, never raises for a missing file."""
        ...


class Storage(Protocol):
    """The store of Part 10 files; blocking methods, meant for ``asyncio.to_thread``."""

    def check_free_space(self) -> None:
        """Raise OutOfResources when free space is under the configured watermark."""
        ...

    def open_spool(self, meta: FileMeta) -> Spool:
        """Create a spool file and write its Part 10 header (PS3.10 §7.1)."""
        ...

    def store(self, meta: FileMeta, data: bytes) -> StoredFile:
        """A whole data set in one call: free-space check, spool, write, commit.

        For a data set already in memory, so it costs one thread hop (DESIGN principle 14).
        Raises OutOfResources or StorageError, leaving nothing behind.
        """
        ...

    def place(self, meta: FileMeta, data: bytes) -> tuple[StoredFile, Spool]:
        """`store` without the wait for the disk: free-space check, spool, write and `link`
        in one call, leaving `Spool.sync` to the caller (to overlap it with the index work).
        Raises OutOfResources or StorageError, leaving nothing behind.
        """
        ...

    def open_dataset(self, key: str, dataset_offset: int | None = None) -> BinaryIO:
        """Open a stored file positioned at its data set (read from the header if None)."""
        ...

    def checksum(self, key: str) -> str:
        """The whole file's checksum as it is now, in the form of `StoredFile.checksum`.

        Raises StorageError when the file cannot be read (a missing one included).
        """
        ...

    def delete(self, key: str) -> None:
        """Remove a stored file (and its intent record); a missing file is not an error."""
        ...

    def release(self, key: str) -> None:
        """The index row of a committed file is durable: drop its intent record.

        Until then a crash leaves the store able to tell the file was never acknowledged
        (DESIGN principle 10). Never blocks: safe to call on the event loop.
        """
        ...
