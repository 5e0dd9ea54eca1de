"""The spool: files being received, and the intent records that make crashes recoverable.

A data set is written to ``<root>/.spool/<key with "-" for "/">.part``, fdatasynced, then
hard-linked to its final key ``ab/cd/<uuid4>.dcm`` (DESIGN principle 10). The spool entry,
locked (flock) by the process writing it, stays beside the committed file until the index
row is durable: it is the intent record. After a crash, `recover_spool` looks only at the
spool folder, never at the whole store: an entry no live process holds is unfinished (no
file: removed), finished (its key has a row: the entry goes) or an orphan of a crash between
link and index commit (no row, never acknowledged: file and entry go).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from ..ports import OutOfResources, StorageError, StoredFile


class SpoolOwner(Protocol):
    """What a spool needs of its store (`FilesystemStorage`), named here so the two modules
    do not import each other."""

    spool_dir: Path
    fsync: bool

    def make_parent_dirs(self, path: Path) -> list[Path]: ...

    def dirs_made_durable(self, directories: list[Path]) -> None: ...

    def forget_leaf(self, leaf: Path) -> None: ...

    def track(self, key: str, spool: FilesystemSpool) -> None: ...


__all__ = [
    "CHECKSUM_ALGORITHM",
    "KEY_PATTERN",
    "SPOOL_DIR",
    "FilesystemSpool",
    "Recovered",
    "SpoolOwner",
    "fsync_dir",
    "key_of_spool",
    "recover_spool",
    "spool_name",
]

log = logging.getLogger("minipacs.storage")

SPOOL_DIR: Final = ".spool"
SPOOL_SUFFIX: Final = ".part"
_KEY_SEPARATOR: Final = "/"
_SPOOL_SEPARATOR: Final = "-"  # a key's "/" in its spool entry's name
CHECKSUM_ALGORITHM: Final = "sha256"
KEY_PATTERN: Final = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{32}\.dcm")
# errno values that mean "no room": PS3.4 B.2.3 0xA700 Out of Resources.
_NO_ROOM: Final = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def storage_error(exc: OSError, what: str) -> StorageError:
    if exc.errno in _NO_ROOM:
        return OutOfResources(f"{what}: {os.strerror(exc.errno or 0)}")
    return StorageError(f"{what}: {exc}")


_CREATE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _sync_data(fd: int) -> None:
    """fdatasync(2) where there is one: the data and what reading it needs (the size)."""
    getattr(os, "fdatasync", os.fsync)(fd)


def _write_all(fd: int, pieces: tuple[bytes | bytearray | memoryview, ...]) -> None:
    """Write every byte of `pieces`, in order, in as few system calls as the kernel allows."""
    views = [view for view in (memoryview(p).cast("B") for p in pieces) if len(view)]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename or unlink in it survives a power loss (POSIX)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)



def spool_name(key: str) -> str:
    """The spool entry of `key` ("ab/cd/x.dcm" → "ab-cd-x.dcm.part")."""
    return key.replace(_KEY_SEPARATOR, _SPOOL_SEPARATOR) + SPOOL_SUFFIX


def key_of_spool(name: str) -> str | None:
    """The key a spool entry is for; None for a name `spool_name` never makes."""
    key = name.removesuffix(SPOOL_SUFFIX).replace(_SPOOL_SEPARATOR, _KEY_SEPARATOR)
    return key if name.endswith(SPOOL_SUFFIX) and KEY_PATTERN.fullmatch(key) else None


@dataclass(frozen=True, slots=True)
class Recovered:
    """What `FilesystemStorage.recover` found in the spool folder."""

    unfinished: int  # data sets that never became a file: removed
    finished: int  # files whose index row committed: their entries removed
    orphans: tuple[str, ...]  # files linked but never indexed (never acknowledged): removed
    busy: int  # entries another live process holds: left alone


class FilesystemSpool:
    """A file being received into ``<root>/.spool/``; implements `ports.Spool`.

    Unbuffered: the service hands over ~1 MiB pieces or a whole data set, and the Part 10
    header goes out with the first of them in one ``writev``. The entry is named after the
    final key and locked from creation until `release` (module docstring: recovery).
    """

    __slots__ = ("_digest", "_done", "_fd", "_final", "_fresh", "_header", "_key", "_linked",
                 "_offset", "_path", "_size", "_storage")

    def __init__(self, storage: SpoolOwner, key: str, final: Path,
                 header: bytes) -> None:
        self._storage = storage
        self._key = key
        self._final = final
        self._path = storage.spool_dir / spool_name(key)
        self._digest = hashlib.new(CHECKSUM_ALGORITHM, header)
        self._size = self._offset = len(header)
        self._header = header  # not yet written
        self._done = self._linked = False
        self._fresh: list[Path] = []
        try:
            self._fd = os.open(self._path, _CREATE_FLAGS, 0o666)
        except OSError as exc:
            raise storage_error(exc, "cannot create spool file") from exc
        # Recovery in another process skips a locked entry. Between the create and the lock
        # a recovery starting that very moment may take the entry: this data set then fails
        # (StorageError) instead of being half-kept.
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.release()
            raise storage_error(exc, "cannot lock spool file") from exc

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes; on any error the spool is removed before raising."""
        if self._done:
            raise StorageError("spool already committed or discarded")
        try:
            _write_all(self._fd, (self._header, data))
        except OSError as exc:
            self.discard()
            raise storage_error(exc, "cannot write spool file") from exc
        self._header = b""
        self._digest.update(data)
        self._size += len(data)

    def commit(self) -> StoredFile:
        """`link`, then `sync`: the file is durable under its final key."""
        stored = self.link()
        self.sync()
        return stored

    def link(self) -> StoredFile:
        """Name the file by its final key; not durable until `sync`.

        Linking before the syncs lets one journal commit carry the file and its new name:
        on ext4 the fdatasync commits the link with the file's allocation, and the directory
        fsync that POSIX still asks for finds nothing left to write. A crash before the
        syncs leaves a linked file with no index row, which recovery removes (the spool
        entry says so). The spool entry stays, locked, as the intent record until `release`
        (the index row committed) or `FilesystemStorage.delete` (it did not).
        """
        if self._done:
            raise StorageError("spool already committed or discarded")
        storage = self._storage
        final = self._final
        try:
            if self._header:
                _write_all(self._fd, (self._header,))
            self._fresh = storage.make_parent_dirs(final)
            try:
                os.link(self._path, final)
            except FileNotFoundError:  # its leaf was removed meanwhile: make it again
                storage.forget_leaf(final.parent)
                self._fresh = storage.make_parent_dirs(final)
                os.link(self._path, final)
        except OSError as exc:
            self.discard()
            raise storage_error(exc, "cannot commit spool file") from exc
        self._done = self._linked = True
        storage.track(self._key, self)
        checksum = f"{CHECKSUM_ALGORITHM}:{self._digest.hexdigest()}"
        return StoredFile(self._key, self._size, checksum, self._offset)

    def sync(self) -> None:
        """fdatasync the file, fsync the directories its link touched (POSIX: fsync(2) on
        a file does not persist its name). Raises StorageError; the file then stays for
        `FilesystemStorage.delete`."""
        storage = self._storage
        if not self._linked:
            raise StorageError("spool not linked")
        if not storage.fsync:
            return
        final = self._final
        try:
            _sync_data(self._fd)  # data and size; the name is the directory's (below)
            # The new entry lives in the leaf directory; a directory not yet durable lives
            # in its parent, and both must reach the disk.
            fsync_dir(final.parent)
            for directory in self._fresh:
                fsync_dir(directory.parent)
        except OSError as exc:
            raise storage_error(exc, "cannot make the file durable") from exc
        storage.dirs_made_durable(self._fresh)

    def release(self) -> None:
        """Close, unlock and remove the spool entry (the committed file stays)."""
        self._done = True
        if self._fd >= 0:
            with contextlib.suppress(OSError):  # closing also drops the lock
                os.close(self._fd)
            self._fd = -1
        try:
            self._path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove spool file %s: %s", self._path, exc)

    def discard(self) -> None:
        """Remove the spool file; safe to call twice and after a failure (not after commit:
        a committed file goes with `FilesystemStorage.delete`)."""
        if not self._linked:
            self.release()

    def __enter__(self) -> FilesystemSpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._done:
            self.discard()


