"""minipacs on PostgreSQL for the benchmarks (``--database-url``): one or two processes.

Each run gets a database of its own, made next to the one `--database-url` names (same
server and credentials; the role needs CREATEDB) and dropped after the run, so the named
database itself is never written. Two processes share one port (``listen.reuse_port``), one
index and one store, as README "Several processes on one index and store" describes; they
run under one ``sh`` so that the benchmark's RSS and CPU figures sum over both.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from ingest_servers import SERVER_AE, Running, ServerKind, count_files, minipacs_env
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

__all__ = ["MinipacsFindOnDatabase", "MinipacsOnDatabase", "ScratchDatabases", "copy_index"]

START_TIMEOUT: Final = 60.0
COPY_TIMEOUT: Final = 7200.0
_LISTENING: Final = re.compile(rb"listening on ")


class ScratchDatabases:
    """Databases made for one run each beside the one `url` names, dropped afterwards."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url).set(drivername="postgresql+psycopg")
        if self.url.get_backend_name() != "postgresql":
            raise SystemExit(f"--database-url: {url} is not a PostgreSQL URL")
        self._admin = create_engine(self.url, isolation_level="AUTOCOMMIT")
        self._numbers = itertools.count(1)
        self._made: list[str] = []

    def create(self) -> str:
        name = f"{self.url.database}_bench_{os.getpid()}_{next(self._numbers)}"
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self._made.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        if name in self._made:
            with self._admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            self._made.remove(name)

    def close(self) -> None:
        for name in list(self._made):
            self.drop(self.url.set(database=name).render_as_string(hide_password=False))
        self._admin.dispose()


def instance_rows(url: str) -> int:
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM instance")).scalar_one())
    finally:
        engine.dispose()


def write_config(workdir: Path, port: int, max_pdu: int, url: str, *, fsync: bool,
                 reuse_port: bool = False) -> Path:
    """The configuration of a benchmark server on PostgreSQL, its store in `workdir`."""
    config = workdir / "minipacs.yaml"
    config.write_text(
        f"ae_title: {SERVER_AE}\n"
        f"listen: {{host: 127.0.0.1, port: {port}, reuse_port: {str(reuse_port).lower()}}}\n"
        f"storage: {{root: ./store, fsync: {str(fsync).lower()}}}\n"
        f"database: {{url: '{url}'}}\n"
        f"limits: {{max_pdu_length: {max_pdu}}}\n"
        "security: {unknown_aes: [all]}\n",  # the benchmark's SCUs are not listed peers
        encoding="utf-8",
    )
    return config


def wait_listening(running: Running, processes: int, timeout: float = START_TIMEOUT) -> None:
    """Until `processes` "listening on" lines are in the server log (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(_LISTENING.findall(running.log_path.read_bytes())) >= processes:
            return
        if running.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{processes} minipacs processes not listening after {timeout:g} s:\n"
                       f"{running.log_tail()}")


class MinipacsOnDatabase(ServerKind):
    """`processes` x ``python -m minipacs serve`` on a fresh PostgreSQL database, one store."""

    def __init__(self, databases: ScratchDatabases, processes: int) -> None:
        self.databases = databases
        self.processes = processes
        self.name = f"pg-{processes}proc"
        self.forks = processes > 1
        self._urls: dict[Path, str] = {}

    def describe(self, max_pdu: int) -> str:
        shared = (f"{self.processes} processes sharing the port (listen.reuse_port), the "
                  "index and the store" if self.processes > 1 else "one process")
        return (f"python -m minipacs serve on PostgreSQL ({self.databases.url.host}:"
                f"{self.databases.url.port}, a fresh database per run), {shared}; "
                f"storage.fsync true, max_pdu_length {max_pdu}")

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        url = self._urls[workdir] = self.databases.create()
        config = write_config(workdir, port, max_pdu, url, fsync=True, reuse_port=self.forks)
        serve = f"'{sys.executable}' -m minipacs serve --config '{config}'"
        if self.processes == 1:
            return [sys.executable, "-m", "minipacs", "serve", "--config", str(config)], (
                minipacs_env())
        # The shell passes SIGTERM on and waits, so the processes shut down gracefully.
        starts = " ".join(f"{serve} & p{n}=$!;" for n in range(self.processes))
        pids = " ".join(f"$p{n}" for n in range(self.processes))
        script = f"trap 'kill {pids}; wait' TERM; {starts} wait"
        return ["sh", "-c", script], minipacs_env()

    def start(self, workdir: Path, max_pdu: int, registry: list[Running]) -> Running:
        running = super().start(workdir, max_pdu, registry)
        wait_listening(running, self.processes)
        return running

    def count(self, workdir: Path) -> int:
        url = self._urls.pop(workdir)
        try:
            rows = instance_rows(url)
        finally:
            self.databases.drop(url)
        files = count_files(workdir / "store", ".dcm", skip=".spool")
        if rows != files:
            raise RuntimeError(f"{self.name}: {rows} index rows but {files} files")
        return rows


def copy_index(sqlite_path: Path, url: str, workdir: Path) -> float:
    """``minipacs db copy`` of an SQLite index into the database `url`; the seconds it took."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "copy.yaml"
    config.write_text(f"database: {{url: 'sqlite:///{sqlite_path.resolve()}'}}\n"
                      "storage: {root: ./store}\n", encoding="utf-8")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "minipacs", "db", "copy", "--to", url,
                           "--config", str(config)], stdin=subprocess.DEVNULL,
                          capture_output=True, env=minipacs_env(), timeout=COPY_TIMEOUT,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"db copy failed: {done.stderr.decode(errors='replace')[-500:]}")
    return time.perf_counter() - started


class MinipacsFindOnDatabase(ServerKind):
    """``python -m minipacs serve`` on an index already in PostgreSQL (C-FIND benchmark)."""

    def __init__(self, url: str, label: str = "minipacs/pg") -> None:
        self.url = url
        self.name = label

    def describe(self, max_pdu: int) -> str:
        return (f"python -m minipacs serve on PostgreSQL ({make_url(self.url).host}), the "
                f"populate_index index copied there with minipacs db copy, logging INFO, "
                f"max_pdu_length {max_pdu}")

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        config = write_config(workdir, port, max_pdu, self.url, fsync=False)
        return ([sys.executable, "-m", "minipacs", "serve", "--config", str(config)],
                minipacs_env())

    def count(self, workdir: Path) -> int:
        raise NotImplementedError  # counted over C-FIND by the benchmark
