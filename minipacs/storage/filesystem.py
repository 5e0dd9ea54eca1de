"""The filesystem store: Part 10 files under ``<root>/ab/cd/<uuid4>.dcm``, spooled first.

Every method blocks; callers hand them to a thread in large pieces (DESIGN principle 14).
Durability order (DESIGN principle 10): spool → fdatasync → link to the final key → fsync the
directory (and the parent of a fan-out directory just created, by this or a concurrent
commit) → index commit → `release`. Keys are uuid4-based, never a received value, so a
re-sent instance never overwrites a file another index row points to.

Crash recovery needs no scan of the store: the spool entry is the intent record
(storage/spool.py). Releasing an entry costs no system call on the event loop: released keys
are queued and their entries removed by the next call that runs in a thread.

Checksum: SHA-256 over the whole file, header included, computed while writing. Measured
here (2 cores, SHA-NI): SHA-256 1.8 GB/s, BLAKE2b 1.2 GB/s, MD5 0.76 GB/s, CRC-32 5.8 GB/s;
hashlib releases the GIL on large buffers, and 1.8 GB/s is over ten times a 1 Gb/s link,
so the collision-proof digest costs little more than CRC-32 and can serve deduplication.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable, Collection
from pathlib import Path
from typing import BinaryIO, Final

from pydicom.dataelem import DataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_data_element

from ..ports import FileMeta, OutOfResources, StorageError, StoredFile
from .spool import (
    CHECKSUM_ALGORITHM,
    KEY_PATTERN,
    SPOOL_DIR,
    FilesystemSpool,
    Recovered,
    recover_spool,
)

__all__ = [
    "CHECKSUM_ALGORITHM",
    "SPOOL_DIR",
    "FilesystemSpool",
    "FilesystemStorage",
    "Recovered",
    "file_checksum",
]

log = logging.getLogger("minipacs.storage")


# PS3.10 §7.1: a 128-byte preamble, the "DICM" prefix, then group 0002 in Explicit VR LE.
PREAMBLE: Final = b"\x00" * 128 + b"DICM"
META_VERSION: Final = b"\x00\x01"  # (0002,0001) File Meta Information Version
# (0002,0000) UL element: tag (4) + VR (2) + length (2) + value (4).
GROUP_LENGTH_ELEMENT_SIZE: Final = 12

TAG_GROUP_LENGTH: Final = 0x00020000
TAG_META_VERSION: Final = 0x00020001
TAG_MEDIA_SOP_CLASS: Final = 0x00020002
TAG_MEDIA_SOP_INSTANCE: Final = 0x00020003
TAG_TRANSFER_SYNTAX: Final = 0x00020010
TAG_IMPLEMENTATION_CLASS: Final = 0x00020012
TAG_IMPLEMENTATION_VERSION: Final = 0x00020013
TAG_SOURCE_AE: Final = 0x00020016
TAG_SENDING_AE: Final = 0x00020017
TAG_RECEIVING_AE: Final = 0x00020018


# Files put in one leaf directory before the next is chosen (`FilesystemStorage.new_key`).
BUCKET_FILES: Final = 1000
MAX_KNOWN_DIRS: Final = 1024


def _element(tag: int, vr: str, value: object) -> bytes:
    """One group-0002 element encoded by pydicom (Explicit VR Little Endian, PS3.10 §7.1)."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_data_element(fp, DataElement(tag, vr, value))
    return fp.getvalue()


@functools.lru_cache(maxsize=64)
def _group_length(length: int) -> bytes:
    """(0002,0000) File Meta Information Group Length: a handful of values in practice."""
    return _element(TAG_GROUP_LENGTH, "UL", length)


