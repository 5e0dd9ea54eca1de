"""The Query/Retrieve SCPs ``benchmarks/retrieve.py`` compares, each with its own config.

Built on ``ingest_servers`` (process groups, bounded start and stop, free ports on
127.0.0.1) and ``find_servers`` (Orthanc and qrscp configs, extended here). Each server
knows the C-MOVE destination (DCMTK ``storescp``, AE ``DEST``) and lets the benchmark's SCU
(AE ``BENCHSCU``) store, move and get. The max PDU given is what each server advertises for
receiving; what it sends is bounded by the receiver's max PDU, which the benchmark sets
identically on ``storescp``, ``getscu`` and ``movescu``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

from find_servers import CLIENT_AE, QrscpFind
from ingest_servers import REPO_ROOT, SERVER_AE, Orthanc, ServerKind, free_port, minipacs_env

__all__ = ["CLIENT_AE", "DEST_AE", "MinipacsRetrieve", "OrthancRetrieve", "QrscpRetrieve",
           "retrieve_kinds"]

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
            f"peers: {{{DEST_AE}: {{host: 127.0.0.1, port: {self.dest_port}}}}}\n"
            "security: {unknown_aes: [all]}\n",  # the benchmark's SCU is not a listed peer
            encoding="utf-8",
        )
        env = minipacs_env(self.root)
        argv = [sys.executable, "-m", "minipacs", "serve", "--config", str(config)]
        profile_dir = os.environ.get("BENCH_PROFILE_MINIPACS")
        if profile_dir:  # cProfile the server's event-loop thread, for diagnosis
            Path(profile_dir).mkdir(parents=True, exist_ok=True)
            prof = str(Path(profile_dir) / f"{workdir.name}.prof")
            argv = [sys.executable, "-m", "cProfile", "-o", prof, *argv[1:]]
        return argv, env

    def count(self, workdir: Path) -> int:
        raise NotImplementedError  # the benchmark counts what the destination received


class OrthancRetrieve(Orthanc):
    """The Debian Orthanc; DEST and the SCU are DicomModalities (every request allowed)."""

    def __init__(self, dest_port: int) -> None:
        self.dest_port = dest_port

    def describe(self, max_pdu: int) -> str:
        return (f"{self.version().split('/')[-1]} (Debian), "
                f"TCP_NODELAY=1, SQLite index, defaults for retrieve (SynchronousCMove, "
                f"storage cache), SyncStorageArea false (loading only), StorageCompression "
                f"false, HTTP off, no plugins, MaximumPduLength {max_pdu}")

    def config(self, workdir: Path, port: int, max_pdu: int) -> dict[str, object]:
        return {
            **super().config(workdir, port, max_pdu),
            "Name": "retrievebench",
            "SyncStorageArea": False,  # loading speed only; a retrieve does not write
            # A modality given as [AET, host, port] may store, find, move and get.
            "DicomModalities": {
                "dest": [DEST_AE, "127.0.0.1", self.dest_port],
                "scu": [CLIENT_AE, "127.0.0.1", free_port()],
            },
        }

    def count(self, workdir: Path) -> int:
        raise NotImplementedError


class QrscpRetrieve(QrscpFind):
    """pynetdicom's ``qrscp`` app: its own SQLite database; DEST as a move destination."""

    def __init__(self, dest_port: int) -> None:
        self.dest_port = dest_port

    def ini(self, workdir: Path, port: int, max_pdu: int) -> str:
        return (f"{super().ini(workdir, port, max_pdu)}"
                f"[{DEST_AE}]\n"
                "  address: 127.0.0.1\n"
                f"  port: {self.dest_port}\n")


def retrieve_kinds(dest_port: int, other: Path | None = None) -> dict[str, ServerKind]:
    """Every server kind, configured with the C-MOVE destination's port.

    With `other` (a checkout of minipacs), "minipacs-other" runs that checkout's code.
    """
    kinds: list[ServerKind] = [MinipacsRetrieve(dest_port), OrthancRetrieve(dest_port),
                               QrscpRetrieve(dest_port)]
    if other is not None:
        kinds.append(MinipacsRetrieve(dest_port, other.resolve(), "minipacs-other"))
    return {kind.name: kind for kind in kinds}
