"""C-STORE SCP under failure: aborts mid-transfer, a full disk, deflate bombs, restarts.

PS3.4 B.2.3: a refused store is answered (0xA700, 0xC000), never aborted, and leaves nothing
behind; an aborted one leaves nothing either. The daemon runs as a subprocess where the case
needs a process of its own (resource limits, peak memory, a restart).
"""

from __future__ import annotations

import asyncio
import resource
import signal
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from minipacs.proto.command_codec import encode_command
from minipacs.proto.dimse import CStoreRQ
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.pdu import AAbort, AAssociateAC
from minipacs.proto.pdu_codec import encode_pdata, encode_pdu
from minipacs.proto.status import Status
from tests.interop.dicomfiles import (
    base_dataset,
    deflate_bomb,
    encode_dataset,
    write_part10,
    write_raw_part10,
)
from tests.interop.storecheck import (
    CALLED,
    CALLING,
    assert_nothing_left,
    chunked_sending,
    daemon,
    daemon_config,
    index_rows,
    own_store,
    pynetdicom_store,
    sha256_file,
    spool_files,
    store_server,
    stored_files,
)
from tests.support import WAIT, raw_connection, read_pdu

MIB: Final = 1 << 20
PIXEL_DATA_OW: Final = struct.Struct("<HH2sHI")  # PS3.5 §7.1.2 explicit VR LE, 32-bit length
PDV_DATA: Final = 64 * 1024 - 6  # fits the server's 256 KiB maximum PDU with room to spare


