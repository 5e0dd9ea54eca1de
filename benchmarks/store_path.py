"""Micro-benchmark of the C-STORE SCP path without the network: StoreService → real store.

Drives `minipacs.services.store.StoreService` with the real `FilesystemStorage` and `SqlIndex`
(SQLite file, migrated, WAL, synchronous=FULL) in a fresh temp dir, feeding each data set in
PDV-sized fragments from memory, for tiny (64x64) and CT-size (512x512) instances, with 1
and 4 concurrent callers. Prints wall and CPU (process user + system, every thread) time per
instance and instances/s: the CPU column is the one to compare on a shared, noisy machine.

    python benchmarks/store_path.py                 # 3 runs, 1,000 tiny + 200 CT
    python benchmarks/store_path.py --quick         # 1 run, 300 tiny + 60 CT
    python benchmarks/store_path.py --profile tiny  # yappi profile of one tiny 1-caller run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import PYDICOM_ROOT_UID, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import func, select

from minipacs.app import loop_factory
from minipacs.index import AttributeReader, SqlIndex
from minipacs.index.engine import make_engine
from minipacs.index.migrate import upgrade
from minipacs.index.models import Instance
from minipacs.ports import Request
from minipacs.proto.dimse import CStoreRQ, CStoreRSP
from minipacs.proto.negotiation import AcceptedContext
from minipacs.proto.status import Status
from minipacs.services.store import StoreService
from minipacs.storage import FilesystemStorage
from tests.ingest import BytesStream, OneContextChannel

CT_IMAGE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.2"
SEED: Final = "minipacs-store-path-v1"
CONTEXT_ID: Final = 1
SERIES: Final = 4
# Fragment size the fake stream hands out: a 128 KiB PDU's PDV (the ingest benchmark's PDU).
FRAGMENT: Final = 131072 - 12


@dataclass(frozen=True, slots=True)
class Item:
    sop_instance_uid: str
    data: bytes  # the data set, Explicit VR Little Endian, no Part 10 header


def _uid(*parts: object) -> str:
    return generate_uid(PYDICOM_ROOT_UID, entropy_srcs=[SEED, *map(str, parts)])


def make_items(kind: str, count: int, size: int) -> list[Item]:
    """`count` CT instances of size x size 16-bit, one study, `SERIES` series."""
    rng = random.Random(f"{SEED}:{kind}")
    items = []
    for number in range(count):
        series = number % SERIES
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = _uid(kind, "instance", number)
        ds.StudyDate = "20240102"
        ds.ContentDate = "20240102"
        ds.StudyTime = "101500"
        ds.ContentTime = "101500"
        ds.AccessionNumber = "ACC000001"
        ds.Modality = "CT"
        ds.Manufacturer = "minipacs"
        ds.InstitutionName = "Benchmark Hospital"
        ds.ReferringPhysicianName = "Ref^Doctor"
        ds.StudyDescription = f"Store path {kind}"
        ds.SeriesDescription = f"Series {series + 1}"
        ds.PatientName = f"Bench^{kind.capitalize()}^Müller"
        ds.PatientID = f"BENCH-{kind.upper()}"
        ds.IssuerOfPatientID = "MINIPACS-BENCH"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = 1.0
        ds.KVP = 120
        ds.StudyInstanceUID = _uid(kind, "study")
        ds.SeriesInstanceUID = _uid(kind, "series", series)
        ds.StudyID = "1"
        ds.SeriesNumber = series + 1
        ds.InstanceNumber = number + 1
        ds.ImagePositionPatient = [-250.0, -250.0, -float(number)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.FrameOfReferenceUID = _uid(kind, "for")
        ds.SliceLocation = -float(number)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size
        ds.Columns = size
        ds.PixelSpacing = [0.9765625, 0.9765625]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.PixelData = rng.randbytes(size * size * 2)
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = False
        write_dataset(fp, ds)
        items.append(Item(ds.SOPInstanceUID, fp.getvalue()))
    return items


@dataclass(frozen=True, slots=True)
class Figures:
    wall_us: float  # per instance
    cpu_us: float  # per instance, every thread, user + system
    sys_us: float  # per instance, system (kernel) part of cpu_us
    per_second: float


def _cpu() -> tuple[float, float]:
    times = os.times()
    return times.user + times.system, times.system


async def _run_once(root: Path, items: list[Item], callers: int, fsync: bool) -> Figures:
    url = f"sqlite:///{root / 'index.db'}"
    await asyncio.to_thread(upgrade, url)
    storage = FilesystemStorage(root / "store", implementation_class_uid="1.2.3.4",
                                implementation_version_name="BENCH", source_ae_title="MINIPACS",
                                fsync=fsync)
    engine = make_engine(url)
    context = AcceptedContext(CONTEXT_ID, CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    channel = OneContextChannel("BENCH_SCU", "MINIPACS", context, 131072)
    try:
        async with SqlIndex(engine) as index:
            service = StoreService(storage, index, AttributeReader())

            async def caller(share: list[Item]) -> None:
                for n, item in enumerate(share):
                    message = CStoreRQ(message_id=n + 1, affected_sop_class_uid=CT_IMAGE_STORAGE,
                                       affected_sop_instance_uid=item.sop_instance_uid)
                    request = Request(context, message, BytesStream(item.data, FRAGMENT))
                    outcome = await service(channel, request)
                    assert isinstance(outcome.message, CStoreRSP)
                    if outcome.message.status != Status.SUCCESS:
                        raise RuntimeError(f"{item.sop_instance_uid}: {outcome.message.status!r}")

            shares = [items[i::callers] for i in range(callers)]
            (cpu, system), wall = _cpu(), time.perf_counter()
            await asyncio.gather(*(caller(share) for share in shares))
            wall = time.perf_counter() - wall
            cpu, system = (end - start for end, start in zip(_cpu(), (cpu, system), strict=True))
        with engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(Instance)).scalar_one()
        if rows != len(items):
            raise RuntimeError(f"{rows} rows for {len(items)} instances")
    finally:
        engine.dispose()
    n = len(items)
    return Figures(wall / n * 1e6, cpu / n * 1e6, system / n * 1e6, n / wall)


def run(items: list[Item], callers: int, fsync: bool, tmpdir: str | None) -> Figures:
    with tempfile.TemporaryDirectory(prefix="store-path-", dir=tmpdir) as tmp, \
            asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_run_once(Path(tmp), items, callers, fsync))


def profile(items: list[Item], fsync: bool, tmpdir: str | None) -> None:
    """A yappi CPU profile of one 1-caller run, every thread, top functions by own time."""
    import yappi

    yappi.set_clock_type("cpu")
    yappi.start()
    run(items, 1, fsync, tmpdir)
    yappi.stop()
    stats = yappi.get_func_stats()
    stats.sort("ttot", "desc").print_all(columns={0: ("name", 90), 1: ("ncall", 9),
                                                  3: ("ttot", 9), 4: ("tavg", 9)})
    stats.sort("tsub", "desc").print_all(columns={0: ("name", 90), 1: ("ncall", 9),
                                                  2: ("tsub", 9)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", type=int, default=1000, help="tiny (64x64) instances")
    parser.add_argument("--ct", type=int, default=200, help="CT-size (512x512) instances")
    parser.add_argument("--runs", type=int, default=3, help="median of N runs")
    parser.add_argument("--callers", default="1,4", help="concurrent callers, comma-separated")
    parser.add_argument("--no-fsync", dest="fsync", action="store_false")
    parser.add_argument("--quick", action="store_true", help="1 run, 300 tiny, 60 CT")
    parser.add_argument("--tmpdir", help="where the temp dir goes")
    parser.add_argument("--profile", choices=("tiny", "ct"),
                        help="print a yappi profile of one 1-caller run instead")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.tiny, args.ct = 1, 300, 60
    sets = {"tiny": make_items("tiny", args.tiny, 64), "ct": make_items("ct", args.ct, 512)}
    if args.profile:
        profile(sets[args.profile], args.fsync, args.tmpdir)
        return 0
    callers = [int(c) for c in args.callers.split(",")]
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}, fsync {args.fsync}, "
          f"median of {args.runs} run(s)")
    print(f"{'data':<5} {'n':>5} {'callers':>7} {'wall us/inst':>12} {'CPU us/inst':>12} "
          f"{'(sys)':>6} {'inst/s':>8}   runs (inst/s)")
    for name, items in sets.items():
        if not items:
            continue
        for count in callers:
            figures = [run(items, count, args.fsync, args.tmpdir) for _ in range(args.runs)]
            wall = statistics.median(f.wall_us for f in figures)
            cpu = statistics.median(f.cpu_us for f in figures)
            system = statistics.median(f.sys_us for f in figures)
            rate = statistics.median(f.per_second for f in figures)
            runs = " ".join(f"{f.per_second:.0f}" for f in figures)
            print(f"{name:<5} {len(items):>5} {count:>7} {wall:>12.0f} {cpu:>12.0f} "
                  f"{system:>6.0f} {rate:>8.0f}   {runs}", flush=True)
    print(f"load at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
