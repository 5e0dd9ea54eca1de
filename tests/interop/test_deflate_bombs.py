"""Deflate bombs against a real server process (issue 13 item 1), peak RSS read from /proc.

- C-STORE: a Deflated data set whose Pixel Data is 1 GiB of zeros (about 1 MB on the wire)
  is refused with 0xC000 past `limits.max_inflated_mb` (default 1024) and never stored; the
  server's memory stays flat while it counts the inflated bytes (in memory and spooled).
- C-GET: a stored Deflated instance of 256 MiB inflated, retrieved by DCMTK getscu (which
  accepts only uncompressed syntaxes), is inflated and re-encoded in bounded pieces.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Final

from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian

from minipacs.proto.status import Status
from tests.interop.dicomfiles import (
    base_dataset,
    deflate_bomb,
    write_part10,
    write_raw_part10,
)
from tests.interop.storecheck import (
    SERVER_AE,
    assert_nothing_left,
    chunked_sending,
    daemon,
    index_rows,
    pynetdicom_store,
)
from tests.support import LOOPBACK, run_dcmtk, write_config

MIB: Final = 1 << 20
PIXEL_DATA: Final = 0x7FE00010
MEMORY_BOUND: Final = 96 * MIB  # what a bomb may add to the daemon's peak RSS
STORE_BOMB: Final = 1 << 30  # 1 GiB of zeros: past the default 1024 MiB with its header
GET_BOMB: Final = 256 * MIB  # accepted (under the bound), then converted on the way out


def pixel_bomb(variant: int, inflated: int, path: Path, *,
               noise: int = 0) -> tuple[Path, str, str]:
    """A Part 10 file: a CT whose Pixel Data is `inflated` zeros, Deflated (~1 KiB per MiB).

    `noise` bytes that do not compress come first (an Encapsulated Document), so that the
    data set is larger than the server's in-memory buffer and goes through its spool.
    """
    ds = base_dataset("ct", variant)
    del ds.PixelData
    if noise:
        ds.EncapsulatedDocument = random.Random(variant).randbytes(noise)
    ds.Rows = ds.Columns = 512  # 16-bit frames: the zeros are its pixels
    ds.NumberOfFrames = inflated // (2 * 512 * 512)
    bomb = deflate_bomb(ds, inflated, nested=False, tag=PIXEL_DATA)
    write_raw_part10(path, ds.SOPClassUID, ds.SOPInstanceUID, DeflatedExplicitVRLittleEndian,
                     bomb)
    return path, str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)


def config(directory: Path, **limits: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return write_config(directory, ae_title=SERVER_AE, storage={"min_free_mb": 0},
                        limits=limits)


def test_one_gib_pixel_data_bomb_is_refused_at_c_store(tmp_path: Path) -> None:
    bomb, _, _ = pixel_bomb(70, STORE_BOMB, tmp_path / "bomb.dcm")
    assert bomb.stat().st_size < 2 * MIB
    warmup = write_part10(base_dataset("ct", 71), tmp_path / "warmup.dcm")
    after = write_part10(base_dataset("mr", 72), tmp_path / "after.dcm")
    with daemon(config(tmp_path / "server")) as server, chunked_sending():
        assert pynetdicom_store(server.port, [warmup]) == [(Status.SUCCESS, "")]
        baseline = server.peak_rss()
        (status, comment), (next_status, _) = pynetdicom_store(server.port, [bomb, after])
        peak = server.peak_rss()
        server.terminate()
    assert status == Status.CANNOT_UNDERSTAND
    assert comment == "deflated data set inflates past 1024 MiB", comment
    assert next_status == Status.SUCCESS
    assert peak - baseline < MEMORY_BOUND, f"peak RSS grew by {(peak - baseline) >> 20} MiB"
    keep = [str(base_dataset(kind, n).SOPInstanceUID) for kind, n in (("ct", 71), ("mr", 72))]
    assert_nothing_left(tmp_path / "server" / "store", tmp_path / "server" / "index.db",
                        keep=keep)


async def test_deflated_instance_converts_in_bounded_memory_for_c_get(tmp_path: Path) -> None:
    bomb, uid, study = pixel_bomb(75, GET_BOMB, tmp_path / "big.dcm")
    warmup = write_part10(base_dataset("ct", 76), tmp_path / "warmup.dcm")
    with daemon(config(tmp_path / "server")) as server:
        with chunked_sending():
            stored = await asyncio.to_thread(pynetdicom_store, server.port, [warmup, bomb])
        assert stored == [(Status.SUCCESS, "")] * 2
        assert index_rows(tmp_path / "server" / "index.db")[uid].transfer_syntax_uid == \
            DeflatedExplicitVRLittleEndian
        baseline = server.peak_rss()
        # getscu proposes only uncompressed syntaxes for the C-STORE sub-operations.
        out = tmp_path / "got"
        out.mkdir()
        result = await run_dcmtk("getscu", "-v", "-S", "-aec", SERVER_AE, "-od", str(out),
                                 "-k", "QueryRetrieveLevel=STUDY",
                                 "-k", f"StudyInstanceUID={study}",
                                 LOOPBACK, str(server.port), timeout=50)
        peak = server.peak_rss()
        server.terminate()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Number of Completed Suboperations : 1" in output, output
    assert "Number of Failed Suboperations    : 0" in output, output
    assert peak - baseline < MEMORY_BOUND, f"peak RSS grew by {(peak - baseline) >> 20} MiB"
    (got,) = out.iterdir()
    assert got.stat().st_size > GET_BOMB
    received = dcmread(got, stop_before_pixels=True)
    assert received.SOPInstanceUID == uid
    assert received.file_meta.TransferSyntaxUID != DeflatedExplicitVRLittleEndian


def test_the_bound_is_limits_max_inflated_mb(tmp_path: Path) -> None:
    # Both through the spool: the bound is checked on the committed file too.
    over, _, _ = pixel_bomb(77, 12 * MIB, tmp_path / "over.dcm", noise=3 * MIB // 2)
    under, uid, _ = pixel_bomb(78, 8 * MIB, tmp_path / "under.dcm", noise=3 * MIB // 2)
    assert over.stat().st_size > MIB
    with daemon(config(tmp_path / "server", max_inflated_mb=12)) as server, chunked_sending():
        answers = pynetdicom_store(server.port, [over, under])
        server.terminate()
    assert answers == [(Status.CANNOT_UNDERSTAND, "deflated data set inflates past 12 MiB"),
                       (Status.SUCCESS, "")]
    assert_nothing_left(tmp_path / "server" / "store", tmp_path / "server" / "index.db",
                        keep=[uid])