def recover_spool(root: Path, spool_dir: Path,
                  referenced: Callable[[Collection[str]], Collection[str]]) -> Recovered:
    """Settle what a crash left in `spool_dir` (at start, before serving).

    `referenced(keys)` says which keys have an index row. Entries another live process
    holds (its flock) are left alone; the rest are settled as the module docstring says.
    """
    unfinished = busy = 0
    linked: dict[str, tuple[Path, int]] = {}
    for entry in sorted(spool_dir.iterdir()):
        try:
            fd = os.open(entry, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue  # gone meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            busy += 1
            continue
        key = key_of_spool(entry.name)
        if key is not None and (root / key).exists():
            linked[key] = (entry, fd)  # keep the lock until settled
            continue
        _remove(entry)
        os.close(fd)
        unfinished += 1
    try:
        indexed = set(referenced(list(linked))) if linked else set()
        orphans = tuple(sorted(key for key in linked if key not in indexed))
        for key in orphans:
            (root / key).unlink(missing_ok=True)  # never acknowledged
            log.warning("removed %s: stored before a crash but never indexed", key)
        for entry, _fd in linked.values():
            _remove(entry)
    finally:
        for _entry, fd in linked.values():
            os.close(fd)
    result = Recovered(unfinished, len(linked) - len(orphans), orphans, busy)
    if unfinished or linked:
        log.info("spool recovered: %d unfinished, %d finished, %d orphan file(s) removed",
                 unfinished, result.finished, len(orphans))
    return result


def _remove(entry: Path) -> None:
    try:
        entry.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove leftover spool file %s: %s", entry, exc)
