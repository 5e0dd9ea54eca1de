"""The DICOMweb servers ``benchmarks/web.py`` compares: minipacs and Orthanc + its plugin.

Both get the same files by C-STORE (DCMTK storescu) and answer DICOMweb on 127.0.0.1.
Orthanc's DICOMweb plugin is Debian's ``orthanc-dicomweb`` package; every process started
here is stopped by ``ingest_servers.stop`` (its process group), every wait is bounded.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import yaml
from ingest_servers import (
    SERVER_AE,
    Orthanc,
    Running,
    ServerKind,
    dcmtk_env,
    free_port,
    minipacs_env,
)

ORTHANC_DICOMWEB: Final = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
HTTP_TIMEOUT: Final = 60.0
POLL: Final = 0.05


def wait_http(running: Running, port: int) -> None:
    """Return once `port` accepts connections (the server's HTTP side is up)."""
    deadline = time.monotonic() + HTTP_TIMEOUT
    while time.monotonic() < deadline:
        if running.proc.poll() is not None:
            raise RuntimeError(f"server exited during start:\n{running.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(POLL)
    raise RuntimeError(f"HTTP port {port} not accepting after {HTTP_TIMEOUT:g} s")


def package_version(name: str) -> str:
    """A Debian package's installed version ("" when not installed)."""
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True,
                            text=True, timeout=30, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


class MinipacsWeb(ServerKind):
    """``python -m minipacs serve`` with HTTP on; the index a SQLite file."""

    name = "minipacs"

    def __init__(self) -> None:
        self.http_port = 0

    def describe(self, max_pdu: int) -> str:
        return ("minipacs (this checkout), SQLite index, fsync off, DICOMweb on the same "
                "event loop (uvicorn + httptools)")

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        self.http_port = free_port()
        config = {
            "ae_title": SERVER_AE,
            "listen": {"host": "127.0.0.1", "port": port},
            "storage": {"root": str(workdir / "store"), "fsync": False, "min_free_mb": 0},
            "database": {"url": f"sqlite:///{workdir / 'index.db'}"},
            "limits": {"max_pdu_length": max_pdu},
            "logging": {"level": "WARNING"},
            "http": {"host": "127.0.0.1", "port": self.http_port},
            # The benchmark's clients send no credentials and are not listed peers.
            "security": {"unknown_aes": ["all"], "http_anonymous": ["all"]},
        }
        path = workdir / "minipacs.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return ([sys.executable, "-m", "minipacs", "serve", "--config", str(path)],
                minipacs_env())

    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"


class OrthancWeb(Orthanc):
    """Debian's Orthanc with Debian's DICOMweb plugin, HTTP on, no authentication."""

    name = "orthanc"

    def __init__(self) -> None:
        self.http_port = 0

    def available(self) -> str | None:
        missing = super().available()
        if missing is None and not ORTHANC_DICOMWEB.exists():
            missing = f"{ORTHANC_DICOMWEB} not installed (apt-get install orthanc-dicomweb)"
        return missing

    def describe(self, max_pdu: int) -> str:
        return (f"{self.version()} (Debian {package_version('orthanc')}), DICOMweb plugin "
                f"{package_version('orthanc-dicomweb')} (Debian), SQLite index, "
                f"SyncStorageArea false")

    def config(self, workdir: Path, port: int, max_pdu: int) -> dict[str, object]:
        config = super().config(workdir, port, max_pdu)
        self.http_port = free_port()
        config.update({
            "SyncStorageArea": False,
            "Plugins": [str(ORTHANC_DICOMWEB)],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        })
        return config

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        path = workdir / "orthanc.json"
        path.write_text(json.dumps(self.config(workdir, port, max_pdu), indent=2),
                        encoding="utf-8")
        return ["/usr/sbin/Orthanc", str(path)], dcmtk_env()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"
