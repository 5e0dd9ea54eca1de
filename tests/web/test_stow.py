"""STOW-RS: dicomweb-client and hand-made bodies (quoted or bare boundary, chunked), into
the C-STORE ingest path; refusals with their Failure Reason; a 300 MB instance streamed
through a `minipacs serve` subprocess whose peak RSS must stay flat."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import requests

from minipacs.proto.status import Status
from tests.interop.storecheck import daemon, daemon_config, index_rows, sha256_file
from tests.interop.test_store_failures import MEMORY_BOUND
from tests.web.webdata import ROOT, WebServer, call, image, web_server, with_meta, write

STUDY = f"{ROOT}.1"
MIB: Final = 1 << 20
STREAMED: Final = 300 * MIB
PIXEL_DATA_OW: Final = struct.Struct("<HH2sHI")  # PS3.5 §7.1.2 explicit VR LE header


def part10(ds: Any, tmp: Path) -> bytes:
    return write(ds, tmp / f"{ds.SOPInstanceUID}.dcm").read_bytes()


def body(files: list[bytes], boundary: str) -> bytes:
    out = b""
    for data in files:
        out += (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode() + data
        out += b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def pieces(data: bytes, size: int = 7000) -> Iterator[bytes]:
    """An iterable body: requests sends it with Transfer-Encoding: chunked."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def sequence(answer: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return list(answer.get(tag, {}).get("Value", []))


@pytest.fixture
async def web(tmp_path: Path) -> Any:
    async with web_server(tmp_path / "server") as running:
        yield running


async def test_store_a_folder_with_dicomweb_client(web: WebServer) -> None:
    datasets = [with_meta(image(1, 1, n)) for n in (1, 2, 3)]
    answer = await call(web.client().store_instances, datasets)  # a pydicom Dataset
    referenced = answer.ReferencedSOPSequence
    assert sorted(item.ReferencedSOPInstanceUID for item in referenced) == [
        f"{STUDY}.1.{n}" for n in (1, 2, 3)]
    assert "FailedSOPSequence" not in answer
    url = referenced[0].RetrieveURL
    assert url.startswith(f"{web.url}/studies/{STUDY}/series/{STUDY}.1/instances/")
    found = await call(web.client().search_for_instances, study_instance_uid=STUDY)
    assert len(found) == 3
    back = await call(web.client().retrieve_instance, STUDY, f"{STUDY}.1", f"{STUDY}.1.2")
    assert back.PixelData == image(1, 1, 2).PixelData
    # A re-sent instance: the duplicates policy (keep-first) answers success, as C-STORE does.
    again = await call(web.client().store_instances, datasets[:1])
    assert len(again.ReferencedSOPSequence) == 1


@pytest.mark.parametrize("quoted", [True, False])
async def test_boundaries_quoted_or_not_and_chunked(web: WebServer, tmp_path: Path,
                                                    quoted: bool) -> None:
    boundary = "b0und4ry-x"
    files = [part10(image(2, 1, n), tmp_path) for n in (1, 2)]
    value = f'"{boundary}"' if quoted else boundary
    response = await call(requests.post, f"{web.url}/studies", timeout=30,
                          data=pieces(body(files, boundary)), headers={
                              "Content-Type": f'multipart/related; type="application/dicom"; '
                                              f"boundary={value}"})
    assert response.status_code == 200, response.text
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert len(sequence(response.json(), "00081199")) == 2


