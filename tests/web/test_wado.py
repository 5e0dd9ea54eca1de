"""WADO-RS with dicomweb-client: instances with transfer-syntax negotiation, metadata from
the index, frames (native and RLE-compressed, as stored or decompressed), bulk data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import requests
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from tests.web.webdata import ROOT, SIDE, WebServer, call, image, web_server

STUDY = f"{ROOT}.1"
SERIES = f"{STUDY}.1"
FRAME_BYTES = SIDE * SIDE * 2


def frame_of(number: int, frame: int, frames: int) -> bytes:
    data = image(1, 1, number, frames=frames).PixelData
    return data[(frame - 1) * FRAME_BYTES:frame * FRAME_BYTES]


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[WebServer]:
    async with web_server(tmp_path) as running:
        implicit = image(1, 1, 1)
        multi = image(1, 1, 2, frames=3)
        rle = image(1, 1, 3, frames=2)
        rle.file_meta = FileMetaDataset()
        rle.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        rle.compress(RLELossless, generate_instance_uid=False)
        await running.store([implicit, multi, rle, image(2, 1, 1)],
                            syntaxes=[ImplicitVRLittleEndian, ExplicitVRLittleEndian,
                                      RLELossless, ExplicitVRLittleEndian])
        yield running


async def test_study_series_and_instance_retrieval(web: WebServer) -> None:
    client = web.client()
    study = await call(client.retrieve_study, STUDY)
    assert sorted(ds.SOPInstanceUID for ds in study) == [f"{SERIES}.{n}" for n in (1, 2, 3)]
    series = await call(client.retrieve_series, STUDY, SERIES)
    assert len(series) == 3
    one = await call(client.retrieve_instance, STUDY, SERIES, f"{SERIES}.2")
    assert one.PixelData == image(1, 1, 2, frames=3).PixelData


async def test_transfer_syntax_negotiation(web: WebServer) -> None:
    client = web.client()
    uid = f"{SERIES}.1"  # stored in Implicit VR Little Endian
    plain = ("application/dicom",)  # no transfer-syntax parameter: Explicit VR LE
    default = await call(client.retrieve_instance, STUDY, SERIES, uid, media_types=plain)
    assert default.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # converted
    assert default.PixelData == image(1, 1, 1).PixelData
    stored = await call(client.retrieve_instance, STUDY, SERIES, uid,
                        media_types=(("application/dicom", "*"),))
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    rle = await call(client.retrieve_instance, STUDY, SERIES, f"{SERIES}.3",
                     media_types=plain)
    assert rle.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # decompressed
    assert rle.PixelData == image(1, 1, 3, frames=2).PixelData
    # Several media ranges: the first we cannot produce is skipped, not fatal.
    response = await call(requests.get, f"{web.url}/studies/{STUDY}/series/{SERIES}/instances/"
                          f"{uid}", timeout=10, headers={"Accept": (
                              'multipart/related; type="application/dicom"; '
                              "transfer-syntax=1.2.840.10008.1.2.4.50, "
                              'multipart/related; type="application/dicom"; '
                              "transfer-syntax=1.2.840.10008.1.2; q=0.5")})
    assert response.status_code == 200
    assert "transfer-syntax=1.2.840.10008.1.2\r\n" in response.content[:300].decode("latin-1")
    refused = await call(requests.get, f"{web.url}/studies/{STUDY}", timeout=10, headers={
        "Accept": 'multipart/related; type="application/dicom"; '
                  "transfer-syntax=1.2.840.10008.1.2.4.50"})
    assert refused.status_code == 406


async def test_metadata_comes_from_the_index_with_bulk_data_uris(web: WebServer) -> None:
    client = web.client()
    series = await call(client.retrieve_series_metadata, STUDY, SERIES)
    assert sorted(m["00080018"]["Value"][0] for m in series) == [
        f"{SERIES}.{n}" for n in (1, 2, 3)]
    for item in series:
        assert item["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]  # patient level too
        assert item["00280010"]["Value"] == [SIDE]
        uri = item["7FE00010"]["BulkDataURI"]
        assert uri.endswith(f"/instances/{item['00080018']['Value'][0]}/bulkdata/7FE00010")
    study = await call(client.retrieve_study_metadata, STUDY)
    assert len(study) == 3
    one = await call(client.retrieve_instance_metadata, STUDY, SERIES, f"{SERIES}.2")
    assert one["00280008"]["Value"] == [3]
    bulk = await call(client.retrieve_bulkdata, series[0]["7FE00010"]["BulkDataURI"])
    assert b"".join(bulk) == next(
        image(1, 1, n, frames=f).PixelData for n, f in ((1, 1), (2, 3), (3, 2))
        if series[0]["00080018"]["Value"][0] == f"{SERIES}.{n}")


async def test_frames_native_and_compressed(web: WebServer) -> None:
    client = web.client()
    frames = await call(client.retrieve_instance_frames, STUDY, SERIES, f"{SERIES}.2",
                        frame_numbers=[3, 1])
    assert frames == [frame_of(2, 3, 3), frame_of(2, 1, 3)]
    single = await call(client.retrieve_instance_frames, STUDY, SERIES, f"{SERIES}.1",
                        frame_numbers=[1], media_types=(("application/octet-stream", "*"),))
    assert single == [image(1, 1, 1).PixelData]
    decoded = await call(client.retrieve_instance_frames, STUDY, SERIES, f"{SERIES}.3",
                         frame_numbers=[2])
    assert decoded == [frame_of(3, 2, 2)]
    response = await call(requests.get, f"{web.url}/studies/{STUDY}/series/{SERIES}/instances/"
                          f"{SERIES}.3/frames/1,2", timeout=10, headers={
                              "Accept": "multipart/related; type=application/octet-stream; "
                                        "transfer-syntax=*"})
    assert response.status_code == 200
    head = response.content[:300].decode("latin-1")
    assert f"transfer-syntax={RLELossless}" in head
    assert len(response.content) < 2 * FRAME_BYTES  # the RLE bitstreams, not pixels


@pytest.mark.parametrize(("path", "status"), [
    (f"/studies/{ROOT}.9", 404),
    (f"/studies/{STUDY}/series/{SERIES}/instances/{SERIES}.2/frames/4", 404),
    (f"/studies/{STUDY}/series/{SERIES}/instances/{SERIES}.2/frames/0", 400),
    (f"/studies/{STUDY}/series/{SERIES}/instances/{SERIES}.2/frames/x", 400),
    (f"/studies/{ROOT}.9/metadata", 404),
])
async def test_errors(web: WebServer, path: str, status: int) -> None:
    response = await call(requests.get, web.url + path, timeout=10)
    assert response.status_code == status, response.text
