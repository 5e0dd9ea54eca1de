#!/usr/bin/env python3
"""Fill a minipacs index database directly (no network, no files) with the benchmark population.

    benchmarks/populate_index.py sqlite:///idx.db --instances 1000000

C-FIND reads only the index, so the store needs no files. The rows are the ones
minipacs' writer makes for C-STOREd files of the same population (``find_data``): the same
tables and columns, taken from the models' ``Base.metadata`` at run time (so the loader follows
schema changes), typed key columns from ``models.key_values``, multi-valued rows from
``models.multi_values``, level attributes as the writer's sorted compact JSON, primary keys
in the order the writer would assign them. Instance rows point at storage keys that do not
exist (``minipacs db check`` would report them missing). SQLite only.

Speed: the schema comes from ``minipacs.index.migrate.upgrade``; rows go in through
``executemany`` of compiled Core INSERTs in transactions of ``--commit-every`` instances,
with ``synchronous=OFF`` and WAL during the load, then ANALYZE and a WAL checkpoint.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(REPO_ROOT))

from find_data import SEED, Population, build  # noqa: E402
from sqlalchemy import Table  # noqa: E402
from sqlalchemy.dialects import sqlite as sqlite_dialect  # noqa: E402

from minipacs.index.engine import sync_url  # noqa: E402
from minipacs.index.migrate import upgrade  # noqa: E402
from minipacs.index.models import (  # noqa: E402
    Instance,
    Level,
    Patient,
    PatientValue,
    Series,
    SeriesValue,
    Study,
    StudyValue,
    key_values,
    multi_values,
)

__all__ = ["LoadStats", "load"]

# What the writer would have recorded for each instance's file and association.
RECEIVED_AT: Final = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
CALLING_AE: Final = "BENCHLOAD"
CALLED_AE: Final = "MINIPACS"
TRANSFER_SYNTAX: Final = "1.2.840.10008.1.2.1"  # Explicit VR Little Endian, as the files
FILE_SIZE: Final = 1024
DATASET_OFFSET: Final = 132 + 200  # preamble + "DICM" + a typical File Meta group
CHECKSUM_PREFIX: Final = "sha256:"
DEFAULT_COMMIT_EVERY: Final = 100_000
FLUSH_ROWS: Final = 20_000

_DIALECT: Final = sqlite_dialect.dialect()


def dumps(json_ds: Mapping[str, Any]) -> str:
    """The writer's JSON layout of a level's attributes (compact, sorted, Unicode)."""
    return json.dumps(json_ds, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class _Inserter:
    """Rows for one table, buffered as tuples and sent with one ``executemany``."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        unknown = set(columns) - set(table.c.keys())
        if unknown:
            raise RuntimeError(f"table {table.name} has no column(s) {sorted(unknown)}")
        missing = [c.name for c in table.columns
                   if c.name not in columns and not c.nullable and c.server_default is None
                   and c.default is None and not c.primary_key]
        if missing:  # the schema grew a required column this loader does not know
            raise RuntimeError(f"table {table.name}: no value for NOT NULL column(s) {missing}")
        compiled = table.insert().compile(dialect=_DIALECT, column_keys=list(columns))
        self.table = table
        self.sql = str(compiled)
        order = list(compiled.positiontup or ())
        index = {name: i for i, name in enumerate(columns)}
        self._order = [index[name] for name in order]
        self._processors: list[tuple[int, Callable[[Any], Any]]] = []
        for position, name in enumerate(order):
            column_type = table.c[name].type.dialect_impl(_DIALECT)
            processor = column_type.bind_processor(_DIALECT)
            if processor is not None:
                self._processors.append((position, processor))
        self.rows: list[tuple[Any, ...]] = []
        self.count = 0

    def add(self, values: Sequence[Any]) -> None:
        """`values` in the order of the constructor's `columns`."""
        row = [values[i] for i in self._order]
        for position, processor in self._processors:
            row[position] = processor(row[position])
        self.rows.append(tuple(row))

    def flush(self, db: sqlite3.Connection) -> None:
        if self.rows:
            db.executemany(self.sql, self.rows)
            self.count += len(self.rows)
            self.rows.clear()


