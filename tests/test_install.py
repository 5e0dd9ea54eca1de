"""A fresh, plain install: what the container image builds, and what it can do.

No Docker engine runs here, so the sources that docker/Dockerfile copies (exactly those,
read from its COPY lines) are laid out in a temporary folder as the image would have them
and installed into a fresh virtual environment with ``pip install ".[postgresql]"``, as its
RUN line does.
That venv holds minipacs and its declared dependencies only — nothing from the test venv —
so it also shows what a plain install serves: compressed instances decompressed for a
workstation that takes only uncompressed transfer syntaxes (issue 10 items 3 and 6).

Cost: one venv and one pip install per run, about 10 s here (wheels come from the package
index or pip's cache; pip builds minipacs with its usual build isolation, as in the image).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    MRImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
)

from minipacs.proto.sop import STUDY_ROOT_QR_GET
from tests.interop.test_retrieve import (
    ROOT,
    SERVER_AE,
    decoded,
    ident,
    populate,
    pynetdicom_get,
    study_uid,
)
from tests.support import LOOPBACK, REPO, ServeProcess, write_config

DOCKERFILE: Final = REPO / "docker" / "Dockerfile"
IMAGE_CONFIG: Final = PurePosixPath("/etc/minipacs/minipacs.yaml")
VOLUME: Final = "/var/lib/minipacs"  # created by the image's RUN line, a volume at run time
AUDIT_VOLUME: Final = "/var/log/minipacs"  # likewise; compose mounts one per service
INSTALL_TIMEOUT: Final = 600.0
# pydicom's own test files, one per compression family a workstation may not take.
COMPRESSED: Final = ("MR_small_RLE.dcm", "SC_rgb_jpeg_gdcm.dcm", "MR_small_jp2klossless.dcm")
COMPRESSED_STUDY: Final = 77
EXTRAS: Final = "postgresql"  # the image's index may be on PostgreSQL (docker/compose.yaml)
COMPOSE_CONFIG: Final = REPO / "docker" / "minipacs-compose.yaml"


@dataclass(frozen=True, slots=True)
class Copy:
    """One COPY instruction: sources in the build context, destination in the image."""

    sources: tuple[str, ...]
    destination: PurePosixPath
    into_folder: bool  # the destination names a folder (ends with / or several sources)


def dockerfile_copies(text: str) -> list[Copy]:
    """The COPY instructions, destinations resolved against the WORKDIR then in force."""
    logical = text.replace("\\\n", " ").splitlines()
    workdir = PurePosixPath("/")
    copies = []
    for line in logical:
        words = shlex.split(line, comments=True)
        if not words:
            continue
        instruction, args = words[0].upper(), [w for w in words[1:] if not w.startswith("--")]
        if instruction == "WORKDIR":
            workdir = workdir / args[0]
        elif instruction == "COPY":
            *sources, target = args
            copies.append(Copy(tuple(sources), workdir / target,
                               target.endswith("/") or len(sources) > 1))
        elif instruction == "ADD":
            raise AssertionError("ADD is not mirrored by this test: use COPY")
    return copies


def lay_out(copies: list[Copy], image: Path) -> None:
    """Copy each source from the repository to where the image has it, under `image`."""
    for copy in copies:
        target = image / copy.destination.relative_to("/")
        for source in copy.sources:
            path = REPO / source
            if path.is_dir():  # Docker copies a folder's contents into the destination
                shutil.copytree(path, target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                destination = target / path.name if copy.into_folder else target
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)


def plain_env() -> dict[str, str]:
    """Our environment without anything that would put this checkout on the import path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@dataclass(frozen=True, slots=True)
class PlainInstall:
    image: Path  # the image's file system, as far as the Dockerfile builds it
    venv: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "minipacs"), *args], cwd=self.image,
                              env=plain_env(), capture_output=True, text=True, timeout=60,
                              check=False)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlainInstall]:
    root = tmp_path_factory.mktemp("plain")
    image, venv = root / "image", root / "venv"
    copies = dockerfile_copies(DOCKERFILE.read_text(encoding="utf-8"))
    lay_out(copies, image)
    build = image / "src"  # the WORKDIR of the RUN line that installs
    assert f'RUN pip install ".[{EXTRAS}]" ' in DOCKERFILE.read_text(encoding="utf-8")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", f"{build}[{EXTRAS}]"],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT, env=plain_env(), check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    for folder in (VOLUME, AUDIT_VOLUME):  # the RUN line's mkdir -p
        (image / folder.lstrip("/")).mkdir(parents=True)
    yield PlainInstall(image, venv)


