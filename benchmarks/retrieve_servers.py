"""The Query/Retrieve SCPs ``benchmarks/retrieve.py`` compares, each with its own config.

Built on ``ingest_servers`` (process groups, bounded start and stop, free ports on
127.0.0.1). Each server knows the C-MOVE destination (DCMTK ``storescp``, AE ``DEST``) and
lets the benchmark's SCU (AE ``BENCHSCU``) store, move and get. The max PDU given is what
each server advertises for receiving; what it sends is bounded by the receiver's max PDU,
which the benchmark sets identically on ``storescp``, ``getscu`` and ``movescu``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Final

from ingest_servers import ORTHANC, REPO_ROOT, SERVER_AE, ServerKind, dcmtk_env, free_port

__all__ = ["CLIENT_AE", "DEST_AE", "MinipacsRetrieve", "OrthancRetrieve", "QrscpRetrieve",
           "retrieve_kinds"]

CLIENT_AE: Final = "BENCHSCU"
DEST_AE: Final = "DEST"


class MinipacsRetrieve(ServerKind):
    """``python -m minipacs serve`` with DEST as a peer; files loaded with fsync off."""

    name = "minipacs"

    def __init__(self, dest_port: int, root: Path = REPO_ROOT, label: str = "minipacs") -> None:
        self.dest_port = dest_port
        self.root = root  # the checkout whose minipacs runs (another one for an A/B run)
        self.name = label

    def describe(self, max_pdu: int) -> str:
        where = "" if self.root == REPO_ROOT else f", code from {self.root}"
        return (f"python -m minipacs serve, SQLite WAL, logging INFO, storage.fsync false "
                f"(loading only), max_pdu_length {max_pdu}, peer {DEST_AE}{where}")

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        config = workdir / "minipacs.yaml"
        config.write_text(
            f"ae_title: {SERVER_AE}\n"
            f"listen: {{host: 127.0.0.1, port: {port}}}\n"
            "storage: {root: ./store, fsync: false}\n"
            "database: {url: 'sqlite:///./index.db'}\n"
            f"limits: {{max_pdu_length: {max_pdu}}}\n"
            f"peers: {{{DEST_AE}: {{host: 127.0.0.1, port: {self.dest_port}}}}}\n",
            encoding="utf-8",
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.root), env.get("PYTHONPATH", "")) if p)
        argv = [sys.executable, "-m", "minipacs", "serve", "--config", str(config)]
        profile_dir = os.environ.get("BENCH_PROFILE_MINIPACS")
        if profile_dir:  # cProfile the server's event-loop thread, for diagnosis
            Path(profile_dir).mkdir(parents=True, exist_ok=True)
            prof = str(Path(profile_dir) / f"{workdir.name}.prof")
            argv = [sys.executable, "-m", "cProfile", "-o", prof, *argv[1:]]
        return argv, env

    def count(self, workdir: Path) -> int:
        raise NotImplementedError  # the benchmark counts what the destination received


class OrthancRetrieve(ServerKind):
    """The Debian Orthanc; DEST and the SCU are DicomModalities (every request allowed)."""

    name = "orthanc"

    def __init__(self, dest_port: int) -> None:
        self.dest_port = dest_port

    def available(self) -> str | None:
        return None if Path(ORTHANC).exists() else f"{ORTHANC} not installed"

    def describe(self, max_pdu: int) -> str:
        version = subprocess.run([ORTHANC, "--version"], capture_output=True, text=True,
                                 timeout=30, check=False).stdout.splitlines()
        return (f"{version[0].split('/')[-1] if version else 'Orthanc'} (Debian), "
                f"TCP_NODELAY=1, SQLite index, defaults for retrieve (SynchronousCMove, "
                f"storage cache), SyncStorageArea false (loading only), StorageCompression "
                f"false, HTTP off, no plugins, MaximumPduLength {max_pdu}")

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        config = {
            "Name": "retrievebench",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "index"),
            "StorageCompression": False,
            "SyncStorageArea": False,  # loading speed only; a retrieve does not write
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": False,
            "HttpPort": free_port(),
            "RemoteAccessAllowed": False,
            "DicomServerEnabled": True,
            "DicomAet": SERVER_AE,
            "DicomPort": port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            # A modality given as [AET, host, port] may store, find, move and get.
            "DicomModalities": {
                "dest": [DEST_AE, "127.0.0.1", self.dest_port],
                "scu": [CLIENT_AE, "127.0.0.1", free_port()],
            },
            "MaximumPduLength": max_pdu,
        }
        path = workdir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return [ORTHANC, str(path)], dcmtk_env()

    def count(self, workdir: Path) -> int:
        raise NotImplementedError


class QrscpRetrieve(ServerKind):
    """pynetdicom's ``qrscp`` app: its own SQLite database; DEST as a move destination."""

    name = "qrscp"

    def __init__(self, dest_port: int) -> None:
        self.dest_port = dest_port

    def describe(self, max_pdu: int) -> str:
        import pynetdicom

        return (f"pynetdicom {pynetdicom.__version__} qrscp app (python -m pynetdicom qrscp), "
                f"log_identifier False, log level error, max_pdu {max_pdu}")

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        config = workdir / "qrscp.ini"
        config.write_text(
            "[DEFAULT]\n"
            f"  ae_title: {SERVER_AE}\n"
            f"  port: {port}\n"
            f"  max_pdu: {max_pdu}\n"
            "  acse_timeout: 30\n  dimse_timeout: 30\n  network_timeout: 30\n"
            "  bind_address: 127.0.0.1\n"
            f"  instance_location: {workdir / 'instances'}\n"
            f"  database_location: {workdir / 'instances.sqlite'}\n"
            "  log_identifier: False\n"
            f"[{DEST_AE}]\n"
            "  address: 127.0.0.1\n"
            f"  port: {self.dest_port}\n",
            encoding="utf-8",
        )
        return ([sys.executable, "-m", "pynetdicom", "qrscp", "-c", str(config), "-ll", "error"],
                dict(os.environ))

    def count(self, workdir: Path) -> int:
        raise NotImplementedError


def retrieve_kinds(dest_port: int, other: Path | None = None) -> dict[str, ServerKind]:
    """Every server kind, configured with the C-MOVE destination's port.

    With `other` (a checkout of minipacs), "minipacs-other" runs that checkout's code.
    """
    kinds: list[ServerKind] = [MinipacsRetrieve(dest_port), OrthancRetrieve(dest_port),
                               QrscpRetrieve(dest_port)]
    if other is not None:
        kinds.append(MinipacsRetrieve(dest_port, other.resolve(), "minipacs-other"))
    return {kind.name: kind for kind in kinds}