def big_ct(variant: int, size: int) -> object:
    """A CT data set whose Pixel Data is `size` bytes (deterministic, not compressible)."""
    ds = base_dataset("ct", variant)
    ds.Rows = ds.Columns = int((size // 2) ** 0.5)
    ds.PixelData = (bytes(range(251)) * (size // 251 + 1))[: ds.Rows * ds.Columns * 2]
    return ds


async def wait_until(predicate: object, what: str, timeout: float = WAIT) -> None:
    """Poll the filesystem (bounded): the server says nothing on the wire at these points."""
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# --- abort in mid-transfer ------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["a-abort", "close"])
async def test_abort_in_mid_transfer_leaves_nothing(tmp_path: Path, ending: str) -> None:
    ds = big_ct(40, 6 * MIB)
    data = encode_dataset(ds)
    rq = build_associate_rq(CALLING, CALLED, [(CTImageStorage, [ExplicitVRLittleEndian])])
    command = CStoreRQ(message_id=1, affected_sop_class_uid=CTImageStorage,
                       affected_sop_instance_uid=ds.SOPInstanceUID)
    async with store_server(tmp_path) as server:
        async with raw_connection(server.port) as (reader, writer):
            writer.write(encode_pdu(rq))
            assert isinstance(await read_pdu(reader, WAIT), AAssociateAC)
            writer.write(encode_pdata(1, encode_command(command), is_command=True,
                                      is_last=True))
            half = len(data) // 2
            for start in range(0, half, PDV_DATA):
                chunk = data[start:min(start + PDV_DATA, half)]
                writer.write(encode_pdata(1, chunk, is_command=False, is_last=False))
            await writer.drain()
            # The server is spooling: more than its 1 MiB memory buffer is on disk.
            await wait_until(lambda: any(p.stat().st_size > MIB
                                         for p in spool_files(server.root)), "spooling")
            if ending == "a-abort":
                writer.write(encode_pdu(AAbort()))
                await writer.drain()
            else:
                writer.close()
            await wait_until(lambda: not spool_files(server.root), "spool removed")
        assert_nothing_left(server.root, server.db)
        # The server is unharmed: the next association stores.
        small = base_dataset("mr", 41)
        rsp = await own_store(server.port, small.SOPClassUID, small.SOPInstanceUID,
                              encode_dataset(small))
        assert rsp.status == Status.SUCCESS
    assert_nothing_left(server.root, server.db, keep=[small.SOPInstanceUID])


# --- a full disk (EFBIG under RLIMIT_FSIZE) ------------------------------------------------

FILE_SIZE_LIMIT: Final = 8 * MIB  # above the index database and its WAL, below the instance


def limit_file_size() -> None:
    """In the child before exec: writes past the limit fail with EFBIG (no root needed)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by signal


def test_write_failure_is_a700_and_the_association_goes_on(tmp_path: Path) -> None:
    big = write_part10(big_ct(50, 12 * MIB), tmp_path / "big.dcm")
    small = write_part10(base_dataset("mr", 51), tmp_path / "small.dcm")
    config = daemon_config(tmp_path / "server")
    with daemon(config, limit_file_size) as server, chunked_sending():
        results = pynetdicom_store(server.port, [big, small])
        (status, comment), (next_status, _) = results
        assert status == Status.OUT_OF_RESOURCES
        assert "File too large" in comment  # the spool write, not the index, hit the limit
        assert next_status == Status.SUCCESS  # drained, answered, and the association went on
        server.terminate()
    root, db = tmp_path / "server" / "store", tmp_path / "server" / "index.db"
    keep = str(dcmread(small, stop_before_pixels=True).SOPInstanceUID)
    assert_nothing_left(root, db, keep=[keep])


async def test_free_space_watermark_is_a700_and_leaves_nothing(tmp_path: Path) -> None:
    files = [write_part10(base_dataset(kind, 52), tmp_path / f"{kind}.dcm")
             for kind in ("ct", "mr")]
    async with store_server(tmp_path, min_free_mb=1 << 30) as server:  # wants 1 PiB free
        with chunked_sending():
            results = await asyncio.to_thread(pynetdicom_store, server.port, files)
    # Each refused and answered; the association was then released, not aborted.
    assert [status for status, _ in results] == [Status.OUT_OF_RESOURCES] * 2
    assert all("watermark" in comment for _, comment in results)
    assert_nothing_left(server.root, server.db)


# --- a deflate bomb -------------------------------------------------------------------------

BOMB_INFLATED: Final = (1 << 30) + 64 * MIB  # past the index's 1 GiB inflation cap
MEMORY_BOUND: Final = 96 * MIB  # what refusing a bomb may add to the daemon's peak RSS


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "in-sequence"])
def test_deflate_bomb_is_c000_with_bounded_memory(tmp_path: Path, nested: bool) -> None:
    ds = base_dataset("pdf", 60)
    del ds.EncapsulatedDocument, ds.MIMETypeOfEncapsulatedDocument
    bomb = deflate_bomb(ds, BOMB_INFLATED, nested=nested)
    assert len(bomb) < 2 * MIB
    bomb_file = write_raw_part10(tmp_path / "bomb.dcm", ds.SOPClassUID, ds.SOPInstanceUID,
                                 DeflatedExplicitVRLittleEndian, bomb)
    warmup = write_part10(base_dataset("ct", 61), tmp_path / "warmup.dcm")
    after = write_part10(base_dataset("mr", 62), tmp_path / "after.dcm")
    with daemon(daemon_config(tmp_path / "server")) as server, chunked_sending():
        assert pynetdicom_store(server.port, [warmup]) == [(Status.SUCCESS, "")]
        baseline = server.peak_rss()
        (status, comment), (next_status, _) = pynetdicom_store(server.port, [bomb_file, after])
        peak = server.peak_rss()
        server.terminate()
    assert status == Status.CANNOT_UNDERSTAND
    # Top level: skipping the value would inflate past the 1 GiB cap; in a sequence item
    # (values there are read, never deferred): the value alone is over the 64 MiB read budget.
    assert ("exceed" if nested else "inflates past") in comment, comment
    assert next_status == Status.SUCCESS
    assert peak - baseline < MEMORY_BOUND, f"peak RSS grew by {(peak - baseline) >> 20} MiB"
    keep = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (warmup, after)]
    assert_nothing_left(tmp_path / "server" / "store", tmp_path / "server" / "index.db",
                        keep=keep)


# --- a big instance streams in bounded memory --------------------------------------------

STREAMED: Final = 320 * MIB  # far above what the server may hold in memory at once


async def _pixels(header: bytes, size: int) -> AsyncIterator[bytes]:
    yield header
    chunk = bytes(range(256)) * (MIB // 256)
    for _ in range(size // MIB):
        yield chunk


def test_big_instance_streams_to_disk_in_bounded_memory(tmp_path: Path) -> None:
    ds = base_dataset("ct", 80)
    ds.Rows, ds.Columns = STREAMED // (2 * 4096), 4096
    header = encode_dataset(ds) + PIXEL_DATA_OW.pack(0x7FE0, 0x0010, b"OW", 0, STREAMED)
    with daemon(daemon_config(tmp_path / "server")) as server:
        baseline = server.peak_rss()
        rsp = asyncio.run(own_store(server.port, CTImageStorage, ds.SOPInstanceUID,
                                    _pixels(header, STREAMED)))
        peak = server.peak_rss()
        server.terminate()
    assert rsp.status == Status.SUCCESS
    assert peak - baseline < MEMORY_BOUND, f"peak RSS grew by {(peak - baseline) >> 20} MiB"
    (row,) = index_rows(tmp_path / "server" / "index.db").values()
    assert row.file_size == row.dataset_offset + len(header) + STREAMED
    assert sha256_file(tmp_path / "server" / "store" / row.storage_key) == row.checksum


# --- restart --------------------------------------------------------------------------------


def test_restart_keeps_everything(tmp_path: Path) -> None:
    first = [write_part10(base_dataset(kind, 70), tmp_path / f"{kind}.dcm")
             for kind in ("ct", "mr", "text-sr", "pdf")]
    later = write_part10(base_dataset("rgb", 71), tmp_path / "later.dcm")
    config = daemon_config(tmp_path / "server", fsync=True)
    root, db = tmp_path / "server" / "store", tmp_path / "server" / "index.db"
    with daemon(config) as server, chunked_sending():
        assert pynetdicom_store(server.port, first) == [(Status.SUCCESS, "")] * len(first)
        server.terminate()
    before = index_rows(db)
    files_before = {path: sha256_file(path) for path in stored_files(root)}
    assert len(before) == len(first) == len(files_before)
    leftover = root / ".spool" / "0123456789abcdef0123456789abcdef.part"
    leftover.write_bytes(b"half an instance from a crash")
    with daemon(config) as server, chunked_sending():
        assert not leftover.exists()  # leftover spool files are removed at start
        assert index_rows(db) == before
        assert pynetdicom_store(server.port, [later]) == [(Status.SUCCESS, "")]
        server.terminate()
    rows = index_rows(db)
    assert len(rows) == len(first) + 1
    assert {uid: rows[uid] for uid in before} == before
    for path, digest in files_before.items():
        assert sha256_file(path) == digest
    for row in rows.values():
        assert sha256_file(root / row.storage_key) == row.checksum
    assert_nothing_left(root, db, keep=list(rows))