@pytest.mark.timeout(INSTALL_TIMEOUT + 60)
def test_image_sources_install_and_pass_serve_check(plain: PlainInstall) -> None:
    where = subprocess.run(
        [str(plain.venv / "bin" / "python"), "-c", "import minipacs; print(minipacs.__file__)"],
        cwd=plain.image, env=plain_env(), capture_output=True, text=True, timeout=60,
        check=True)
    assert Path(where.stdout.strip()).is_relative_to(plain.venv)  # the installed copy
    # The image's configuration, its volume mapped to the folder made for it here.
    shipped = (plain.image / IMAGE_CONFIG.relative_to("/")).read_text(encoding="utf-8")
    assert VOLUME in shipped
    config = plain.image / "etc" / "minipacs" / "checked.yaml"
    config.write_text(shipped.replace(VOLUME, str(plain.image / VOLUME.lstrip("/"))), "utf-8")
    result = plain.run("serve", "--check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"config OK: {config}\n")
    assert "listen: 0.0.0.0:11112\n" in result.stdout
    migrated = plain.run("db", "upgrade", "--config", str(config))  # the shipped migrations
    assert migrated.returncode == 0, migrated.stderr
    assert "index upgraded to revision" in migrated.stdout


def test_the_compose_configuration_passes_serve_check(plain: PlainInstall) -> None:
    """The compose file's configuration, on the image's install: its PostgreSQL driver
    loads (no connection is opened) and its store folder on the volume can be written."""
    shipped = COMPOSE_CONFIG.read_text(encoding="utf-8")
    assert VOLUME in shipped and AUDIT_VOLUME in shipped
    for folder in (VOLUME, AUDIT_VOLUME):
        shipped = shipped.replace(folder, str(plain.image / folder.lstrip("/")))
    config = plain.image / "etc" / "minipacs" / "compose.yaml"
    config.write_text(shipped, "utf-8")
    result = plain.run("serve", "--check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "database: postgresql://minipacs@db:5432/minipacs\n" in result.stdout


def compressed_study() -> tuple[list[tuple[Dataset, str]], dict[str, object]]:
    """The compressed files renamed into one study, and each one's pixels as pydicom reads
    them (in the test venv, which has the decoders too)."""
    from pydicom.data import get_testdata_file

    items, pixels = [], {}
    for n, name in enumerate(COMPRESSED, 1):
        path = get_testdata_file(name, download=False)
        assert path is not None, f"pydicom's test file {name} is missing"
        ds = dcmread(str(path))
        syntax = str(ds.file_meta.TransferSyntaxUID)
        pixels[f"{ROOT}.{COMPRESSED_STUDY}.{n}.1"] = ds.pixel_array
        ds.PatientID = "PLAIN"
        ds.StudyInstanceUID = study_uid(COMPRESSED_STUDY)
        ds.SeriesInstanceUID = f"{ROOT}.{COMPRESSED_STUDY}.{n}"
        ds.SOPInstanceUID = f"{ROOT}.{COMPRESSED_STUDY}.{n}.1"
        del ds.file_meta
        items.append((ds, syntax))
    return items, pixels


async def test_plain_install_decompresses_for_an_uncompressed_only_get(
        plain: PlainInstall, tmp_path: Path) -> None:
    """RLE, JPEG Lossless and JPEG 2000 instances reach a C-GET requestor that proposes
    Explicit VR Little Endian only, from a server with nothing but its own dependencies."""
    items, pixels = compressed_study()
    assert {syntax for _, syntax in items} == {RLELossless, JPEGLosslessSV1, JPEG2000Lossless}
    server = ServeProcess(write_config(tmp_path, ae_title=SERVER_AE), "--host", LOOPBACK,
                          command=[str(plain.venv / "bin" / "minipacs")], env=plain_env())
    try:
        server.start()
        await populate(server.port, items)
        result = await asyncio.to_thread(
            pynetdicom_get, server.port,
            ident("STUDY", StudyInstanceUID=study_uid(COMPRESSED_STUDY)),
            sop_class=STUDY_ROOT_QR_GET, syntaxes=(ExplicitVRLittleEndian,),
            storage=(MRImageStorage, SecondaryCaptureImageStorage))
    finally:
        server.stop()
    assert result.statuses[-1].Status == 0x0000, server.log
    assert sorted(result.stored) == sorted(pixels)
    for uid, data in result.stored.items():
        ds = decoded(data, ExplicitVRLittleEndian)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        assert (ds.pixel_array == pixels[uid]).all(), uid  # type: ignore[attr-defined]
