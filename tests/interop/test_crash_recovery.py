"""Crash recovery: `minipacs serve` killed with SIGKILL between a file's link and its index
commit, restarted, and `minipacs db check` clean (issue: orphan files after a crash).

The index commit is held back by another process's SQLite write lock, so the kill lands in
that window every time; the server's own "index busy" warning says it is there.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian

from minipacs.proto.status import Status
from tests.support import (
    LOOPBACK,
    WAIT,
    make_ct,
    minipacs_env,
    pynetdicom_ae,
    serve_process,
    write_config,
)

SERVER_AE = "MINIPACS"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def ct(index: int) -> Dataset:
    ds = make_ct(pixel_bytes=4096, index=index)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def stored_files(store: Path) -> list[Path]:
    return sorted(store.glob("??/??/*.dcm"))


def store(port: int, datasets: list[Dataset]) -> list[int | None]:
    """C-STORE each data set on one pynetdicom association; the statuses (None: no answer)."""
    ae = pynetdicom_ae()
    ae.add_requested_context(CT_IMAGE_STORAGE, ImplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, port, ae_title=SERVER_AE)
    assert assoc.is_established
    statuses: list[int | None] = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            statuses.append(int(status.Status) if status else None)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def db_check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minipacs", "db", "check", "--config",
                           str(config)], capture_output=True, text=True, timeout=WAIT * 6,
                          env=minipacs_env(), stdin=subprocess.DEVNULL, check=False)


@contextlib.contextmanager
def write_locked(db: Path) -> Any:
    """Another process's writer holding the index's write lock until the block ends."""
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield holder
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_sigkill_between_link_and_index_commit_leaves_no_orphan(tmp_path: Path) -> None:
    acknowledged = [ct(n) for n in (1, 2, 3)]
    in_flight = ct(4)
    with serve_process(tmp_path) as served:
        assert store(served.port, acknowledged) == [Status.SUCCESS] * 3
        kept = {path.name: path.read_bytes() for path in stored_files(tmp_path / "store")}
        with write_locked(tmp_path / "index.db"):
            sender = threading.Thread(target=store, args=(served.port, [in_flight]),
                                      daemon=True)
            sender.start()
            # Linked under its key, its row waiting for the lock: the window of the crash.
            served.wait_for_line(r"index busy", timeout=WAIT * 2)
            assert len(stored_files(tmp_path / "store")) == 4
            served.signal(signal.SIGKILL)
            served.wait()
        sender.join(WAIT)

    with serve_process(tmp_path) as restarted:  # recovery runs before it listens
        assert "1 orphan file(s) removed" in restarted.log, restarted.log
        restarted.signal(signal.SIGTERM)
        assert restarted.wait() == 0
    check = db_check(write_config(tmp_path))
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("checked 3 instances and 3 files: no problems")
    # Every acknowledged instance kept, bit for bit; nothing of the never-answered one.
    assert {path.name: path.read_bytes() for path in stored_files(tmp_path / "store")} == kept
    assert list((tmp_path / "store" / ".spool").iterdir()) == []
