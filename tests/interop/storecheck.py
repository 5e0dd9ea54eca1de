"""Helpers for the C-STORE interop tests: an in-process store server, peers, index checks.

The index is read with sqlite3 straight from the database file (a reader beside the
server's writer, as `minipacs db check` would be); stored files are found through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydicom.filereader import read_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from minipacs.app.daemon import open_server
from minipacs.net.client import association
from minipacs.proto.dimse import CStoreRQ, CStoreRSP
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.sop import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from tests.interop.dicomfiles import Sent, dataset_bytes, dataset_offset, inflate
from tests.support import (
    LOOPBACK,
    ServeProcess,
    make_config,
    minipacs_env,
    pynetdicom_ae,
    run_dcmtk,
    write_config,
)

__all__ = [
    "CALLED",
    "CALLING",
    "SERVER_AE",
    "Daemon",
    "IndexRow",
    "StoreServer",
    "assert_nothing_left",
    "assert_stored",
    "chunked_sending",
    "daemon",
    "daemon_config",
    "index_rows",
    "own_store",
    "pynetdicom_store",
    "sha256_file",
    "spool_files",
    "store_server",
    "stored_files",
    "storescu",
]

SERVER_AE: Final = "MINIPACS"  # the configured ae_title: Source AE Title (0002,0016)
CALLING: Final = "INTEROP-SCU"
CALLED: Final = "STORE-SCP"

_ROWS: Final = """
SELECT i.sop_instance_uid, i.sop_class_uid, i.storage_key, i.file_size, i.checksum,
       i.dataset_offset, i.transfer_syntax_uid, i.calling_ae_title, i.called_ae_title,
       i.content_date, s.series_instance_uid, s.modality, st.study_instance_uid,
       st.study_date, p.patient_id, p.patient_name, p.patient_name_folded
FROM instance i
JOIN series s ON i.series_pk = s.pk
JOIN study st ON s.study_pk = st.pk
JOIN patient p ON st.patient_pk = p.pk
"""


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One instance row joined with its series, study and patient rows."""

    sop_instance_uid: str
    sop_class_uid: str
    storage_key: str
    file_size: int
    checksum: str
    dataset_offset: int
    transfer_syntax_uid: str
    calling_ae_title: str
    called_ae_title: str
    content_date: str | None
    series_instance_uid: str
    modality: str | None
    study_instance_uid: str
    study_date: str | None
    patient_id: str
    patient_name: str | None
    patient_name_folded: str | None


def index_rows(db: Path) -> dict[str, IndexRow]:
    """Every indexed instance by SOP Instance UID (the database read from outside)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        rows = [IndexRow(*row) for row in con.execute(_ROWS)]
    by_uid = {row.sop_instance_uid: row for row in rows}
    assert len(by_uid) == len(rows), "an instance is indexed twice"
    return by_uid


def stored_files(root: Path) -> list[Path]:
    """The committed files of a store (spool excluded)."""
    return sorted(p for p in root.glob("*/*/*.dcm") if p.is_file())


def spool_files(root: Path) -> list[Path]:
    return sorted((root / ".spool").iterdir())


def assert_nothing_left(root: Path, db: Path, *, keep: Sequence[str] = ()) -> None:
    """No spool file, and no file or row but those of the instances in `keep`."""
    assert spool_files(root) == []
    rows = index_rows(db)
    assert sorted(rows) == sorted(keep)
    assert sorted(root / row.storage_key for row in rows.values()) == stored_files(root)


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def assert_stored(root: Path, row: IndexRow, sent: Sent, *, calling: str = CALLING,
                  called: str = CALLED) -> None:
    """The stored file holds the sent data set bit for bit behind a correct Part 10 header."""
    path = root / row.storage_key
    data = path.read_bytes()
    assert row.file_size == len(data)
    assert row.checksum == _sha256(data)
    assert row.dataset_offset == dataset_offset(path)
    stored_ds, sent_ds = data[row.dataset_offset:], dataset_bytes(sent.path)
    if sent.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        # The deflated stream may be padded to even length on the wire (PS3.5 §8.1.1 odd
        # values padded; DCMTK does it for the whole data set): the bytes inflate the same.
        assert stored_ds[:len(sent_ds)] == sent_ds
        assert stored_ds[len(sent_ds):] in (b"", b"\x00")
        assert inflate(stored_ds) == inflate(sent_ds)
    else:
        assert stored_ds == sent_ds, f"{sent.kind}: data set bytes differ"
    meta = read_file_meta_info(path)
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert meta.MediaStorageSOPClassUID == sent.sop_class_uid
    assert meta.MediaStorageSOPInstanceUID == sent.sop_instance_uid
    assert meta.TransferSyntaxUID == sent.transfer_syntax_uid
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert meta.SourceApplicationEntityTitle == SERVER_AE
    assert meta.SendingApplicationEntityTitle == calling
    assert meta.ReceivingApplicationEntityTitle == called
    # The index row.
    assert row.sop_class_uid == sent.sop_class_uid
    assert row.transfer_syntax_uid == sent.transfer_syntax_uid
    assert (row.calling_ae_title, row.called_ae_title) == (calling, called)
    assert row.patient_id == sent.patient_id
    assert row.patient_name == sent.patient_name
    assert row.patient_name_folded == sent.patient_name.casefold()
    assert row.study_instance_uid == sent.study_instance_uid
    assert row.series_instance_uid == sent.series_instance_uid
    assert row.modality == sent.modality
    assert row.study_date == sent.study_date
    assert row.content_date == "20240316"


# --- the server ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreServer:
    port: int
    root: Path
    db: Path


@contextlib.asynccontextmanager
async def store_server(directory: Path, **storage: Any) -> AsyncIterator[StoreServer]:
    """The whole minipacs server (`app.open_server`) in this loop, its data in `directory`."""
    config = make_config(directory, ae_title=SERVER_AE,
                         storage={"min_free_mb": 0, **storage})
    async with open_server(config) as server:
        yield StoreServer(server.port, config.storage.root, directory / "index.db")


# --- peers --------------------------------------------------------------------------------


async def storescu(port: int, paths: Sequence[Path], *options: str,
                   calling: str = CALLING, called: str = CALLED, timeout: float = 30) -> str:
    """DCMTK storescu sends `paths` in one association; fails the test unless all succeed."""
    result = await run_dcmtk("storescu", "-v", "-aet", calling, "-aec", called, *options,
                             LOOPBACK, str(port), *map(str, paths), timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("Received Store Response (Success)") == len(paths), output
    return output


@contextlib.contextmanager
def chunked_sending() -> Iterator[None]:
    """pynetdicom sends a file's data set bytes as they are, without decoding them."""
    from pynetdicom import _config

    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old


