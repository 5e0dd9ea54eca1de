"""C-MOVE at scale against real peers: more than 128 (SOP class, transfer syntax) pairs in one
move (PS3.8 §9.3.2.2: at most 128 presentation contexts per association), and 2,000
instances moved by a `minipacs serve` subprocess whose memory is sampled meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from minipacs.proto.negotiation import MAX_PRESENTATION_CONTEXTS
from minipacs.proto.sop import STORAGE_SOP_CLASSES
from minipacs.proto.status import Status
from tests.interop.retrieve_support import (
    ROOT,
    SERVER_AE,
    assert_counts,
    dcmtk_responses,
    ident,
    populate_chunked,
    py_destination,
    py_move,
    retrieve_server,
    study_uid,
)
from tests.support import LOOPBACK, free_port, run_dcmtk, serve_process, storescp

CLASSES = 70  # x 2 syntaxes = 140 pairs: two sub-associations
BULK = 2000
LOADERS = 4  # storescu processes populating the server side by side
FIRST = 10000  # bulk SOP Instance UIDs end in 10000 ... 11999
RSS_GROWTH_LIMIT_KB = 40 * 1024
SAMPLE_EVERY = 0.02  # seconds between /proc samples


def tiny(sop_class: str, study: int, number: int) -> Dataset:
    """A minimal data set of any storage class: the index needs UIDs and the patient only."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{ROOT}.{study}.1.{number}"
    ds.StudyInstanceUID = study_uid(study)
    ds.SeriesInstanceUID = f"{ROOT}.{study}.1"
    ds.PatientID = f"SCALE-{study}"
    ds.PatientName = "Scale^Test"
    ds.Modality = "OT"
    ds.InstanceNumber = number
    return ds


async def test_move_of_more_than_128_pairs_uses_sequential_associations(tmp_path: Path) -> None:
    from pynetdicom.service_class import StorageServiceClass
    from pynetdicom.sop_class import uid_to_service_class

    # classes pynetdicom's SCP serves (it aborts on one it does not know, e.g. retired ones)
    classes = [uid for uid in sorted(STORAGE_SOP_CLASSES)
               if uid_to_service_class(uid) is StorageServiceClass][:CLASSES]
    assert len(classes) == CLASSES
    data = [(tiny(sop_class, 31, 2 * i + k), ts) for i, sop_class in enumerate(classes)
            for k, ts in enumerate((ExplicitVRLittleEndian, ImplicitVRLittleEndian))]
    assert len(data) > MAX_PRESENTATION_CONTEXTS
    port = free_port()
    with py_destination(port, classes) as dest:
        async with retrieve_server(tmp_path, {"PYDEST": port}) as server:
            stored = await populate_chunked(server.port, data)
            result = await asyncio.to_thread(py_move, server.port,
                                             ident("STUDY", StudyInstanceUID=study_uid(31)),
                                             "PYDEST")
    final = assert_counts(result.responses, len(data))
    assert (final.status, final.completed, final.failed) == (Status.SUCCESS, len(data), 0)
    assert dest.associations == 2  # 140 pairs, 128 per association
    assert dest.stored == {u: s.data for u, s in stored.items()}
    # each instance went in the syntax it was stored in (one pair per context)
    assert dest.syntaxes == {u: s.transfer_syntax for u, s in stored.items()}


# --- 2,000 instances, server in a subprocess ------------------------------------------------------


def bulk_uid(n: int) -> str:
    return f"{ROOT}.32.1.{FIRST + n}"  # all the same length: the template is patched in place


def write_bulk(folder: Path) -> None:
    """2,000 small Part 10 CT files of one study in LOADERS sub-folders: one written with
    pydicom, the others copies with the SOP Instance UID (same length) patched (20x faster)."""
    from pydicom.uid import CTImageStorage

    folder.mkdir()
    ds = tiny(CTImageStorage, 32, 1)
    ds.SOPInstanceUID = bulk_uid(0)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 2, 4, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = bytes(range(16))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    template = folder / "template.dcm"
    ds.save_as(template, enforce_file_format=True)
    raw = template.read_bytes()
    template.unlink()
    old = bulk_uid(0).encode()
    assert raw.count(old) == 2  # File Meta and data set
    for part in range(LOADERS):
        (folder / str(part)).mkdir()
    for n in range(BULK):
        path = folder / str(n % LOADERS) / f"{n:05d}.dcm"
        path.write_bytes(raw.replace(old, bulk_uid(n).encode()))


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, from /proc/PID/status."""
    text = Path(f"/proc/{pid}/status").read_text()
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.MULTILINE))
    return int(values["VmRSS"]), int(values["VmHWM"])


@contextlib.contextmanager
def sampling(pid: int) -> Iterator[list[int]]:
    """VmRSS sampled every SAMPLE_EVERY seconds in a thread while the block runs."""
    samples: list[int] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            samples.append(rss_kb(pid)[0])
            stop.wait(SAMPLE_EVERY)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(5)


async def test_2000_instance_move_keeps_server_memory_bounded(tmp_path: Path) -> None:
    folder = tmp_path / "bulk"
    await asyncio.to_thread(write_bulk, folder)
    (tmp_path / "dest").mkdir()
    (tmp_path / "server").mkdir()
    async with storescp(tmp_path / "dest", "+B") as dest:
        with serve_process(tmp_path / "server", ae_title=SERVER_AE,
                           storage={"min_free_mb": 0},
                           peers={"DEST": {"host": LOOPBACK, "port": dest.port}}) as server:
            pid = server.proc.pid
            loading = time.perf_counter()
            # one storescu per sub-folder at once: the server's group commit takes them together
            loads = await asyncio.gather(*(
                run_dcmtk("storescu", "-aec", SERVER_AE, "+sd", LOOPBACK, str(server.port),
                          str(part), timeout=40)
                for part in sorted(folder.iterdir())))
            for loaded in loads:
                assert loaded.returncode == 0, loaded.stderr[-2000:]
            loaded_in = time.perf_counter() - loading
            before, _ = rss_kb(pid)
            started = time.perf_counter()
            with sampling(pid) as samples:
                result = await run_dcmtk(
                    "movescu", "-d", "-S", "-aec", SERVER_AE, "-aem", "DEST",
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid(32)}",
                    LOOPBACK, str(server.port), timeout=40)
            elapsed = time.perf_counter() - started
            after, peak = rss_kb(pid)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    final = assert_counts(dcmtk_responses(output, "C-MOVE RSP"), BULK)
    assert (final.status, final.completed, final.failed) == (Status.SUCCESS, BULK, 0)
    # storescp names each file <modality>.<SOP Instance UID>
    names = {path.name for path in dest.directory.iterdir()}
    assert names == {f"CT.{bulk_uid(n)}" for n in range(BULK)}
    growth = max(samples) - before
    print(f"stored {BULK} instances in {loaded_in:.2f} s; "
          f"moved {BULK} instances in {elapsed:.2f} s ({BULK / elapsed:.0f}/s); "
          f"server RSS before the move {before} KiB, max during {max(samples)} KiB "
          f"({len(samples)} samples), after {after} KiB, VmHWM {peak} KiB")
    assert growth < RSS_GROWTH_LIMIT_KB, (before, max(samples), peak)
