"""Test data and the in-process server for the DICOMweb tests.

Data sets are made with pydicom (small, deterministic); a server runs in the test's loop
with HTTP on 127.0.0.1:0 and is filled by C-STORE (pynetdicom, a real peer) before the
DICOMweb client (dicomweb-client, blocking: run through a thread) talks to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from minipacs.app.daemon import DaemonServer
from tests.interop.storecheck import pynetdicom_store
from tests.support import LOOPBACK, UID_ROOT, WAIT, make_config, running_server

ROOT: Final = f"{UID_ROOT}.14"
SIDE: Final = 32


def image(study: int, series: int, number: int, *, modality: str = "CT",
          patient: str = "Doe^Jane", patient_id: str = "P1", study_date: str = "20240315",
          side: int = SIDE, frames: int = 1) -> Dataset:
    """A small monochrome image; UIDs derived from (study, series, number)."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    ds.SOPInstanceUID = f"{ROOT}.{study}.{series}.{number}"
    ds.StudyInstanceUID = f"{ROOT}.{study}"
    ds.SeriesInstanceUID = f"{ROOT}.{study}.{series}"
    ds.PatientName = patient
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"A{study}"
    ds.StudyID = str(study)
    ds.StudyDescription = f"Study {study}"
    ds.ReferringPhysicianName = "Ref^Rita"
    ds.Modality = modality
    ds.SeriesNumber = series
    ds.SeriesDescription = f"Series {series}"
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [0, 0, number]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SliceThickness = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = side
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.WindowCenter = 1024
    ds.WindowWidth = 2048
    if frames > 1:
        ds.NumberOfFrames = frames
    pixels = bytearray()
    for frame in range(frames):
        for row in range(side):
            for col in range(side):
                value = (row * 64 + col * 8 + number * 16 + frame * 100) % 4096
                pixels += value.to_bytes(2, "little")
    ds.PixelData = bytes(pixels)
    return ds


def with_meta(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """`ds` with the File Meta Information a Part 10 writer needs."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    return ds


def write(ds: Dataset, path: Path, syntax: str = ExplicitVRLittleEndian) -> Path:
    with_meta(ds, syntax).save_as(path, enforce_file_format=True)
    return path


@dataclass
class WebServer:
    """A running minipacs with HTTP; `client` talks DICOMweb to it."""

    server: DaemonServer
    directory: Path

    @property
    def http_port(self) -> int:
        assert self.server.http is not None
        return self.server.http.port

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}/dicom-web"

    def client(self, **options: Any) -> DICOMwebClient:
        return DICOMwebClient(self.url, **options)

    async def store(self, datasets: Sequence[Dataset], syntaxes: Sequence[str] = ()) -> None:
        """C-STORE the data sets (pynetdicom), each must succeed."""
        folder = self.directory / "sent"
        folder.mkdir(exist_ok=True)
        syntaxes = list(syntaxes) or [ExplicitVRLittleEndian] * len(datasets)
        paths = [write(ds, folder / f"{ds.SOPInstanceUID}.dcm", syntax)
                 for ds, syntax in zip(datasets, syntaxes, strict=True)]
        results = await asyncio.to_thread(pynetdicom_store, self.server.port, paths)
        assert all(status == 0 for status, _ in results), results


@contextlib.asynccontextmanager
async def web_server(directory: Path, **sections: Any) -> AsyncIterator[WebServer]:
    directory.mkdir(parents=True, exist_ok=True)
    http = {"host": LOOPBACK, "port": 0, **sections.pop("http", {})}
    config = make_config(directory, http=http, **sections)
    async with running_server(config) as server:
        yield WebServer(server, directory)


async def call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """A blocking client call in a thread, bounded in time."""
    async with asyncio.timeout(WAIT * 3):
        return await asyncio.to_thread(function, *args, **kwargs)
