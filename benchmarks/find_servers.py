"""The C-FIND SCPs ``benchmarks/find.py`` compares, each with its own config on 127.0.0.1.

Built on ``ingest_servers`` (process groups, bounded start and stop). Every server gets a
fresh work folder; minipacs may instead be pointed at an index built by ``populate_index``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

from ingest_servers import SERVER_AE, Orthanc, ServerKind, free_port, minipacs_env

__all__ = ["CLIENT_AE", "FIND_SERVER_KINDS", "MinipacsFind", "OrthancFind", "QrscpFind"]

CLIENT_AE: Final = "BENCHSCU"


class MinipacsFind(ServerKind):
    """``python -m minipacs serve``; its index is in the work folder or at `database`."""

    name = "minipacs"

    def __init__(self, database: Path | None = None, label: str = "minipacs") -> None:
        self.database = database
        self.name = label

    def describe(self, max_pdu: int) -> str:
        where = (f"index built by populate_index ({self.database.name})" if self.database
                 else "index filled by C-STORE of the files (storage.fsync false)")
        return (f"python -m minipacs serve, SQLite WAL, logging INFO, max_pdu_length {max_pdu}; "
                f"{where}")

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        database = self.database.resolve() if self.database else workdir / "index.db"
        config = workdir / "minipacs.yaml"
        config.write_text(
            f"ae_title: {SERVER_AE}\n"
            f"listen: {{host: 127.0.0.1, port: {port}}}\n"
            "storage: {root: ./store, fsync: false}\n"
            f"database: {{url: 'sqlite:///{database}'}}\n"
            f"limits: {{max_pdu_length: {max_pdu}}}\n"
            "security: {unknown_aes: [all]}\n",  # the benchmark's SCU is not a listed peer
            encoding="utf-8",
        )
        return ([sys.executable, "-m", "minipacs", "serve", "--config", str(config)],
                minipacs_env())

    def count(self, workdir: Path) -> int:
        raise NotImplementedError  # counted over C-FIND by the benchmark


class OrthancFind(Orthanc):
    """The Debian Orthanc with its defaults for C-FIND, our SCU allowed to query."""

    def describe(self, max_pdu: int) -> str:
        return (f"{self.version().split('/')[-1]} (Debian), "
                f"TCP_NODELAY=1, SQLite index, C-FIND defaults (StorageAccessOnFind Always, "
                f"CaseSensitivePN false), SyncStorageArea false, HTTP off, no plugins")

    def config(self, workdir: Path, port: int, max_pdu: int) -> dict[str, object]:
        return {
            **super().config(workdir, port, max_pdu),
            "Name": "findbench",
            "SyncStorageArea": False,  # loading speed only; C-FIND does not write
            "DicomAlwaysAllowFind": True,
            "DicomModalities": {"bench": [CLIENT_AE, "127.0.0.1", free_port()]},
        }

    def count(self, workdir: Path) -> int:
        raise NotImplementedError


class QrscpFind(ServerKind):
    """pynetdicom's ``qrscp`` app: its own SQLite database, filled by C-STORE to it.

    It answers a C-FIND once per matching instance, whatever the level (pynetdicom 3.0).
    """

    name = "qrscp"
    answers_per_instance = True

    def describe(self, max_pdu: int) -> str:
        import pynetdicom

        return (f"pynetdicom {pynetdicom.__version__} qrscp app (python -m pynetdicom qrscp), "
                f"log_identifier False, log level error, max_pdu {max_pdu}")

    def ini(self, workdir: Path, port: int, max_pdu: int) -> str:
        """The app's configuration file for a server on `port` keeping its data in `workdir`."""
        return (
            "[DEFAULT]\n"
            f"  ae_title: {SERVER_AE}\n"
            f"  port: {port}\n"
            f"  max_pdu: {max_pdu}\n"
            "  acse_timeout: 30\n  dimse_timeout: 30\n  network_timeout: 30\n"
            "  bind_address: 127.0.0.1\n"
            f"  instance_location: {workdir / 'instances'}\n"
            f"  database_location: {workdir / 'instances.sqlite'}\n"
            "  log_identifier: False\n"
        )

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        config = workdir / "qrscp.ini"
        config.write_text(self.ini(workdir, port, max_pdu), encoding="utf-8")
        return ([sys.executable, "-m", "pynetdicom", "qrscp", "-c", str(config), "-ll", "error"],
                dict(os.environ))

    def count(self, workdir: Path) -> int:
        raise NotImplementedError


FIND_SERVER_KINDS: Final[dict[str, ServerKind]] = {
    kind.name: kind for kind in (MinipacsFind(), OrthancFind(), QrscpFind())
}
