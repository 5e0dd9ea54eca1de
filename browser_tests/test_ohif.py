"""OHIF v3, served by minipacs as documented (`http.viewer_root`), in headless Chromium.

The bundle is the @ohif/app package's dist/ (scripts/test-browser fetches and caches it);
minipacs holds one CT series. The browser opens the study list, finds the study, opens it
in the viewer, and the test checks what a person would: the study is listed, every frame
request was answered 200, and the viewport canvas shows an image (its pixels vary).
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path
from typing import Any, Final

import pytest
from PIL import Image, ImageStat
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from tests.web.webdata import ROOT, web_server

CHROMIUM: Final = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# The flags this machine needs: no sandbox as root, no GPU, no background network traffic.
CHROMIUM_FLAGS: Final = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync"]
STUDY: Final = f"{ROOT}.77"
SERIES: Final = f"{STUDY}.1"
SLICES: Final = 12
SIDE: Final = 128
PATIENT: Final = "Phantom^Browser"
STEP: Final = 60_000  # ms for one step of the viewer (load, list, open, render)


def ct_slice(number: int) -> Dataset:
    """A CT slice of a disc phantom: air outside, water inside, a bright rod (HU)."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"{SERIES}.{number}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    ds.PatientName, ds.PatientID, ds.PatientSex = PATIENT, "BROWSER-1", "O"
    ds.PatientBirthDate = "19800101"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20240601", "120000", "BR1"
    ds.StudyDescription, ds.StudyID = "OHIF browser test", "1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "CT", 1, "Phantom axial"
    ds.InstanceNumber = number
    ds.FrameOfReferenceUID = f"{STUDY}.9"
    ds.ImagePositionPatient = [-64.0, -64.0, float(number * 2)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = SIDE
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    pixels = bytearray()
    for row in range(SIDE):
        for col in range(SIDE):
            r = math.hypot(row - SIDE / 2, col - SIDE / 2)
            hu = -1000 if r > 50 else 0 + int(20 * math.sin(col / 6))
            if math.hypot(row - 50, col - 70 - number) < 8:
                hu = 300  # a rod that moves from slice to slice
            pixels += (hu + 1024).to_bytes(2, "little")
    ds.PixelData = bytes(pixels)
    return ds


@pytest.mark.timeout(300)
async def test_ohif_lists_and_displays_a_study(tmp_path: Path) -> None:
    dist = os.environ.get("OHIF_DIST")
    if not dist or not Path(dist, "index.html").is_file():
        pytest.fail("OHIF_DIST must name the @ohif/app dist/ folder: run scripts/test-browser",
                    pytrace=False)
    from playwright.async_api import async_playwright

    async with web_server(tmp_path / "server", http={"viewer_root": dist}) as web:
        await web.store([ct_slice(n) for n in range(1, SLICES + 1)])
        origin = f"http://127.0.0.1:{web.http_port}"
        frames: list[tuple[str, int]] = []
        failures: list[str] = []
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
                args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 900})
            try:
                page = browser.pages[0] if browser.pages else await browser.new_page()
                page.set_default_timeout(STEP)

                def on_response(response: Any) -> None:
                    if "/frames/" in response.url:
                        frames.append((response.url, response.status))
                    elif response.status >= 400 and "/dicom-web/" in response.url:
                        failures.append(f"{response.status} {response.url}")

                page.on("response", on_response)
                # 1. The study list (QIDO-RS) shows the study.
                await page.goto(origin + "/", wait_until="domcontentloaded")
                await page.get_by_text(re.compile("Phantom", re.I)).first.wait_for()
                await page.screenshot(path=str(tmp_path / "study-list.png"))
                # 2. The study in the viewer (metadata, then frames through WADO-RS).
                await page.goto(f"{origin}/viewer?StudyInstanceUIDs={STUDY}",
                                wait_until="domcontentloaded")
                canvas = page.locator("canvas.cornerstone-canvas").first
                await canvas.wait_for(state="visible")
                await page.wait_for_function(
                    """() => { const c = document.querySelector('canvas.cornerstone-canvas');
                               return c && c.width > 0 && c.height > 0; }""")
                await page.wait_for_load_state("networkidle", timeout=STEP)
                shot = await canvas.screenshot()
                await page.screenshot(path=str(tmp_path / "viewer.png"))
            finally:
                await browser.close()
    assert not failures, failures
    assert frames, "the viewer requested no frame"
    assert all(status == 200 for _, status in frames), frames
    shown = {url.split("/instances/")[1].split("/")[0] for url, _ in frames}
    assert shown <= {f"{SERIES}.{n}" for n in range(1, SLICES + 1)}, shown
    picture = Image.open(io.BytesIO(shot)).convert("L")
    stats = ImageStat.Stat(picture)
    extrema = picture.getextrema()
    assert extrema[1] - extrema[0] > 100, f"canvas looks blank: extrema {extrema}"
    assert stats.stddev[0] > 20, f"canvas looks blank: stddev {stats.stddev[0]:.1f}"
