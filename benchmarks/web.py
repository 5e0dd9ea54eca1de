#!/usr/bin/env python3
"""DICOMweb benchmark: minipacs beside Orthanc + its DICOMweb plugin, same data, same client.

Data (pydicom, deterministic): one CT series of --series-size single-frame instances
(64 x 64, 16-bit) and --studies one-instance studies, C-STOREd into each server with DCMTK
``storescu``. Then, with the Python ``dicomweb-client`` over one keep-alive session:

- QIDO-RS study search: every study (`/studies`), and a PatientID wildcard, --reps times;
- WADO-RS series metadata of the big series, --reps times;
- WADO-RS frames: frame 1 of --frames instances of that series, one request each.

Medians (and p95) are printed side by side. Everything runs on 127.0.0.1; every process
started is stopped and the temp folder removed. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(REPO_ROOT))

from ingest_servers import SERVER_AE, Running, dcmtk_env, machine, stop, workspace  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian  # noqa: E402
from web_servers import MinipacsWeb, OrthancWeb, wait_http  # noqa: E402

STORESCU: Final = "/usr/bin/storescu"
ROOT: Final = "1.2.826.0.1.3680043.8.498.4242.99"
SIDE: Final = 64
STORE_TIMEOUT: Final = 1800.0
# Uncompressed frames in Explicit VR Little Endian: what both servers answer (Orthanc's
# 1.7 plugin refuses the client's default "transfer-syntax=*" with 400).
NATIVE_FRAMES: Final = (("application/octet-stream", ExplicitVRLittleEndian),)


def _image(study: str, series: str, instance: str, number: int, patient: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, instance
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID = patient, patient.replace("^", "-")
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20240101", "101010", f"A{number}"
    ds.StudyDescription, ds.StudyID, ds.ReferringPhysicianName = "Bench", "1", ""
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "CT", 1, "Bench series"
    ds.InstanceNumber = number
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, number], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = SIDE
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = bytes((number + i) % 251 for i in range(SIDE * SIDE * 2))
    return ds


def write_files(folder: Path, series_size: int, studies: int) -> tuple[str, str, list[str]]:
    """The data set files; returns the big series' study and series UIDs, its instances."""
    folder.mkdir(parents=True)
    study, series = f"{ROOT}.1", f"{ROOT}.1.1"
    instances = []
    datasets = []
    for n in range(1, series_size + 1):
        uid = f"{series}.{n}"
        instances.append(uid)
        datasets.append(_image(study, series, uid, n, "BENCH^SERIES"))
    for n in range(1, studies + 1):
        other = f"{ROOT}.2.{n}"
        datasets.append(_image(other, f"{other}.1", f"{other}.1.1", n, f"BENCH^P{n:05d}"))
    for index, ds in enumerate(datasets):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = (
            ds.SOPClassUID, ds.SOPInstanceUID)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.save_as(folder / f"{index:06d}.dcm", enforce_file_format=True)
    return study, series, instances


def store(running: Running, folder: Path) -> float:
    started = time.perf_counter()
    subprocess.run([STORESCU, "-aec", SERVER_AE, "+sd", "+r", "-xs", "127.0.0.1",
                    str(running.port), str(folder)], check=True, env=dcmtk_env(),
                   timeout=STORE_TIMEOUT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def timed(call: Callable[[], Any], reps: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(reps):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return times, result


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(url: str, study: str, series: str, instances: list[str], args: argparse.Namespace
            ) -> dict[str, str]:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url)
    out: dict[str, str] = {}
    client.search_for_studies(limit=1)  # warm the session and the server's caches once
    times, found = timed(lambda: client.search_for_studies(), args.reps)
    out["QIDO /studies (all)"] = (f"{statistics.median(times):8.1f} ms median, "
                                  f"p95 {p95(times):.1f} ({len(found)} studies)")
    times, found = timed(lambda: client.search_for_studies(
        search_filters={"PatientID": "BENCH-P0001*"}), args.reps)
    out["QIDO /studies?PatientID=BENCH-P0001*"] = (
        f"{statistics.median(times):8.1f} ms median, p95 {p95(times):.1f} "
        f"({len(found)} studies)")
    times, metadata = timed(lambda: client.retrieve_series_metadata(study, series),
                            max(1, args.reps // 4))
    out[f"series /metadata ({len(instances)} instances)"] = (
        f"{statistics.median(times):8.1f} ms median ({len(metadata)} items)")
    frames = instances[: args.frames]
    times = []
    started = time.perf_counter()
    for uid in frames:
        t0 = time.perf_counter()
        client.retrieve_instance_frames(study, series, uid, frame_numbers=[1],
                                        media_types=NATIVE_FRAMES)
        times.append((time.perf_counter() - t0) * 1000)
    total = time.perf_counter() - started
    out[f"frames: frame 1 of {len(frames)} instances"] = (
        f"{total:8.2f} s total, {statistics.median(times):.1f} ms median, "
        f"p95 {p95(times):.1f} ms")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series-size", type=int, default=1000)
    parser.add_argument("--studies", type=int, default=500)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--tmp", default=None, help="parent folder of the temp data")
    parser.add_argument("--only", choices=("minipacs", "orthanc"), default=None)
    args = parser.parse_args()
    print(f"# DICOMweb benchmark on {machine()}")
    kinds = [kind for kind in (MinipacsWeb(), OrthancWeb())
             if args.only in (None, kind.name)]
    results: dict[str, dict[str, str]] = {}
    registry: list[Running] = []
    with workspace(args.tmp, "minipacs-web-bench-") as work:
        study, series, instances = write_files(work / "files", args.series_size, args.studies)
        for kind in kinds:
            missing = kind.available()
            if missing:
                print(f"- {kind.name}: skipped ({missing})")
                continue
            print(f"- {kind.name}: {kind.describe(16384)}")
            running = kind.start(work / kind.name, 16384, registry)
            try:
                wait_http(running, kind.http_port)
                seconds = store(running, work / "files")
                print(f"  stored {args.series_size + args.studies} files in {seconds:.1f} s")
                results[kind.name] = measure(kind.url(), study, series, instances, args)
            finally:
                stop(running)
    names = list(results)
    if not names:
        return 1
    rows = list(results[names[0]])
    width = max(len(row) for row in rows)
    print(f"\n{'':{width}}  " + "  ".join(f"{name:<48}" for name in names))
    for row in rows:
        print(f"{row:{width}}  " + "  ".join(f"{results[n].get(row, '-'):<48}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
