"""Orthanc 1.10 (Debian's package) as a workstation in front of minipacs, through its REST API.

One Orthanc per module (temp folder, free ports, TCP_NODELAY=1, stopped afterwards), started
by ``tests/launch.py`` as the benchmarks start it. Each test runs minipacs in-process with
Orthanc as a configured peer, registers minipacs in Orthanc as modality MINIPACS and drives
``/modalities/MINIPACS/query`` and ``/move`` as an Orthanc user would (issue 10 item 2):

- a SERIES query without Study Instance UID (Orthanc sends exactly that) is answered across
  all studies unless ``query.strict_hierarchy`` is true;
- a PATIENT-level move, which Orthanc 1.10 sends on Study Root, moves that patient's studies
  into Orthanc.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from minipacs.app.daemon import open_server
from tests.interop.test_find import store_all
from tests.launch import (
    LOOPBACK,
    ORTHANC,
    Running,
    dcmtk_env,
    free_port,
    launch,
    orthanc_config,
    stop,
)
from tests.support import TEST_LIMITS, WAIT, make_config

SERVER_AE: Final = "MINIPACS"
ORTHANC_AE: Final = "ORTHANC"
ROOT: Final = "1.2.826.0.1.3680043.8.498.4242.90"
HTTP_TIMEOUT: Final = 30.0

# (patient, study, [(modality, description, instances)])
STUDIES: Final = (
    ("OPID-1", 1, (("MR", "T1 axial", 2), ("MR", "Localizer", 1), ("CT", "Topogram", 1))),
    ("OPID-1", 2, (("MR", "T2 sagittal", 1),)),
    ("OPID-2", 3, (("MR", "T1 coronal", 1),)),
)


def study_uid(study: int) -> str:
    return f"{ROOT}.{study}"


def series_uid(study: int, series: int) -> str:
    return f"{ROOT}.{study}.{series}"


def population() -> list[Dataset]:
    out = []
    for patient, study, series_list in STUDIES:
        for series, (modality, description, count) in enumerate(series_list, start=1):
            for instance in range(1, count + 1):
                ds = Dataset()
                ds.SOPClassUID = MRImageStorage if modality == "MR" else CTImageStorage
                ds.SOPInstanceUID = f"{series_uid(study, series)}.{instance}"
                ds.StudyInstanceUID = study_uid(study)
                ds.SeriesInstanceUID = series_uid(study, series)
                ds.PatientID = patient
                ds.PatientName = f"Orthanc^{patient}"
                ds.StudyDate = "20240105"
                ds.Modality = modality
                ds.SeriesDescription = description
                ds.SeriesNumber = series
                ds.InstanceNumber = instance
                ds.file_meta = FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                out.append(ds)
    return out


# --- Orthanc ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Orthanc:
    running: Running
    http_port: int

    @property
    def dicom_port(self) -> int:
        return self.running.port

    def rest(self, method: str, path: str, body: Any = None) -> Any:
        """One REST call (blocking); the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://{LOOPBACK}:{self.http_port}{path}",
                                         data=data, method=method)
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            text = response.read()
        return json.loads(text) if text.strip() else None


def _wait_http(orthanc: Orthanc) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            orthanc.rest("GET", "/system")
            return
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    if not Path(ORTHANC).exists():  # scripts/test installs it: never skipped
        pytest.fail(f"{ORTHANC} not found (apt-get install orthanc)", pytrace=False)
    workdir = tmp_path_factory.mktemp("orthanc")
    port, http_port = free_port(), free_port()
    config = {**orthanc_config(workdir, ae_title=ORTHANC_AE, port=port),
              "SyncStorageArea": False, "HttpServerEnabled": True, "HttpPort": http_port,
              "AuthenticationEnabled": False}
    path = workdir / "orthanc.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    running = launch([ORTHANC, str(path)], dcmtk_env(), workdir, port)
    try:
        peer = Orthanc(running, http_port)
        _wait_http(peer)
        yield peer
    finally:
        stop(running)


@contextlib.asynccontextmanager
async def minipacs(tmp_path: Path, orthanc: Orthanc, **sections: Any) -> AsyncIterator[int]:
    """minipacs with Orthanc as peer, populated, and registered in Orthanc as MINIPACS."""
    tmp_path.mkdir(exist_ok=True)
    config = make_config(tmp_path, ae_title=SERVER_AE, limits=TEST_LIMITS,
                         storage={"min_free_mb": 0},
                         peers={ORTHANC_AE: {"host": LOOPBACK, "port": orthanc.dicom_port}},
                         **sections)
    async with asyncio.timeout(WAIT), open_server(config) as running:
        await asyncio.to_thread(store_all, running.port, population())
        await asyncio.to_thread(orthanc.rest, "PUT", "/modalities/MINIPACS",
                                {"AET": SERVER_AE, "Host": LOOPBACK, "Port": running.port})
        yield running.port


def series_query(orthanc: Orthanc) -> list[dict[str, Any]]:
    """Orthanc's REST C-FIND at Series level with no Study Instance UID; its answers."""
    found = orthanc.rest("POST", "/modalities/MINIPACS/query", {
        "Level": "Series", "Query": {"Modality": "MR", "SeriesDescription": "T*"}})
    answers = orthanc.rest("GET", f"/queries/{found['ID']}/answers")
    return [orthanc.rest("GET", f"/queries/{found['ID']}/answers/{n}/content?simplify")
            for n in answers]


# --- the tests --------------------------------------------------------------------------------


async def test_orthanc_series_query_without_study_uid(orthanc: Orthanc, tmp_path: Path) -> None:
    async with minipacs(tmp_path / "lenient", orthanc):
        answers = await asyncio.to_thread(series_query, orthanc)
    got = sorted((a["StudyInstanceUID"], a["SeriesInstanceUID"], a["SeriesDescription"])
                 for a in answers)
    assert got == [(study_uid(1), series_uid(1, 1), "T1 axial"),
                   (study_uid(2), series_uid(2, 1), "T2 sagittal"),
                   (study_uid(3), series_uid(3, 1), "T1 coronal")]
    # query.strict_hierarchy: true keeps the refusal the Orthanc user saw (HTTP 500, A900).
    async with minipacs(tmp_path / "strict", orthanc, query={"strict_hierarchy": True}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(series_query, orthanc)
    assert refused.value.code == 500


async def test_orthanc_patient_move_on_study_root(orthanc: Orthanc, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    before = set(await asyncio.to_thread(orthanc.rest, "GET", "/instances"))
    with caplog.at_level(logging.INFO, logger="minipacs.retrieve"):
        async with minipacs(tmp_path, orthanc):
            await asyncio.to_thread(orthanc.rest, "POST", "/modalities/MINIPACS/move", {
                "Level": "Patient", "Resources": [{"PatientID": "OPID-1"}],
                "TargetAet": ORTHANC_AE})
    assert "non-standard level PATIENT served on Study Root" in caplog.text
    arrived = set(await asyncio.to_thread(orthanc.rest, "GET", "/instances")) - before
    uids = sorted([(await asyncio.to_thread(orthanc.rest, "GET", f"/instances/{i}/simplified-tags"))
                   ["SOPInstanceUID"] for i in arrived])
    assert uids == sorted(f"{series_uid(study, series)}.{n}"
                          for patient, study, series_list in STUDIES if patient == "OPID-1"
                          for series, (_, _, count) in enumerate(series_list, start=1)
                          for n in range(1, count + 1))