class _LevelRows:
    """A level table and its multi-valued table; column lists fixed by the first row."""

    def __init__(self, level: Level, table: Table, values: Table) -> None:
        self.level = level
        self.table = table
        self.inserter: _Inserter | None = None
        self.columns: list[str] = []
        self.values = _Inserter(values, ["pk", "owner_pk", "tag", "value", "value_folded"])

    def add(self, pk: int, fixed: dict[str, Any], json_ds: dict[str, Any]) -> None:
        row = {"pk": pk, **fixed, "attributes": dumps(json_ds),
               **key_values(self.level, json_ds)}
        if self.inserter is None:
            self.columns = list(row)
            self.inserter = _Inserter(self.table, self.columns)
        self.inserter.add([row[c] for c in self.columns])
        for tag, value, folded in multi_values(self.level, json_ds):
            self.values.add([self.values.count + len(self.values.rows) + 1, pk, tag, value,
                             folded])

    def flush(self, db: sqlite3.Connection) -> None:
        if self.inserter is not None:
            self.inserter.flush(db)
        self.values.flush(db)


@dataclass(frozen=True, slots=True)
class LoadStats:
    patients: int
    studies: int
    series: int
    instances: int
    value_rows: int
    generate_s: float
    insert_s: float
    analyze_s: float
    database_bytes: int

    @property
    def rows(self) -> int:
        return self.patients + self.studies + self.series + self.instances + self.value_rows

    @property
    def total_s(self) -> float:
        return self.generate_s + self.insert_s + self.analyze_s


def _database_path(url: str) -> Path:
    parsed = sync_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        raise ValueError(f"the loader fills SQLite database files only, not {url}")
    return Path(parsed.database)


def load(url: str, instances: int, *, seed: str = SEED, replace: bool = False,
         commit_every: int = DEFAULT_COMMIT_EVERY,
         population: Population | None = None,
         progress: Callable[[str], None] | None = None) -> LoadStats:
    """Create the schema at `url` and fill it with the population of `instances` instances."""
    path = _database_path(url)
    if path.exists():
        if not replace:
            raise FileExistsError(f"{path} exists (use --replace to start from scratch)")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    pop = population if population is not None else build(instances, seed)
    generate_s = time.perf_counter() - started
    say(f"population built in {generate_s:.1f} s: {len(pop.patients):,} patients, "
        f"{len(pop.studies):,} studies, {len(pop.series):,} series, {pop.instances:,} instances")
    upgrade(url)

    started = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = OFF")  # a crashed load is simply run again
        db.execute("PRAGMA cache_size = -262144")  # 256 MiB: index pages stay in memory
        db.execute("PRAGMA temp_store = MEMORY")
        if db.execute("SELECT count(*) FROM instance").fetchone()[0]:
            raise RuntimeError(f"{path} already holds instances")
        value_rows = _insert(db, pop, commit_every, say)
        insert_s = time.perf_counter() - started
        started = time.perf_counter()
        db.execute("ANALYZE")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        analyze_s = time.perf_counter() - started
    finally:
        db.close()
    return LoadStats(len(pop.patients), len(pop.studies), len(pop.series), pop.instances,
                     value_rows, generate_s, insert_s, analyze_s, path.stat().st_size)


