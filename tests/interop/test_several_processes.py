"""Several `minipacs serve` processes on one index and one store (issue 15).

Two processes on one PostgreSQL database and one storage root take pushes at once (the same
instances to both, and others to each); one is killed with SIGKILL in mid-ingest. Nothing
either acknowledged is lost, an instance pushed to both is stored once, and the Storage
Commitment report owed by the dead process — its delivery attempt hanging when it died — is
delivered by the survivor once the dead one's registration has lapsed. Also: two processes
sharing one port with `listen.reuse_port`.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from sqlalchemy import select

from minipacs.index.engine import make_engine
from minipacs.index.models import Instance
from minipacs.proto.status import Status
from minipacs.storage import file_checksum
from tests.databases import POSTGRESQL, Databases
from tests.interop.test_commitment import modality_scp, request_commitment
from tests.support import (
    LOOPBACK,
    WAIT,
    ServeProcess,
    assert_echo_works,
    free_port,
    make_ct,
    minipacs_env,
    pynetdicom_ae,
    write_config,
)

SERVER_AE: Final = "MINIPACS"
MODALITY: Final = "MODALITY"  # the requestor test_commitment's helpers play
CT_IMAGE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.2"
ROOT: Final = "1.2.826.0.1.3680043.10.998"
LEASE: Final = 1.0  # database.process_lease: a dead process is noticed within seconds
PER_SET: Final = 30
KILL_AFTER: Final = PER_SET + 5  # acknowledgements by the doomed process before the kill


def dataset_set(study: int, count: int) -> list[Dataset]:
    """`count` small CT instances of one study (one series), Implicit VR Little Endian."""
    out = []
    for n in range(1, count + 1):
        ds = make_ct(pixel_bytes=8192, index=n)
        ds.StudyInstanceUID = f"{ROOT}.{study}"
        ds.SeriesInstanceUID = f"{ROOT}.{study}.1"
        ds.SOPInstanceUID = f"{ROOT}.{study}.1.{n}"
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        out.append(ds)
    return out


class Pusher(threading.Thread):
    """C-STOREs data sets on one pynetdicom association; records each one's status (None:
    no answer) and sets `milestone` after `after` acknowledgements."""

    def __init__(self, port: int, datasets: list[Dataset], after: int = 0) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.datasets = datasets
        self.after = after
        self.milestone = threading.Event()
        self.statuses: dict[str, int | None] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            ae = pynetdicom_ae("PUSHER")
            ae.add_requested_context(CT_IMAGE_STORAGE, ImplicitVRLittleEndian)
            assoc = ae.associate(LOOPBACK, self.port, ae_title=SERVER_AE)
            assert assoc.is_established
            try:
                for ds in self.datasets:
                    if not assoc.is_established:
                        break
                    status = assoc.send_c_store(ds)
                    self.statuses[ds.SOPInstanceUID] = (int(status.Status) if status
                                                        else None)
                    if sum(s == Status.SUCCESS for s in self.statuses.values()) >= self.after:
                        self.milestone.set()
            finally:
                if assoc.is_established:
                    assoc.release()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.milestone.set()

    def acknowledged(self) -> set[str]:
        return {uid for uid, status in self.statuses.items() if status == Status.SUCCESS}


@pytest.fixture
def serving() -> Iterator[list[ServeProcess]]:
    """Serve processes started by a test; killed (if still running) at the end."""
    started: list[ServeProcess] = []
    yield started
    for process in started:
        process.stop()


def serve(config: Path, started: list[ServeProcess]) -> ServeProcess:
    process = ServeProcess(config)
    started.append(process)
    return process.start()


def db_check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minipacs", "db", "check", "--config",
                           str(config)], capture_output=True, text=True, timeout=WAIT * 6,
                          env=minipacs_env(), stdin=subprocess.DEVNULL, check=False)


def test_two_processes_one_killed_mid_ingest_lose_nothing_and_report_commitment(
        tmp_path: Path, databases: Databases, serving: list[ServeProcess]) -> None:
    url = databases.create(POSTGRESQL)
    hole = socket.create_server((LOOPBACK, 0))  # the modality, silent for now
    report_port = hole.getsockname()[1]
    config = write_config(
        tmp_path, ae_title=SERVER_AE, database={"url": url, "process_lease": LEASE},
        storage={"root": str(tmp_path / "store"), "min_free_mb": 0},
        peers={MODALITY: {"host": LOOPBACK, "port": report_port}},
        commitment={"retry_delay": 0.2, "max_retry_delay": 0.5, "timeout": 5})
    doomed, survivor = serve(config, serving), serve(config, serving)
    assert doomed.port != survivor.port

    # A commitment request to the doomed process for instances it has stored; its delivery
    # attempt connects to the silent modality and waits for an answer that never comes.
    first = dataset_set(1, 3)
    pusher = Pusher(doomed.port, first)
    pusher.run()
    assert pusher.acknowledged() == {ds.SOPInstanceUID for ds in first}
    transaction_uid = generate_uid()
    status, _ = request_commitment(doomed.port, transaction_uid, [
        (CT_IMAGE_STORAGE, uid) for uid in sorted(pusher.acknowledged())])
    assert status == Status.SUCCESS
    hole.settimeout(WAIT)
    attempt, _ = hole.accept()  # the doomed process is delivering the report right now

    # Pushes to both at once: the same study to each (one copy must stay), then their own.
    both = dataset_set(2, PER_SET)
    to_doomed = Pusher(doomed.port, both + dataset_set(3, PER_SET * 3), after=KILL_AFTER)
    to_survivor = Pusher(survivor.port, both + dataset_set(4, PER_SET))
    to_doomed.start()
    to_survivor.start()
    assert to_doomed.milestone.wait(WAIT * 3)
    doomed.signal(signal.SIGKILL)  # in mid-ingest, and in mid-delivery of the report
    assert doomed.wait() == -signal.SIGKILL
    for thread in (to_doomed, to_survivor):
        thread.join(WAIT * 3)
        assert not thread.is_alive() and thread.error is None, thread.error
    attempt.close()
    hole.close()
    assert len(to_doomed.acknowledged()) >= KILL_AFTER
    assert len(to_doomed.acknowledged()) < len(to_doomed.datasets)  # it did die mid-way
    assert to_survivor.acknowledged() == {ds.SOPInstanceUID for ds in to_survivor.datasets}

    # The survivor takes the report over once the dead process's registration lapses.
    with modality_scp(report_port) as reports:
        report = reports.get(timeout=WAIT * 2)
    assert report.info.TransactionUID == transaction_uid
    assert report.committed() == pusher.acknowledged()
    survivor.wait_for_line(rf"storage commitment {transaction_uid}: report delivered")
    assert reports.empty()

    # Nothing acknowledged is lost: a row each, its file intact; an instance sent to both
    # processes is one row.
    acknowledged = pusher.acknowledged() | to_doomed.acknowledged() | (
        to_survivor.acknowledged())
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Instance.sop_instance_uid, Instance.storage_key,
                                       Instance.checksum)).all()
    finally:
        engine.dispose()
    indexed = {uid: (key, checksum) for uid, key, checksum in rows}
    assert len(indexed) == len(rows)
    assert acknowledged <= set(indexed)
    for uid in acknowledged:
        key, checksum = indexed[uid]
        assert file_checksum(tmp_path / "store" / key) == checksum, uid

    # The dead process restarted settles what it left in the spool; then all is consistent.
    restarted = serve(config, serving)
    for process in (restarted, survivor):
        process.signal(signal.SIGTERM)
        assert process.wait() == 0, process.log
    check = db_check(config)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no problems" in check.stdout
    assert list((tmp_path / "store" / ".spool").iterdir()) == []


async def test_processes_share_one_port_with_reuse_port(
        tmp_path: Path, serving: list[ServeProcess]) -> None:
    port = free_port()
    config = write_config(tmp_path, listen={"host": LOOPBACK, "port": port,
                                            "reuse_port": True})
    first, second = serve(config, serving), serve(config, serving)
    assert first.port == second.port == port
    for _ in range(40):  # the kernel spreads new connections over both listeners
        await assert_echo_works(port)
    for process in (first, second):
        process.wait_for_line(r"association peer=.*result=released")
    (tmp_path / "alone").mkdir()
    alone = write_config(tmp_path / "alone", listen={"host": LOOPBACK, "port": port})
    refused = ServeProcess(alone)
    serving.append(refused)
    assert refused.wait() == 1  # without reuse_port the port is taken
    assert "cannot listen on" in refused.log