def pynetdicom_store(port: int, paths: Sequence[Path], *, calling: str = CALLING,
                     called: str = CALLED) -> list[tuple[int, str]]:
    """Send files (raw, see `chunked_sending`) in one association: (status, comment) each.

    Blocking: call it through `asyncio.to_thread` when a server runs in the test's loop.
    """
    ae = pynetdicom_ae(calling)
    contexts = set()
    for path in paths:
        meta = read_file_meta_info(path)
        contexts.add((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(LOOPBACK, port, ae_title=called)
    assert assoc.is_established, "association not established"
    results = []
    try:
        for path in paths:
            status = assoc.send_c_store(path)
            assert status, f"no C-STORE response for {path.name}"
            results.append((int(status.Status), str(status.get("ErrorComment", ""))))
    finally:
        assoc.release()
    assert assoc.is_released
    return results


def sha256_file(path: Path) -> str:
    return _sha256(path.read_bytes())


async def own_store(port: int, sop_class: str, instance_uid: str,
                    data: bytes | AsyncIterable[bytes], *,
                    transfer_syntax: str = ExplicitVRLittleEndian) -> CStoreRSP:
    """One C-STORE through minipacs' own requestor, with any command/data set pairing."""
    rq = build_associate_rq(CALLING, CALLED, [(sop_class, [transfer_syntax])])
    async with association(LOOPBACK, port, rq, artim_timeout=5) as conn:
        message = CStoreRQ(message_id=conn.next_message_id(), affected_sop_class_uid=sop_class,
                           affected_sop_instance_uid=instance_uid)
        replies = [reply async for reply in conn.request(1, message, data)]
    (reply,) = replies
    assert isinstance(reply.message, CStoreRSP)
    return reply.message


# --- the daemon as a subprocess -----------------------------------------------------------


class Daemon(ServeProcess):
    """`python -m minipacs serve` with an optional `preexec_fn` (resource limits)."""

    def __init__(self, config: Path, preexec_fn: Callable[[], None] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "minipacs", "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=minipacs_env(), text=True, preexec_fn=preexec_fn)
        self.lines = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0

    def peak_rss(self) -> int:
        """The process's peak resident set size in bytes (Linux: VmHWM)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text(encoding="ascii")
        (kib,) = re.findall(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
        return int(kib) * 1024

    def terminate(self) -> None:
        """SIGTERM, and the graceful exit it must lead to (code 0)."""
        self.signal(signal.SIGTERM)
        assert self.wait() == 0, self.log


def daemon_config(directory: Path, **storage: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return write_config(directory, ae_title=SERVER_AE, storage={"min_free_mb": 0, **storage})


@contextlib.contextmanager
def daemon(config: Path, preexec_fn: Callable[[], None] | None = None) -> Iterator[Daemon]:
    """The daemon, listening (its port read from its log), killed at the end if still up."""
    process = Daemon(config, preexec_fn)
    try:
        process.start()
        yield process
    finally:
        process.stop()