def _mkdir(path: Path) -> bool:
    """Whether this call made `path` (False: it exists, maybe made by another thread)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return False
    return True


def file_checksum(path: Path, chunk_size: int = 1 << 20) -> str:
    """The checksum of a whole file, in the form `StoredFile.checksum` uses."""
    digest = hashlib.new(CHECKSUM_ALGORITHM)
    with open(path, "rb") as fp:
        while chunk := fp.read(chunk_size):
            digest.update(chunk)
    return f"{CHECKSUM_ALGORITHM}:{digest.hexdigest()}"


class FilesystemStorage:
    """Part 10 files under one root directory; implements `ports.Storage`.

    ``fsync=False`` skips every fsync: a power loss may then lose acknowledged instances
    (the cost it saves is one file fdatasync plus one directory fsync per instance, two
    when the instance's fan-out directory is new).
    ``min_free_bytes`` is the watermark `check_free_space` enforces before spooling.
    """

    def __init__(
        self,
        root: Path,
        *,
        implementation_class_uid: str,
        implementation_version_name: str,
        source_ae_title: str,
        fsync: bool = True,
        min_free_bytes: int = 0,
    ) -> None:
        self.root = Path(root)
        self.spool_dir = self.root / SPOOL_DIR
        self.fsync = fsync
        self.min_free_bytes = min_free_bytes
        self._implementation = (implementation_class_uid, implementation_version_name)
        self._source_ae_title = source_ae_title
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        # Fan-out directories made in this process whose parent is not fsynced yet; those
        # known to exist durably (no mkdir needed); leaves this process has looked at.
        self._fresh_dirs: set[Path] = set()
        self._durable_dirs: set[Path] = set()
        self._seen_leaves: set[Path] = set()
        self._fresh_lock = threading.Lock()
        self._bucket = ""
        self._bucket_left = 0
        self._bucket_lock = threading.Lock()
        # Committed spools whose entry still stands, by key; keys released by the index.
        self._pending: dict[str, FilesystemSpool] = {}
        self._pending_lock = threading.Lock()
        self._released: deque[str] = deque()
        # Everything but the SOP Instance UID repeats from one instance to the next; pydicom
        # takes ~250 µs to write a whole meta group, ~30 µs for the two varying elements.
        self._fixed_meta = functools.lru_cache(maxsize=256)(self._encode_fixed_meta)

    # --- writing ------------------------------------------------------------------------

    def check_free_space(self) -> None:
        """Raise OutOfResources below the watermark (checked before spooling, PS3.4 B.2.3)."""
        if self.min_free_bytes <= 0:
            return
        free = self.free_bytes()
        if free < self.min_free_bytes:
            raise OutOfResources(f"{free} bytes free, below the {self.min_free_bytes} watermark")

    def free_bytes(self) -> int:
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize

    def open_spool(self, meta: FileMeta) -> FilesystemSpool:
        """Create the spool entry of a fresh key, holding the Part 10 header (PS3.10 §7.1)."""
        self.reap()
        header = self.part10_header(meta)
        key, final = self.new_key()
        return FilesystemSpool(self, key, final, header)

    def store(self, meta: FileMeta, data: bytes) -> StoredFile:
        """Check free space, spool, write and commit a whole data set: one thread hop."""
        stored, spool = self.place(meta, data)
        try:
            spool.sync()
        except StorageError:
            self.delete(stored.key)
            raise
        return stored

    def place(self, meta: FileMeta, data: bytes) -> tuple[StoredFile, FilesystemSpool]:
        """Check free space, spool, write and link a whole data set; `sync` is the
        caller's (`ports.Storage.place`)."""
        self.check_free_space()
        with self.open_spool(meta) as spool:  # removed on any failure
            spool.write(data)
            return spool.link(), spool

    def part10_header(self, meta: FileMeta) -> bytes:
        """Preamble, ``DICM`` and the File Meta Information group (PS3.10 §7.1)."""
        before, after = self._fixed_meta(
            meta.sop_class_uid, meta.transfer_syntax_uid,
            meta.sending_ae_title, meta.receiving_ae_title,
        )
        instance = _element(TAG_MEDIA_SOP_INSTANCE, "UI", meta.sop_instance_uid)
        group_length = _group_length(len(before) + len(instance) + len(after))
        return b"".join((PREAMBLE, group_length, before, instance, after))

    def _encode_fixed_meta(
        self, sop_class_uid: str, transfer_syntax_uid: str, sending: str, receiving: str
    ) -> tuple[bytes, bytes]:
        """The elements before and after (0002,0003), in tag order (PS3.5 §7.1)."""
        before = _element(TAG_META_VERSION, "OB", META_VERSION) + _element(
            TAG_MEDIA_SOP_CLASS, "UI", sop_class_uid
        )
        class_uid, version_name = self._implementation
        after = [
            _element(TAG_TRANSFER_SYNTAX, "UI", transfer_syntax_uid),
            _element(TAG_IMPLEMENTATION_CLASS, "UI", class_uid),
        ]
        optional = (
            (TAG_IMPLEMENTATION_VERSION, "SH", version_name),
            (TAG_SOURCE_AE, "AE", self._source_ae_title),
            (TAG_SENDING_AE, "AE", sending),
            (TAG_RECEIVING_AE, "AE", receiving),
        )
        after += [_element(tag, vr, value) for tag, vr, value in optional if value]
        return before, b"".join(after)

    def new_key(self) -> tuple[str, Path]:
        """A fresh key ``ab/cd/<32 hex digits>.dcm`` and its path (DESIGN principle 10).

        The name is a uuid4 whose first four hex digits are replaced by the current fan-out
        bucket ``ab/cd`` (106 random bits stay): consecutive files share a leaf directory
        and a new one is made only every `BUCKET_FILES` files, instead of one directory per
        file on a young store (an inode allocation and two directory fsyncs each).
        """
        with self._bucket_lock:
            if self._bucket_left <= 0:
                self._bucket = uuid.uuid4().hex[:4]
                self._bucket_left = BUCKET_FILES
            self._bucket_left -= 1
            bucket = self._bucket
        name = bucket + uuid.uuid4().hex[4:]
        key = f"{name[:2]}/{name[2:4]}/{name}.dcm"
        return key, self.root / key

    def make_parent_dirs(self, path: Path) -> list[Path]:
        """Create the fan-out directories of `path`; returns those whose entry may not be
        durable yet: made by this call, or found but not yet known durable to this process
        (another thread or process may have made it and not fsynced its parent yet; ours
        must not answer before). A leaf known durable costs no system call.
        """
        leaf = path.parent
        if leaf in self._durable_dirs:
            return []
        try:
            os.mkdir(leaf)
            made = [leaf]
        except FileExistsError:
            made = []
        except FileNotFoundError:
            made = [directory for directory in (leaf.parent, leaf) if _mkdir(directory)]
        if not self.fsync:
            self._remember_durable(leaf)
            return made
        with self._fresh_lock:
            self._fresh_dirs.update(made)
            # Found rather than made, and not yet seen durable: sync its parents once too.
            self._fresh_dirs.update(d for d in (leaf.parent, leaf)
                                    if d not in self._durable_dirs and d not in made
                                    and leaf not in self._seen_leaves)
            self._seen_leaves.add(leaf)
            return [d for d in (leaf.parent, leaf) if d in self._fresh_dirs]

    def track(self, key: str, spool: FilesystemSpool) -> None:
        """A committed spool whose entry waits for `release` or `delete`."""
        with self._pending_lock:
            self._pending[key] = spool

    def release(self, key: str) -> None:
        """The index row of `key` is durable: its spool entry may go (non-blocking).

        Queued only; the next `open_spool`, `store` or `reap` (in a thread) removes it.
        """
        self._released.append(key)

    def reap(self) -> None:
        """Remove the spool entries of released keys (blocking)."""
        while self._released:
            key = self._released.popleft()
            with self._pending_lock:
                spool = self._pending.pop(key, None)
            if spool is not None:
                spool.release()

    def dirs_made_durable(self, directories: list[Path]) -> None:
        """Their parents were fsynced after they were made: their entries are durable."""
        if directories:
            with self._fresh_lock:
                self._fresh_dirs.difference_update(directories)
                for directory in directories:
                    self._remember_durable(directory)

    def forget_leaf(self, leaf: Path) -> None:
        """`leaf` turned out missing (removed by hand or a tool): make it again next time."""
        with self._fresh_lock:
            self._durable_dirs.discard(leaf)
            self._seen_leaves.discard(leaf)

    def _remember_durable(self, directory: Path) -> None:
        """`directory` exists and its entry is durable: files there skip the mkdir."""
        if len(self._durable_dirs) >= MAX_KNOWN_DIRS:  # a bounded memory of buckets
            self._durable_dirs.clear()
            self._seen_leaves.clear()
        self._durable_dirs.add(directory)

    # --- reading and removing -----------------------------------------------------------

    def path_of(self, key: str) -> Path:
        """The file of `key`; refuses anything but a key this store made."""
        if not KEY_PATTERN.fullmatch(key):
            raise StorageError(f"not a storage key: {key!r}")
        return self.root / key

    def open_dataset(self, key: str, dataset_offset: int | None = None) -> BinaryIO:
        """Open a stored file positioned at its first data-set byte."""
        path = self.path_of(key)
        try:
            if dataset_offset is None:
                meta = read_file_meta_info(path)
                dataset_offset = (
                    len(PREAMBLE) + GROUP_LENGTH_ELEMENT_SIZE + meta.FileMetaInformationGroupLength
                )
            fp = open(path, "rb")  # noqa: SIM115 - handed to the caller
        except OSError as exc:
            raise StorageError(f"cannot open {key}: {exc}") from exc
        fp.seek(dataset_offset)
        return fp

    def checksum(self, key: str) -> str:
        """The stored file's checksum now (`file_checksum`); StorageError if it is unreadable."""
        try:
            return file_checksum(self.path_of(key))
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc}") from exc

    def delete(self, key: str) -> None:
        """Remove a stored file, then its spool entry if it still has one; a missing file is
        fine (it may have been deleted already)."""
        try:
            self.path_of(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {key}: {exc}") from exc
        with self._pending_lock:
            spool = self._pending.pop(key, None)
        if spool is not None:
            spool.release()

    def recover(self, referenced: Callable[[Collection[str]], Collection[str]]) -> Recovered:
        """Settle what a crash left in the spool folder (call at start, before serving).

        `referenced(keys)` says which keys have an index row (`spool.recover_spool`).
        """
        return recover_spool(self.root, self.spool_dir, referenced)
