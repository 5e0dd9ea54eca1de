"""The filesystem store, on real temporary directories."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Collection
from pathlib import Path

import pydicom
import pytest

from minipacs.ports import FileMeta, OutOfResources, StorageError
from minipacs.storage import FilesystemStorage, file_checksum
from minipacs.storage.spool import SPOOL_DIR, Recovered, spool_name
from tests.index.dicomdata import EXPLICIT_LE, IMPLICIT_LE, SECONDARY_CAPTURE, encode, make_dataset

IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.999.1"
KEY_RE = re.compile(r"([0-9a-f]{2})/([0-9a-f]{2})/(\1\2[0-9a-f]{28})\.dcm")


def make_storage(root: Path, **kwargs: object) -> FilesystemStorage:
    return FilesystemStorage(
        root,
        implementation_class_uid=IMPLEMENTATION_UID,
        implementation_version_name="MINIPACS_TEST",
        source_ae_title="MINIPACS",
        **kwargs,  # type: ignore[arg-type]
    )


def meta(instance_uid: str = "1.2.3.4", ts: str = EXPLICIT_LE) -> FileMeta:
    return FileMeta(SECONDARY_CAPTURE, instance_uid, ts, "MODALITY", "MINIPACS")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("fsync", [True, False])
def test_commit_writes_a_part10_file_with_the_received_bytes(tmp_path: Path, fsync: bool) -> None:
    storage = make_storage(tmp_path, fsync=fsync)
    ds = make_dataset(7)
    data = encode(ds, IMPLICIT_LE)
    spool = storage.open_spool(meta(ds.SOPInstanceUID, IMPLICIT_LE))
    for start in range(0, len(data), 100):  # several pieces, as the service hands them over
        spool.write(data[start:start + 100])
    stored = spool.commit()

    match = KEY_RE.fullmatch(stored.key)
    assert match, stored.key
    path = tmp_path / stored.key
    intent = tmp_path / SPOOL_DIR / spool_name(stored.key)
    assert files_under(tmp_path) == [intent, path]  # the intent stays until released
    assert os.path.samefile(intent, path)  # one file, two names: no copy
    storage.release(stored.key)
    assert files_under(tmp_path) == [intent, path]  # released on the loop: no system call
    storage.reap()  # the next call in a thread
    assert files_under(tmp_path) == [path]
    raw = path.read_bytes()
    assert raw[:128] == bytes(128) and raw[128:132] == b"DICM"
    assert raw[stored.dataset_offset:] == data  # bit for bit
    assert stored.size == len(raw)
    assert stored.checksum == "sha256:" + hashlib.sha256(raw).hexdigest() == file_checksum(path)

    read = pydicom.dcmread(path)
    fm = read.file_meta
    assert fm.MediaStorageSOPClassUID == SECONDARY_CAPTURE
    assert fm.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert fm.TransferSyntaxUID == IMPLICIT_LE
    assert fm.ImplementationClassUID == IMPLEMENTATION_UID
    assert fm.ImplementationVersionName == "MINIPACS_TEST"
    assert fm.SourceApplicationEntityTitle == "MINIPACS"
    assert fm.SendingApplicationEntityTitle == "MODALITY"
    assert fm.ReceivingApplicationEntityTitle == "MINIPACS"
    assert read.PatientName == "Doe^John"
    assert read.SOPInstanceUID == ds.SOPInstanceUID

    for offset in (None, stored.dataset_offset):
        with storage.open_dataset(stored.key, offset) as fp:
            assert fp.read() == data


def test_headers_of_consecutive_instances_do_not_mix(tmp_path: Path) -> None:
    storage = make_storage(tmp_path)
    keys = {}
    for uid in ("1.2.3", "1.2.3.4.5.6.7.8.9.10.11"):  # different lengths: group length moves
        spool = storage.open_spool(meta(uid))
        spool.write(b"\x08\x00\x05\x00CS\x00\x00")  # (0008,0005) empty: any data set will do
        keys[uid] = spool.commit().key
    for uid, key in keys.items():
        assert pydicom.dcmread(tmp_path / key).file_meta.MediaStorageSOPInstanceUID == uid


def test_discard_leaves_nothing(tmp_path: Path) -> None:
    storage = make_storage(tmp_path)
    spool = storage.open_spool(meta())
    spool.write(b"x" * 5000)
    assert len(files_under(tmp_path)) == 1
    spool.discard()
    spool.discard()  # idempotent
    assert files_under(tmp_path) == []
    with pytest.raises(StorageError):
        spool.write(b"more")
    with pytest.raises(StorageError):
        spool.commit()


def test_context_manager_discards_on_error(tmp_path: Path) -> None:
    storage = make_storage(tmp_path)
    with pytest.raises(RuntimeError), storage.open_spool(meta()) as spool:
        spool.write(b"partial")
        raise RuntimeError("association aborted")
    assert files_under(tmp_path) == []


def test_recovery_settles_every_crash_point_without_scanning_the_store(tmp_path: Path) -> None:
    """A kill before the link, between link and index commit, and after the commit."""
    storage = make_storage(tmp_path)
    abandoned = storage.open_spool(meta())
    abandoned.write(b"abandoned before its link")
    orphan, indexed = storage.open_spool(meta()), storage.open_spool(meta())
    orphan_key, indexed_key = orphan.commit().key, indexed.commit().key
    kept = storage.store(meta(), b"released")
    storage.release(kept.key)
    storage.reap()
    stray = tmp_path / SPOOL_DIR / "not-a-spool-name"
    stray.write_bytes(b"?")
    # The process dies: its locks go with it (here: the spools' descriptors are closed).
    for spool in (abandoned, orphan, indexed):
        os.close(spool._fd)  # type: ignore[attr-defined]
    asked: list[list[str]] = []

    def referenced(keys: Collection[str]) -> set[str]:
        asked.append(sorted(keys))
        return {indexed_key}

    result = make_storage(tmp_path).recover(referenced)
    assert asked == [sorted([orphan_key, indexed_key])]  # one question, linked keys only
    assert result == Recovered(unfinished=2, finished=1, orphans=(orphan_key,), busy=0)
    assert files_under(tmp_path) == sorted([tmp_path / indexed_key, tmp_path / kept.key])
    assert make_storage(tmp_path).recover(referenced) == Recovered(0, 0, (), 0)


def test_recovery_leaves_a_live_process_spools_alone(tmp_path: Path) -> None:
    live = make_storage(tmp_path)
    receiving = live.open_spool(meta())
    receiving.write(b"still arriving")
    committed = live.open_spool(meta()).commit()  # its row is being written
    result = make_storage(tmp_path).recover(lambda keys: set())
    assert result == Recovered(0, 0, (), busy=2)
    assert (tmp_path / committed.key).exists()
    receiving.commit()


def test_delete_of_a_committed_file_removes_its_intent_too(tmp_path: Path) -> None:
    storage = make_storage(tmp_path)
    stored = storage.store(meta(), b"refused by the index")
    storage.delete(stored.key)
    assert files_under(tmp_path) == []


def test_enospc_on_write_is_out_of_resources_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = make_storage(tmp_path)
    spool = storage.open_spool(meta())
    spool.write(b"first piece")

    def full_disk(fd: int, buffers: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "writev", full_disk)
    with pytest.raises(OutOfResources):
        spool.write(b"second piece")
    assert files_under(tmp_path) == []


def test_file_size_limit_is_out_of_resources_and_leaves_nothing(tmp_path: Path) -> None:
    """A real EFBIG: RLIMIT_FSIZE in a child process, SIGXFSZ ignored."""
    script = textwrap.dedent(f"""
        import json, resource, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(Path.cwd())!r})
        from minipacs.ports import FileMeta, OutOfResources
        from minipacs.storage import FilesystemStorage
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        storage = FilesystemStorage(Path({str(tmp_path)!r}), implementation_class_uid="1.2.3",
                                    implementation_version_name="T", source_ae_title="T")
        spool = storage.open_spool(FileMeta("1.2", "1.2.3", "1.2.840.10008.1.2", "A", "B"))
        try:
            for _ in range(8):
                spool.write(b"\\0" * 64 * 1024)
        except OutOfResources as exc:
            print(json.dumps({{"error": str(exc)}}))
        else:
            print(json.dumps({{"error": None}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=30, check=True)
    outcome = json.loads(result.stdout)
    assert outcome["error"] and "too large" in outcome["error"].lower()
    assert files_under(tmp_path) == []


def test_commit_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = make_storage(tmp_path)
    (tmp_path / "ab").write_bytes(b"a file where a fan-out directory should be")
    monkeypatch.setattr(storage, "new_key", lambda: ("ab/cd/x.dcm", tmp_path / "ab/cd/x.dcm"))
    spool = storage.open_spool(meta())
    spool.write(b"data")
    with pytest.raises(StorageError):
        spool.commit()
    assert files_under(tmp_path) == [tmp_path / "ab"]


def test_free_space_watermark(tmp_path: Path) -> None:
    make_storage(tmp_path).check_free_space()  # no watermark
    make_storage(tmp_path, min_free_bytes=1).check_free_space()
    with pytest.raises(OutOfResources):
        make_storage(tmp_path, min_free_bytes=1 << 62).check_free_space()


def test_delete_and_keys(tmp_path: Path) -> None:
    storage = make_storage(tmp_path)
    spool = storage.open_spool(meta())
    spool.write(b"data")
    key = spool.commit().key
    for bad in ("../../etc/passwd", "ab/cd/../../x.dcm", f"{SPOOL_DIR}/x.part", "/" + key):
        with pytest.raises(StorageError):
            storage.delete(bad)
    storage.delete(key)
    storage.delete(key)  # already gone: fine
    assert files_under(tmp_path) == []
    with pytest.raises(StorageError):
        storage.open_dataset(key)


def test_checksum_is_the_whole_file_now(tmp_path: Path) -> None:
    storage = make_storage(tmp_path)
    stored = storage.store(meta(), encode(make_dataset(1), EXPLICIT_LE))
    assert storage.checksum(stored.key) == stored.checksum  # as recorded at ingest
    path = tmp_path / stored.key
    with path.open("ab") as fp:
        fp.write(b"!")
    assert storage.checksum(stored.key) == file_checksum(path) != stored.checksum
    path.unlink()
    with pytest.raises(StorageError, match="cannot read"):
        storage.checksum(stored.key)
    with pytest.raises(StorageError, match="not a storage key"):
        storage.checksum("../index.db")


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """What is made durable: files by fdatasync, directories by fsync (paths, in order)."""
    seen: dict[str, list[str]] = {"data": [], "dirs": []}
    fsync, fdatasync = os.fsync, os.fdatasync

    def recording(kind: str, sync: Callable[[int], None]) -> Callable[[int], None]:
        def record(fd: int) -> None:
            seen[kind].append(os.readlink(f"/proc/self/fd/{fd}"))
            sync(fd)
        return record

    monkeypatch.setattr(os, "fsync", recording("dirs", fsync))
    monkeypatch.setattr(os, "fdatasync", recording("data", fdatasync))
    return seen


def keyed(storage: FilesystemStorage, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make the next key `name` (32 hex digits): ab/cd/<name>.dcm."""
    key = f"{name[:2]}/{name[2:4]}/{name}.dcm"
    monkeypatch.setattr(storage, "new_key", lambda: (key, storage.root / key))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fds")
def test_only_the_directories_a_commit_changed_are_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncs: dict[str, list[str]]
) -> None:
    storage = make_storage(tmp_path)
    root = str(tmp_path)
    cases = [
        ("abcd" + "0" * 28, [f"{root}/ab/cd", root, f"{root}/ab"]),  # both levels new
        ("abcd" + "1" * 28, [f"{root}/ab/cd"]),  # both exist: the leaf only
        ("abef" + "2" * 28, [f"{root}/ab/ef", f"{root}/ab"]),  # new leaf: leaf and parent
    ]
    for name, dirs in cases:
        syncs["data"].clear()
        syncs["dirs"].clear()
        keyed(storage, monkeypatch, name)
        stored = storage.store(meta(), b"data set")
        assert syncs["data"] == [f"{root}/{SPOOL_DIR}/" + syncs["data"][0].rsplit("/", 1)[1]]
        assert syncs["dirs"] == dirs, name
        assert (tmp_path / stored.key).read_bytes()[stored.dataset_offset:] == b"data set"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fds")
def test_a_directory_another_thread_made_is_synced_before_answering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncs: dict[str, list[str]]
) -> None:
    # Another commit made ab/ and ab/cd/ and has not fsynced their parents yet: this one,
    # which finds them, must not rely on that commit finishing first.
    storage = make_storage(tmp_path)
    storage.make_parent_dirs(tmp_path / "ab" / "cd" / "other.dcm")
    keyed(storage, monkeypatch, "abcd" + "3" * 28)
    storage.store(meta(), b"data set")
    root = str(tmp_path)
    assert syncs["dirs"] == [f"{root}/ab/cd", root, f"{root}/ab"]
    syncs["dirs"].clear()
    keyed(storage, monkeypatch, "abcd" + "4" * 28)
    storage.store(meta(), b"data set")
    assert syncs["dirs"] == [f"{root}/ab/cd"]  # now known durable


def test_without_fsync_nothing_is_synced(tmp_path: Path,
                                         syncs: dict[str, list[str]]) -> None:
    make_storage(tmp_path, fsync=False).store(meta(), b"data set")
    assert syncs == {"data": [], "dirs": []}


def test_store_writes_header_and_data_set_in_one_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    writev = os.writev

    def counting(fd: int, buffers: list[memoryview]) -> int:
        calls.append(len(buffers))
        return writev(fd, buffers)

    monkeypatch.setattr(os, "writev", counting)
    data = encode(make_dataset(3), EXPLICIT_LE)
    stored = make_storage(tmp_path).store(meta(), data)
    assert calls == [2]  # header and data set, one system call
    raw = (tmp_path / stored.key).read_bytes()
    assert raw[stored.dataset_offset:] == data and raw[128:132] == b"DICM"
    assert stored.checksum == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_store_below_the_watermark_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OutOfResources):
        make_storage(tmp_path, min_free_bytes=1 << 62).store(meta(), b"data set")
    assert files_under(tmp_path) == []


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writev = os.writev

    def at_most_3_bytes(fd: int, buffers: list[memoryview]) -> int:
        return writev(fd, [buffers[0][:3]])

    monkeypatch.setattr(os, "writev", at_most_3_bytes)
    spool = make_storage(tmp_path).open_spool(meta())
    spool.write(b"0123456789")
    spool.write(bytearray(b"abcdefg"))
    stored = spool.commit()
    raw = (tmp_path / stored.key).read_bytes()
    assert raw[stored.dataset_offset:] == b"0123456789abcdefg"
    assert stored.size == len(raw)
