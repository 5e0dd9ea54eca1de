"""The C-STORE SCPs ``benchmarks/ingest.py`` compares, each started with its own config.

Processes are started and stopped by ``tests/launch.py`` (shared with the Orthanc interop
test): each in its own process group, every wait bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # the launcher is shared with the tests
    sys.path.insert(1, str(REPO_ROOT))

from tests.launch import (  # noqa: E402
    ORTHANC,
    Running,
    dcmtk_env,
    free_port,
    launch,
    orthanc_config,
    orthanc_version,
    stop,
)

__all__ = [
    "DCMTK_STORESCP", "ORTHANC", "REPO_ROOT", "SERVER_AE", "SERVER_KINDS", "Minipacs",
    "Orthanc", "Running", "ServerKind", "dcmtk_env", "free_port", "machine", "minipacs_env",
    "minipacs_serve", "security_section", "stop", "workspace",
]

DCMTK_STORESCP: Final = "/usr/bin/storescp"
SERVER_AE: Final = "BENCHSCP"
# Orthanc's index: Resources.resourceType 1-4 = patient, study, series, instance.
ORTHANC_INSTANCE_LEVEL: Final = 4


def minipacs_env(root: Path = REPO_ROOT) -> dict[str, str]:
    """The environment of a ``python -m minipacs`` process running the code in `root`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return env


def machine() -> str:
    """The host, CPUs, kernel, Python and load average, for a report's header."""
    load1, load5, _ = os.getloadavg()
    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Linux {platform.release()}, Python {platform.python_version()}, "
            f"load average {load1:.2f} {load5:.2f}")