def _insert(db: sqlite3.Connection, pop: Population, commit_every: int,
            say: Callable[[str], None]) -> int:
    """Every row, in the writer's order: patient, its first study, its first series, ..."""
    patients = _LevelRows(Level.PATIENT, Patient.__table__, PatientValue.__table__)
    studies = _LevelRows(Level.STUDY, Study.__table__, StudyValue.__table__)
    series = _LevelRows(Level.SERIES, Series.__table__, SeriesValue.__table__)
    levels = (patients, studies, series)
    instances: _Inserter | None = None
    columns: list[str] = []
    done_patients: set[int] = set()
    done_studies: set[int] = set()
    pending = 0
    done = 0
    started = time.perf_counter()
    db.execute("BEGIN")
    for se in pop.series:
        study = se.study
        patient = study.patient
        if patient.number not in done_patients:
            done_patients.add(patient.number)
            patients.add(patient.number, {"patient_id": patient.patient_id,
                                          "issuer_of_patient_id": ""},
                         pop.patient_json(patient))
        if study.number not in done_studies:
            done_studies.add(study.number)
            studies.add(study.number, {"patient_pk": patient.number,
                                       "study_instance_uid": study.uid},
                        pop.study_json(study))
        series.add(se.number, {"study_pk": study.number, "series_instance_uid": se.uid},
                   pop.series_json(se))
        for index in range(1, se.instances + 1):
            json_ds = pop.instance_json(se, index)
            uid = pop.instance_uid(se, index)
            row = {
                "pk": done + 1,
                "series_pk": se.number,
                "sop_instance_uid": uid,
                "sop_class_uid": se.sop_class,
                "storage_key": f"bench/{done + 1:08x}.dcm",
                "file_size": FILE_SIZE,
                "checksum": f"{CHECKSUM_PREFIX}{done + 1:064x}",
                "dataset_offset": DATASET_OFFSET,
                "transfer_syntax_uid": TRANSFER_SYNTAX,
                "received_at": RECEIVED_AT,
                "calling_ae_title": CALLING_AE,
                "called_ae_title": CALLED_AE,
                "attributes": dumps(json_ds),
                **key_values(Level.IMAGE, json_ds),
            }
            if instances is None:
                columns = list(row)
                instances = _Inserter(Instance.__table__, columns)
            instances.add([row[c] for c in columns])
            done += 1
            pending += 1
        if len(instances.rows) >= FLUSH_ROWS:  # type: ignore[union-attr]
            # Parents first: with foreign keys on, a child may not precede its parent.
            for level in levels:
                level.flush(db)
            instances.flush(db)  # type: ignore[union-attr]
        if pending >= commit_every:
            db.execute("COMMIT")
            db.execute("BEGIN")
            pending = 0
            elapsed = time.perf_counter() - started
            say(f"  {done:,} instances, {done / elapsed:,.0f} instances/s")
    for level in levels:
        level.flush(db)
    if instances is not None:
        instances.flush(db)
    db.execute("COMMIT")
    return sum(level.values.count for level in levels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="index database URL, e.g. sqlite:///index.db")
    parser.add_argument("--instances", type=int, default=10_000,
                        help="population size (multiple of 200; default 10000)")
    parser.add_argument("--seed", default=SEED, help=f"population seed (default {SEED})")
    parser.add_argument("--replace", action="store_true", help="delete an existing database")
    parser.add_argument("--commit-every", type=int, default=DEFAULT_COMMIT_EVERY,
                        help="instances per transaction")
    args = parser.parse_args(argv)
    try:
        stats = load(args.url, args.instances, seed=args.seed, replace=args.replace,
                     commit_every=args.commit_every,
                     progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (ValueError, FileExistsError, RuntimeError) as exc:
        print(f"populate_index: {exc}", file=sys.stderr)
        return 2
    print(f"{stats.patients:,} patients, {stats.studies:,} studies, {stats.series:,} series, "
          f"{stats.instances:,} instances, {stats.value_rows:,} multi-valued key rows")
    print(f"generate {stats.generate_s:.1f} s, insert {stats.insert_s:.1f} s "
          f"({stats.rows / stats.insert_s:,.0f} rows/s, "
          f"{stats.instances / stats.insert_s:,.0f} instances/s), "
          f"ANALYZE+checkpoint {stats.analyze_s:.1f} s, total {stats.total_s:.1f} s; "
          f"database {stats.database_bytes / 1e6:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
