"""Walking the filesystem store from outside the server: its files, their headers, journals.

Blocking functions for ``minipacs db check``, ``db rebuild`` and ``delete``. Folders at the
top of the store whose name starts with a dot (``.spool`` of files being received,
``.deleting`` of delete journals, ``.orphans`` of files ``db check --repair`` set aside)
hold no stored instances and are not walked.

A delete journal lists the keys whose rows a delete is about to remove: it is written and
fsynced before the rows are deleted and removed once the files are, so a delete interrupted
between its commit and its last unlink is finished by the next one (each key is unlinked
only if no row refers to it any more). The running delete holds an flock(2) on its journal,
so another process never takes a journal whose delete has not committed yet.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from pydicom.filereader import read_file_meta_info

from ..ports import FileMeta, StorageError, StoredFile
from .filesystem import (
    GROUP_LENGTH_ELEMENT_SIZE,
    PREAMBLE,
    TAG_RECEIVING_AE,
    TAG_SENDING_AE,
    file_checksum,
)
from .spool import KEY_PATTERN, fsync_dir

__all__ = [
    "JOURNAL_DIR",
    "DeleteJournal",
    "StoreEntry",
    "StoredInstance",
    "claim_journals",
    "is_storage_key",
    "iter_files",
    "read_journals",
    "read_stored",
    "release_journal",
    "remove_journal",
    "set_aside",
    "write_journal",
]

JOURNAL_DIR: Final = ".deleting"
ORPHANS_DIR: Final = ".orphans"  # files `db check --repair` set aside, under their keys
JOURNAL_SUFFIX: Final = ".keys"
_HIDDEN_PREFIX: Final = "."


def set_aside(root: Path, key: str) -> Path:
    """Move a file no row points to under ``<root>/.orphans/`` (same key); returns it.

    Hidden folders are not walked, so it no longer counts as an orphan; nothing is deleted:
    an operator may index it (``db rebuild``) or remove it.
    """
    source = root / key
    target = root / ORPHANS_DIR / key
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    fsync_dir(target.parent)
    fsync_dir(source.parent)
    return target


@dataclass(frozen=True, slots=True)
class StoreEntry:
    """A file found under the store's root: its path relative to the root, as a key."""

    key: str  # "ab/cd/<uuid4 hex>.dcm" for a file the store made; any relative path otherwise
    size: int
    modified: float  # st_mtime: when the file was received (a rename keeps it)


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """A stored file as read back: its size, checksum and Part 10 header (PS3.10 §7.1)."""

    stored: StoredFile
    meta: FileMeta
    received_at: datetime  # the file's modification time, UTC


@dataclass(frozen=True, slots=True)
class DeleteJournal:
    """A delete's journal: the keys it removes, and the descriptor holding its lock."""

    path: Path
    keys: tuple[str, ...]
    fd: int | None = None


def is_storage_key(key: str) -> bool:
    """Whether `key` has the form of the keys the store makes (``ab/cd/<uuid4 hex>.dcm``)."""
    return KEY_PATTERN.fullmatch(key) is not None


def iter_files(root: Path) -> Iterator[StoreEntry]:
    """Every regular file under `root` outside its dot-folders, in sorted order."""
    root = Path(root)
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if here == root:
            dirs[:] = [d for d in dirs if not d.startswith(_HIDDEN_PREFIX)]
        dirs.sort()
        for name in sorted(files):
            path = here / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue  # removed while we walked (a replace or a delete)
            if path.is_symlink() or not path.is_file():
                continue
            yield StoreEntry(path.relative_to(root).as_posix(), st.st_size, st.st_mtime)


def read_stored(root: Path, key: str) -> StoredInstance:
    """Read a stored file's header and hash its content. Raises StorageError."""
    if not is_storage_key(key):
        raise StorageError(f"not a storage key: {key!r}")
    path = Path(root) / key
    try:
        st = path.stat()
        meta = read_file_meta_info(path)
        checksum = file_checksum(path)
    except OSError as exc:
        raise StorageError(f"cannot read {key}: {exc.strerror or exc}") from exc
    except Exception as exc:  # pydicom's view of a damaged header
        raise StorageError(f"{key}: no readable Part 10 header ({exc})") from exc
    fields = {}
    for keyword in ("FileMetaInformationGroupLength", "MediaStorageSOPClassUID",
                    "MediaStorageSOPInstanceUID", "TransferSyntaxUID"):
        value = meta.get(keyword)
        if value in (None, ""):
            raise StorageError(f"{key}: no {keyword} in the Part 10 header")
        fields[keyword] = value
    # PS3.10 §7.1: the data set starts right after the group the group length covers.
    offset = len(PREAMBLE) + GROUP_LENGTH_ELEMENT_SIZE + int(
        fields["FileMetaInformationGroupLength"])
    return StoredInstance(
        stored=StoredFile(key, st.st_size, checksum, offset),
        meta=FileMeta(
            sop_class_uid=str(fields["MediaStorageSOPClassUID"]),
            sop_instance_uid=str(fields["MediaStorageSOPInstanceUID"]),
            transfer_syntax_uid=str(fields["TransferSyntaxUID"]),
            sending_ae_title=_text(meta.get(TAG_SENDING_AE)),
            receiving_ae_title=_text(meta.get(TAG_RECEIVING_AE)),
        ),
        received_at=datetime.fromtimestamp(st.st_mtime, UTC),
    )


def _text(element: object) -> str:
    value = getattr(element, "value", None)
    return str(value).strip() if value else ""


# --- delete journals ----------------------------------------------------------------------


def write_journal(root: Path, keys: Iterable[str]) -> DeleteJournal:
    """Record, durably, the keys a delete is about to remove; locked until removed/released."""
    folder = Path(root) / JOURNAL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}{JOURNAL_SUFFIX}"
    listed = tuple(keys)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        # Held while the delete runs, so another process's recovery leaves it alone.
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, "".join(f"{key}\n" for key in listed).encode("ascii"))
        os.fsync(fd)
        fsync_dir(folder)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return DeleteJournal(path, listed, fd)


def read_journals(root: Path) -> list[DeleteJournal]:
    """The journals present, unlocked (to count what they list)."""
    return [DeleteJournal(path, _journal_keys(path)) for path in _journal_paths(root)]


def claim_journals(root: Path) -> Iterator[DeleteJournal]:
    """The journals of deletes that ended without finishing (not locked by a live one)."""
    for path in _journal_paths(root):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its delete is still running
            continue
        if not path.exists():  # removed by its owner just before we locked it
            os.close(fd)
            continue
        yield DeleteJournal(path, _journal_keys(path), fd)


def remove_journal(journal: DeleteJournal) -> None:
    """The delete is complete: remove its journal (then drop the lock)."""
    journal.path.unlink(missing_ok=True)
    release_journal(journal)


def release_journal(journal: DeleteJournal) -> None:
    """Keep the journal for a later delete to finish, and drop the lock."""
    if journal.fd is not None:
        os.close(journal.fd)


def _journal_paths(root: Path) -> list[Path]:
    folder = Path(root) / JOURNAL_DIR
    return sorted(folder.glob(f"*{JOURNAL_SUFFIX}")) if folder.is_dir() else []


def _journal_keys(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    except FileNotFoundError:
        return ()
    return tuple(key for key in lines if is_storage_key(key))
