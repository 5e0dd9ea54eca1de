"""`minipacs store` (a subprocess) against our own server and DCMTK's storescp."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset

from minipacs.app.daemon import open_server
from minipacs.net.server import Server
from minipacs.proto.sop import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    STORAGE_SOP_CLASSES,
)
from minipacs.storage.files import read_dicom_file
from tests.support import (
    LOOPBACK,
    UID_ROOT,
    WAIT,
    AssociationLog,
    free_port,
    make_config,
    make_ct,
    minipacs_env,
    run_minipacs,
    storescp,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SUMMARY = re.compile(r"^(\d+) stored, (\d+) warnings, (\d+) failed, (\d+) skipped in [\d.]+ s "
                     r"\([\d.]+ inst/s, [\d.]+ MB/s\)$")
LONG_WAIT = 60.0  # hundreds of tiny files, each stored and indexed by the server


def tiny(sop_class: str, index: int) -> Dataset:
    """A minimal composite instance of any storage class (no pixels)."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{UID_ROOT}.9.{index}"
    ds.StudyInstanceUID = f"{UID_ROOT}.7"
    ds.SeriesInstanceUID = f"{UID_ROOT}.8.{index}"
    ds.PatientName = "Store^Scu"
    ds.PatientID = "SCU-1"
    ds.Modality = "OT"
    return ds


def write_part10(path: Path, ds: Dataset, ts: str) -> Path:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ts
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dataset_bytes(path: Path) -> bytes:
    """The bytes after the File Meta Information: what went over the wire."""
    return path.read_bytes()[read_dicom_file(path).dataset_offset:]


def nested_folder(top: Path) -> list[Path]:
    """Three instances in nested folders (one of ~2.5 MiB: several 1 MiB chunks) + a text file."""
    files = [
        write_part10(top / "study" / "ct1.dcm", make_ct(2_600_000, 1), EXPLICIT_VR_LITTLE_ENDIAN),
        write_part10(top / "study" / "series" / "deep" / "ct2.dcm", make_ct(4096, 2),
                     IMPLICIT_VR_LITTLE_ENDIAN),
        write_part10(top / "sc.dcm", tiny(SECONDARY_CAPTURE, 1),
                     DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN),
    ]
    (top / "study" / "README.txt").write_text("not DICOM\n")
    return files


def summary_counts(text: str) -> tuple[int, int, int, int]:
    match = SUMMARY.match(text.strip().splitlines()[-1])
    assert match, text
    stored, warnings, failed, skipped = map(int, match.groups())
    return stored, warnings, failed, skipped


@contextlib.asynccontextmanager
async def our_server(directory: Path) -> AsyncIterator[Server]:
    """The whole minipacs server (store + index) in this loop, on an ephemeral port."""
    directory.mkdir(parents=True, exist_ok=True)
    async with open_server(make_config(directory)) as server:
        yield server


def stored_datasets(directory: Path) -> Counter[bytes]:
    """Data-set bytes of every file in the server's store (spool folder excluded)."""
    root = directory / "store"
    return Counter(dataset_bytes(p) for p in root.glob("??/??/*.dcm"))


# --- against our own server -----------------------------------------------------------------


async def test_store_folder_to_our_server(tmp_path: Path) -> None:
    files = nested_folder(tmp_path / "in")
    async with our_server(tmp_path / "server") as server:
        result = await run_minipacs("store", LOOPBACK, str(server.port), str(tmp_path / "in"),
                                    "--aec", "MINIPACS")
    assert result.returncode == 0, result.stderr
    assert summary_counts(result.stdout) == (3, 0, 0, 1)
    assert result.stderr == ""  # not a terminal: no progress line, nothing failed
    assert stored_datasets(tmp_path / "server") == Counter(dataset_bytes(p) for p in files)