@contextlib.contextmanager
def workspace(parent: str | None, prefix: str) -> Iterator[Path]:
    """A fresh temporary folder under `parent`, removed with all it holds afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def count_files(root: Path, suffix: str = "", skip: str | None = None) -> int:
    """Regular files under `root` (recursive) ending in `suffix`, ignoring folder `skip`."""
    total = 0
    for _folder, dirs, files in os.walk(root):
        if skip is not None and skip in dirs:
            dirs.remove(skip)
        total += sum(1 for name in files if name.endswith(suffix))
    return total


class ServerKind:
    """One kind of server; subclasses say how to start it and how to count what arrived."""

    name = "?"
    forks = False  # True: its RSS is the sum over its process tree

    def available(self) -> str | None:
        """None when it can run here, else why not."""
        return None

    def describe(self, max_pdu: int) -> str:
        raise NotImplementedError

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def count(self, workdir: Path) -> int:
        """Instances that arrived (called after the server stopped)."""
        raise NotImplementedError

    def start(self, workdir: Path, max_pdu: int, registry: list[Running]) -> Running:
        """Start on a free port with a fresh `workdir`; return once it accepts connections."""
        workdir.mkdir(parents=True, exist_ok=False)
        port = free_port()
        argv, env = self.command(workdir, port, max_pdu)
        return launch(argv, env, workdir, port, registry)


def security_section(root: Path) -> str:
    """The config line letting the benchmark's unlisted AEs in, for a checkout that has
    per-AE permissions (an A/B run's older checkout has neither them nor the key)."""
    if (root / "minipacs" / "security").is_dir():
        return "security: {unknown_aes: [all]}\n"
    return ""


def minipacs_serve(config: Path, workdir: Path, root: Path = REPO_ROOT
                   ) -> tuple[list[str], dict[str, str]]:
    """argv and environment of ``python -m minipacs serve --config CONFIG`` running the code
    of checkout `root`; under cProfile when ``BENCH_PROFILE_MINIPACS`` names a folder."""
    env = minipacs_env(root)
    argv = [sys.executable, "-m", "minipacs", "serve", "--config", str(config)]
    profile_dir = os.environ.get("BENCH_PROFILE_MINIPACS")
    if profile_dir:  # cProfile the server, for diagnosis; the folder outlives the run
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        prof = str(Path(profile_dir) / f"{workdir.name}.prof")
        argv = [sys.executable, "-m", "cProfile", "-o", prof, *argv[1:]]
    return argv, env


class Minipacs(ServerKind):
    """``python -m minipacs serve`` of this checkout, or of `root` (an A/B run's other side)."""

    name = "minipacs"

    def __init__(self, root: Path = REPO_ROOT, label: str = "minipacs") -> None:
        self.root = root
        self.name = label

    def describe(self, max_pdu: int) -> str:
        where = "" if self.root == REPO_ROOT else f"; code from {self.root}"
        return (f"python -m minipacs serve; storage.fsync true (fsync of the file, its folder "
                f"and a new fan-out folder's parent), SQLite WAL synchronous=FULL, "
                f"max_pdu_length {max_pdu}{where}")

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        config = workdir / "minipacs.yaml"
        config.write_text(
            f"ae_title: {SERVER_AE}\n"
            f"listen: {{host: 127.0.0.1, port: {port}}}\n"
            "storage: {root: ./store, fsync: true}\n"
            "database: {url: 'sqlite:///./index.db'}\n"
            f"limits: {{max_pdu_length: {max_pdu}}}\n",
            encoding="utf-8",
        )
        return minipacs_serve(config, workdir, self.root)

    def count(self, workdir: Path) -> int:
        with contextlib.closing(sqlite3.connect(workdir / "index.db")) as db:
            rows = int(db.execute("SELECT count(*) FROM instance").fetchone()[0])
        files = count_files(workdir / "store", ".dcm", skip=".spool")
        if rows != files:
            raise RuntimeError(f"minipacs: {rows} index rows but {files} files")
        return rows


class Orthanc(ServerKind):
    """The Debian Orthanc; the find and retrieve benchmarks adjust its `config`."""

    name = "orthanc"

    def available(self) -> str | None:
        return None if Path(ORTHANC).exists() else f"{ORTHANC} not installed"

    def version(self) -> str:
        """The first line of ``Orthanc --version`` (or "Orthanc")."""
        return orthanc_version()

    def describe(self, max_pdu: int) -> str:
        return (f"{self.version()} (Debian), TCP_NODELAY=1, "
                f"SyncStorageArea true (fdatasync of each file; no folder fsync, SQLite WAL "
                f"not synced per commit), StorageCompression false, no plugins, HTTP off, "
                f"MaximumPduLength {max_pdu}")

    def config(self, workdir: Path, port: int, max_pdu: int) -> dict[str, object]:
        """Orthanc's JSON configuration for a server on `port` keeping its data in `workdir`."""
        return {**orthanc_config(workdir, ae_title=SERVER_AE, port=port, max_pdu=max_pdu),
                "Name": "bench"}

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        path = workdir / "orthanc.json"
        path.write_text(json.dumps(self.config(workdir, port, max_pdu), indent=2),
                        encoding="utf-8")
        return [ORTHANC, str(path)], dcmtk_env()

    def count(self, workdir: Path) -> int:
        with contextlib.closing(sqlite3.connect(workdir / "index" / "index")) as db:
            rows = int(db.execute("SELECT count(*) FROM Resources WHERE resourceType = ?",
                                  (ORTHANC_INSTANCE_LEVEL,)).fetchone()[0])
        files = count_files(workdir / "storage")
        if files < rows:
            raise RuntimeError(f"orthanc: {rows} instances but {files} files")
        return rows


class PynetdicomStorescp(ServerKind):
    name = "pynetdicom"

    def describe(self, max_pdu: int) -> str:
        import pynetdicom

        return (f"pynetdicom {pynetdicom.__version__} storescp app, no index, no fsync, "
                f"-pdu {max_pdu}")

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        out = workdir / "out"
        out.mkdir()
        return ([sys.executable, "-m", "pynetdicom", "storescp", str(port), "-od", str(out),
                 "-pdu", str(max_pdu), "-ba", "127.0.0.1", "-aet", SERVER_AE],
                dict(os.environ))

    def count(self, workdir: Path) -> int:
        return count_files(workdir / "out")


class DcmtkStorescp(ServerKind):
    name = "dcmtk"
    forks = True

    def available(self) -> str | None:
        return None if Path(DCMTK_STORESCP).exists() else f"{DCMTK_STORESCP} not installed"

    def describe(self, max_pdu: int) -> str:
        version = subprocess.run([DCMTK_STORESCP, "--version"], capture_output=True, text=True,
                                 timeout=30, check=False).stdout.splitlines()
        return (f"{version[0].strip('$ ') if version else 'DCMTK storescp'}, --fork (one "
                f"process per association), no index, no fsync, TCP_NODELAY=1, -pdu {max_pdu}")

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        out = workdir / "out"
        out.mkdir()
        return ([DCMTK_STORESCP, "--fork", "-aet", SERVER_AE, "-pdu", str(max_pdu),
                 "-od", str(out), str(port)], dcmtk_env())

    def count(self, workdir: Path) -> int:
        return count_files(workdir / "out")


SERVER_KINDS: Final[dict[str, ServerKind]] = {
    kind.name: kind for kind in (Minipacs(), Orthanc(), PynetdicomStorescp(), DcmtkStorescp())
}