async def test_failures_are_409_or_202_with_the_reason(web: WebServer, tmp_path: Path) -> None:
    good = part10(image(3, 1, 1), tmp_path)
    mismatched = image(3, 1, 2)
    bad = bytearray(part10(mismatched, tmp_path))
    # The File Meta names another instance than the data set: PS3.4 B.2.3 A900.
    other = f"{ROOT}.3.1.9".encode()
    bad = bytes(bad).replace(mismatched.SOPInstanceUID.encode(), other, 1)
    headers = {"Content-Type": "multipart/related; type=application/dicom; boundary=zz"}
    response = await call(requests.post, f"{web.url}/studies", data=body([bad], "zz"),
                          headers=headers, timeout=30)
    assert response.status_code == 409
    (failed,) = sequence(response.json(), "00081198")
    assert failed["00081197"]["Value"] == [Status.DATASET_DOES_NOT_MATCH_SOP_CLASS]
    assert "differs" in response.headers["Warning"]
    response = await call(requests.post, f"{web.url}/studies", data=body([good, bad], "zz"),
                          headers=headers, timeout=30)
    assert response.status_code == 202
    assert len(sequence(response.json(), "00081199")) == 1
    assert len(sequence(response.json(), "00081198")) == 1
    # An instance of another study posted to /studies/{study}.
    response = await call(requests.post, f"{web.url}/studies/{ROOT}.99", headers=headers,
                          data=body([part10(image(3, 1, 3), tmp_path)], "zz"), timeout=30)
    assert response.status_code == 409
    assert "Study Instance UID" in response.headers["Warning"]
    garbage = await call(requests.post, f"{web.url}/studies", headers=headers, timeout=30,
                         data=body([b"not dicom at all" * 20], "zz"))
    assert garbage.status_code == 409
    assert sequence(garbage.json(), "00081198")[0]["00081197"]["Value"] == [
        Status.CANNOT_UNDERSTAND]
    cut = await call(requests.post, f"{web.url}/studies", headers=headers, timeout=30,
                     data=body([good], "zz")[:-40])
    assert cut.status_code == 400
    wrong = await call(requests.post, f"{web.url}/studies", timeout=30, data=b"{}",
                       headers={"Content-Type": "application/json"})
    assert wrong.status_code == 415
    found = await call(web.client().search_for_instances, study_instance_uid=f"{ROOT}.3")
    assert [i["00080018"]["Value"] for i in found] == [[f"{ROOT}.3.1.1"]]


def _stream(boundary: str, head: bytes) -> Iterator[bytes]:
    yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + head
    chunk = bytes(range(256)) * (MIB // 256)
    for _ in range(STREAMED // MIB):
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def test_300_mb_instance_streams_in_bounded_memory(tmp_path: Path) -> None:
    ds = image(4, 1, 1, side=8)
    del ds.PixelData
    ds.Rows, ds.Columns = STREAMED // (2 * 4096), 4096
    head = write(ds, tmp_path / "head.dcm").read_bytes()
    head += PIXEL_DATA_OW.pack(0x7FE0, 0x0010, b"OW", 0, STREAMED)
    config = daemon_config(tmp_path / "server", min_free_mb=0)
    text = config.read_text() + "http: {host: 127.0.0.1, port: 0}\n"
    config.write_text(text)
    with daemon(config) as server:
        port = int(server.wait_for_line(r"DICOMweb at http://[^:]+:(\d+)")[1])
        url = f"http://127.0.0.1:{port}/dicom-web/studies"
        warm = requests.post(url, data=body([part10(image(4, 2, 1), tmp_path)], "w"),
                             headers={"Content-Type": "multipart/related; boundary=w"},
                             timeout=30)
        assert warm.status_code == 200, warm.text
        baseline = server.peak_rss()
        response = requests.post(url, data=_stream("big", head), timeout=120, headers={
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=big'})
        peak = server.peak_rss()
        server.terminate()
    assert response.status_code == 200, response.text
    assert peak - baseline < MEMORY_BOUND, f"peak RSS grew by {(peak - baseline) >> 20} MiB"
    rows = index_rows(tmp_path / "server" / "index.db")
    row = rows[ds.SOPInstanceUID]
    assert row.file_size == row.dataset_offset + len(head) - _data_set_start(head) + STREAMED
    assert sha256_file(tmp_path / "server" / "store" / row.storage_key) == row.checksum


def _data_set_start(part10_head: bytes) -> int:
    """Bytes of preamble and File Meta Information at the start of a Part 10 file."""
    (length,) = struct.unpack_from("<I", part10_head, 132 + 8)
    return 132 + 12 + length
