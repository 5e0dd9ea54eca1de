"""Rendered and thumbnail resources: JPEG/PNG, viewport, quality, windowing from the data
set or the request, frames, compressed storage, and the refusals."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import requests
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from tests.web.webdata import ROOT, SIDE, WebServer, call, image, web_server, with_meta

STUDY = f"{ROOT}.1"
SERIES = f"{STUDY}.1"
INSTANCE = f"{STUDY}/series/{SERIES}/instances"


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[WebServer]:
    async with web_server(tmp_path) as running:
        rle = image(1, 1, 3, frames=2)
        rle.file_meta = FileMetaDataset()
        rle.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        rle.compress(RLELossless, generate_instance_uid=False)
        await running.store([image(1, 1, 1), image(1, 1, 2, frames=3), rle],
                            syntaxes=[ExplicitVRLittleEndian, ExplicitVRLittleEndian,
                                      RLELossless])
        yield running


async def get(web: WebServer, path: str, accept: str = "image/jpeg", **params: str
              ) -> requests.Response:
    return await call(requests.get, f"{web.url}/studies/{path}", params=params, timeout=20,
                      headers={"Accept": accept})


def picture(response: requests.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def expected(value: int, center: float, width: float) -> float:
    """PS3.3 C.11.2.1.2.1 linear window to 0..255."""
    y = ((value - (center - 0.5)) / (width - 1) + 0.5) * 255
    return min(max(y, 0), 255)


async def test_instance_rendered_with_the_data_sets_window(web: WebServer) -> None:
    response = await get(web, f"{INSTANCE}/{SERIES}.1/rendered", quality="100")
    assert response.headers["content-type"] == "image/jpeg"
    shown = picture(response)
    assert shown.format == "JPEG" and shown.size == (SIDE, SIDE) and shown.mode == "L"
    source = image(1, 1, 1)
    raw = with_meta(source).pixel_array
    for row, col in ((0, 0), (10, 20), (31, 31)):
        want = expected(int(raw[row, col]), 1024, 2048)
        assert abs(shown.getpixel((col, row)) - want) <= 6


async def test_viewport_window_png_and_frames(web: WebServer) -> None:
    small = picture(await get(web, f"{INSTANCE}/{SERIES}.1/rendered", viewport="16,16"))
    assert small.size == (16, 16)
    narrow = picture(await get(web, f"{INSTANCE}/{SERIES}.1/rendered", accept="image/png",
                               window="1000,100"))
    assert narrow.format == "PNG"
    values = list(narrow.tobytes())
    assert values.count(0) + values.count(255) > len(values) // 2  # mostly saturated
    first = picture(await get(web, f"{INSTANCE}/{SERIES}.2/frames/1/rendered",
                              accept="image/png"))
    third = picture(await get(web, f"{INSTANCE}/{SERIES}.2/frames/3/rendered",
                              accept="image/png"))
    assert list(first.tobytes()) != list(third.tobytes())
    compressed = picture(await get(web, f"{INSTANCE}/{SERIES}.3/frames/2/rendered"))
    assert compressed.size == (SIDE, SIDE)


async def test_thumbnails(web: WebServer) -> None:
    for path in (STUDY, f"{STUDY}/series/{SERIES}", f"{INSTANCE}/{SERIES}.1",
                 f"{INSTANCE}/{SERIES}.2/frames/2"):
        thumb = picture(await get(web, f"{path}/thumbnail"))
        assert max(thumb.size) <= 128
        assert len(set(thumb.tobytes())) > 1  # not blank


@pytest.mark.parametrize(("path", "params", "accept", "status"), [
    (f"{INSTANCE}/{SERIES}.1/rendered", {}, "image/gif", 406),
    (f"{INSTANCE}/{SERIES}.1/rendered", {"viewport": "0,10"}, "image/jpeg", 400),
    (f"{INSTANCE}/{SERIES}.1/rendered", {"quality": "200"}, "image/jpeg", 400),
    (f"{INSTANCE}/{SERIES}.1/rendered", {"window": "1,2,sigmoid"}, "image/jpeg", 400),
    (f"{INSTANCE}/{SERIES}.2/frames/9/rendered", {}, "image/jpeg", 404),
    (f"{ROOT}.9/thumbnail", {}, "image/jpeg", 404),
])
async def test_refusals(web: WebServer, path: str, params: dict[str, str], accept: str,
                        status: int) -> None:
    response = await get(web, path, accept, **params)
    assert response.status_code == status, response.text
