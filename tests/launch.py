"""Server processes for the tests and the benchmarks: Orthanc and the others on 127.0.0.1.

Shared by ``tests/interop/test_orthanc.py`` and ``benchmarks/*_servers.py``. Every server
runs in its own process group (``start_new_session``) so that stopping it — SIGTERM, then
SIGKILL after a timeout — also reaches the children DCMTK's ``storescp --fork`` makes.
Every wait is bounded. Standard library only (the benchmarks import it as a plain module).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

ORTHANC: Final = "/usr/sbin/Orthanc"  # Debian's package `orthanc`
START_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 20.0
POLL_INTERVAL: Final = 0.05
LOOPBACK: Final = "127.0.0.1"


def dcmtk_env() -> dict[str, str]:
    """The environment of every DCMTK-based process (Orthanc too): TCP_NODELAY=1."""
    return {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    """A started server: its process, port and folders."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log_path: Path
    log_file: object = field(repr=False, default=None)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def launch(argv: list[str], env: dict[str, str], workdir: Path, port: int,
           registry: list[Running] | None = None, timeout: float = START_TIMEOUT) -> Running:
    """Start `argv` in `workdir` (its own process group); return once `port` accepts.

    The server is added to `registry` before the wait, so a caller stops it even when
    the start fails; without a registry, a failed start stops it here.
    """
    log_path = workdir / "server.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                            stderr=subprocess.STDOUT, env=env, cwd=workdir,
                            start_new_session=True)
    running = Running(proc, port, workdir, log_path, log_file)
    if registry is not None:
        registry.append(running)
    try:
        wait_accepting(running, timeout)
    except BaseException:
        if registry is None:
            stop(running)
        raise
    return running


def wait_accepting(running: Running, timeout: float) -> None:
    """Poll until the server's port accepts a connection; RuntimeError if it exits or not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.proc.poll() is not None:
            raise RuntimeError(f"server exited with {running.proc.returncode} during start:\n"
                               f"{running.log_tail()}")
        try:
            with socket.create_connection((LOOPBACK, running.port), timeout=0.5):
                return
        except OSError:
            time.sleep(POLL_INTERVAL)
    raise RuntimeError(f"server not accepting on port {running.port} after {timeout:g} s:\n"
                       f"{running.log_tail()}")


def stop(running: Running) -> None:
    """SIGTERM the server's process group, SIGKILL it after `STOP_TIMEOUT` s."""
    proc = running.proc
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # Forked children (DCMTK --fork) may outlive the leader: finish the group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if running.log_file is not None:
        running.log_file.close()  # type: ignore[attr-defined]
        running.log_file = None


def orthanc_version() -> str:
    """The first line of ``Orthanc --version`` (or "Orthanc")."""
    lines = subprocess.run([ORTHANC, "--version"], capture_output=True, text=True,
                           timeout=30, check=False).stdout.splitlines()
    return lines[0] if lines else "Orthanc"


def orthanc_config(workdir: Path, *, ae_title: str, port: int,
                   max_pdu: int = 16384) -> dict[str, object]:
    """Orthanc's JSON configuration: DICOM on `port`, data in `workdir`, HTTP and plugins off.

    Callers add to it (HTTP for the REST API, DicomModalities, C-FIND options).
    """
    return {
        "Name": "minipacs-peer",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "StorageCompression": False,
        # Orthanc >= 1.7.4 fsyncs each stored file when this is true (its default).
        "SyncStorageArea": True,
        "Plugins": [],
        "LuaScripts": [],
        "HttpServerEnabled": False,
        "HttpPort": free_port(),
        "RemoteAccessAllowed": False,
        "DicomServerEnabled": True,
        "DicomAet": ae_title,
        "DicomPort": port,
        "DicomCheckCalledAet": False,
        # True (the default) lets an AE not listed in DicomModalities store.
        "DicomAlwaysAllowStore": True,
        "MaximumPduLength": max_pdu,
    }