async def test_failure_status_from_our_server(tmp_path: Path) -> None:
    """A file whose meta names another instance than its data set: 0xA900, exit 1."""
    good = write_part10(tmp_path / "in" / "good.dcm", tiny(SECONDARY_CAPTURE, 1),
                        EXPLICIT_VR_LITTLE_ENDIAN)
    bad = write_part10(tmp_path / "in" / "bad.dcm", tiny(SECONDARY_CAPTURE, 2),
                       EXPLICIT_VR_LITTLE_ENDIAN)
    # pydicom rewrites the meta from the data set, so edit the bytes: the first occurrence
    # of the UID is (0002,0003); the same length keeps every offset.
    raw = bad.read_bytes()
    bad.write_bytes(raw.replace(f"{UID_ROOT}.9.2".encode(), f"{UID_ROOT}.9.7".encode(), 1))
    assert read_dicom_file(bad).sop_instance_uid == f"{UID_ROOT}.9.7"
    async with our_server(tmp_path / "server") as server:
        result = await run_minipacs("store", LOOPBACK, str(server.port), str(tmp_path / "in"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"failed: {bad}: 0xA900 ")
    assert summary_counts(result.stderr) == (1, 0, 1, 0)
    assert stored_datasets(tmp_path / "server") == Counter([dataset_bytes(good)])


async def test_more_than_128_contexts_split_over_associations(
        tmp_path: Path, assoc_log: AssociationLog) -> None:
    classes = sorted(STORAGE_SOP_CLASSES)[:150]
    pairs = [(sop, IMPLICIT_VR_LITTLE_ENDIAN) for sop in classes]
    pairs += [(sop, EXPLICIT_VR_LITTLE_ENDIAN) for sop in classes[:20]]
    files = [write_part10(tmp_path / "in" / f"{n:03}.dcm", tiny(sop, n), ts)
             for n, (sop, ts) in enumerate(pairs)]
    async with our_server(tmp_path / "server") as server:
        result = await run_minipacs("store", LOOPBACK, str(server.port), str(tmp_path / "in"),
                                    timeout=LONG_WAIT)
        lines = await assoc_log.wait_for(2)
    assert result.returncode == 0, result.stderr
    assert summary_counts(result.stdout) == (170, 0, 0, 0)
    assert len(lines) == 2, lines
    assert all("result=released" in line for line in lines)
    assert sorted(re.search(r"contexts=(\d+/\d+)", line)[1] for line in lines) == [  # type: ignore[index]
        "128/128", "42/42"]
    assert stored_datasets(tmp_path / "server") == Counter(dataset_bytes(p) for p in files)


# --- against DCMTK storescp -----------------------------------------------------------------


async def test_store_to_dcmtk_storescp_bit_for_bit(tmp_path: Path) -> None:
    files = nested_folder(tmp_path / "in")
    async with storescp(tmp_path, "+B", "+xa") as peer:  # bit-preserving, any syntax
        result = await run_minipacs("store", LOOPBACK, str(peer.port), str(tmp_path / "in"),
                                    "--aec", "STORESCP", "--max-pdu", "16384")
    assert result.returncode == 0, result.stderr + peer.log.read_text()
    assert summary_counts(result.stdout) == (3, 0, 0, 1)
    received = {read_dicom_file(p).sop_instance_uid: dataset_bytes(p)
                for p in peer.directory.iterdir()}
    assert received == {read_dicom_file(p).sop_instance_uid: dataset_bytes(p) for p in files}


async def test_rejected_context_fails_those_files(tmp_path: Path) -> None:
    explicit = [write_part10(tmp_path / "in" / f"e{n}.dcm", make_ct(2048, n),
                             EXPLICIT_VR_LITTLE_ENDIAN) for n in (1, 2)]
    implicit = [write_part10(tmp_path / "in" / f"i{n}.dcm", make_ct(2048, n),
                             IMPLICIT_VR_LITTLE_ENDIAN) for n in (3, 4, 5)]
    async with storescp(tmp_path, "+xi") as peer:  # accepts Implicit VR Little Endian only
        result = await run_minipacs("store", LOOPBACK, str(peer.port), str(tmp_path / "in"))
    assert result.returncode == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert failed == [f"failed: {p}: peer rejected CT Image Storage in Explicit VR Little Endian"
                      for p in explicit]
    assert summary_counts(result.stderr) == (3, 0, 2, 0)
    assert sorted(p.name for p in peer.directory.iterdir()) == sorted(
        f"CT.{read_dicom_file(p).sop_instance_uid}" for p in implicit)


# --- errors -----------------------------------------------------------------------------------


async def test_closed_port_is_one_line_exit_1(tmp_path: Path) -> None:
    nested_folder(tmp_path / "in")
    port = free_port()
    result = await run_minipacs("store", LOOPBACK, str(port), str(tmp_path / "in"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (f"minipacs store: cannot connect to {LOOPBACK}:{port}: "
                             "Connection refused (3 file(s) not sent)\n")


async def test_nothing_to_send_opens_no_association(tmp_path: Path) -> None:
    """Only non-DICOM files: exit 0; plus a broken Part 10 file: exit 1 (closed port either way)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("hello")
    port = str(free_port())
    result = await run_minipacs("store", LOOPBACK, port, str(tmp_path / "in"))
    assert result.returncode == 0, result.stderr
    assert summary_counts(result.stdout) == (0, 0, 0, 1)

    broken = tmp_path / "in" / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\x08\x00\x18\x00")
    result = await run_minipacs("store", LOOPBACK, port, str(tmp_path / "in"))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"failed: {broken}: no MediaStorageSOPClassUID (0002,0002) in the file meta information")
    assert summary_counts(result.stderr) == (0, 0, 1, 1)


async def test_usage_errors_exit_2(tmp_path: Path) -> None:
    cases = {
        ("store", LOOPBACK, "70000", str(tmp_path)): "70000 is out of range",
        ("store", LOOPBACK, "104"): "the following arguments are required: PATH",
        ("store", LOOPBACK, "104", str(tmp_path / "missing")): "no such file or folder",
        ("store", LOOPBACK, "104", str(tmp_path), "--aet", "A" * 17): "--aet",
        ("store", LOOPBACK, "104", str(tmp_path), "--timeout", "0"): "--timeout",
    }
    results = await asyncio.gather(*(run_minipacs(*argv) for argv in cases))
    for (argv, expected), result in zip(cases.items(), results, strict=True):
        assert result.returncode == 2, argv
        assert result.stdout == ""
        assert len(result.stderr.splitlines()) == 1 and expected in result.stderr, result.stderr


async def test_progress_line_on_a_terminal(tmp_path: Path) -> None:
    """stderr a terminal: one redrawn progress line, erased before the summary."""
    nested_folder(tmp_path / "in")
    master, slave = os.openpty()
    try:
        async with our_server(tmp_path / "server") as server:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "minipacs", "store", LOOPBACK, str(server.port),
                str(tmp_path / "in"), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=slave, env=minipacs_env())
            os.close(slave)
            slave = -1
            reading = asyncio.create_task(asyncio.to_thread(_read_all, master))
            async with asyncio.timeout(WAIT):
                stdout, _ = await proc.communicate()
                terminal = await reading
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0
    assert summary_counts(stdout.decode()) == (3, 0, 0, 1)
    assert "\r\x1b[Kstored 3/3 (0 failed) " in terminal
    assert terminal.endswith("\r\x1b[K")  # erased: the summary goes to a clean line


def _read_all(fd: int) -> str:
    """Everything written to a pty until its last writer closes it."""
    out = bytearray()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: no writer left
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")
