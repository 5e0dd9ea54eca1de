"""The bulk loader makes the rows minipacs' own ingest path makes for the same files.

In pytest's ``testpaths``: ``scripts/test`` (and so CI) runs it with the rest of the suite.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from find_data import MONTH_HIGH, MONTH_LOW, build, write_files
from populate_index import RECEIVED_AT, load

from minipacs.index.engine import make_engine
from minipacs.index.extract import read_attributes
from minipacs.index.migrate import upgrade
from minipacs.index.writer import IndexWriter
from minipacs.ports import InstanceRecord, StoredFile
from minipacs.storage.files import open_dataset, read_dicom_file

N = 1000
# Columns that describe the stored file, not the data set: they differ by construction.
FILE_COLUMNS = {"storage_key", "file_size", "checksum", "dataset_offset", "calling_ae_title",
                "called_ae_title"}


def _rows(path: Path, table: str) -> tuple[list[str], list[tuple[object, ...]]]:
    with sqlite3.connect(path) as db:
        cursor = db.execute(f"SELECT * FROM {table} ORDER BY 1")  # pk, or the key
        names = [d[0] for d in cursor.description]
        keep = [i for i, name in enumerate(names) if name not in FILE_COLUMNS]
        return [names[i] for i in keep], [tuple(row[i] for i in keep) for row in cursor]


async def test_loader_rows_equal_writer_rows(tmp_path: Path) -> None:
    pop = build(N)
    loaded = tmp_path / "loaded.db"
    stats = load(f"sqlite:///{loaded}", N, population=pop)
    assert (stats.patients, stats.studies, stats.series, stats.instances) == (40, 100, 250, N)

    written = tmp_path / "written.db"
    url = f"sqlite:///{written}"
    upgrade(url)
    engine = make_engine(url)
    writer = IndexWriter(engine)
    await writer.start()
    try:
        for path in write_files(pop, tmp_path / "files"):
            file = read_dicom_file(path)
            with open_dataset(file) as fp:
                attrs = read_attributes(fp, file.transfer_syntax_uid)
            await writer.submit(InstanceRecord(
                attrs, StoredFile(path.name, 1, "sha256:0", file.dataset_offset),
                file.transfer_syntax_uid, "A", "B", RECEIVED_AT))
    finally:
        await writer.aclose()
        engine.dispose()

    with sqlite3.connect(written) as db:
        tables = [name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' AND name <> 'alembic_version'")]
    assert {"patient", "study", "series", "instance", "study_value"} <= set(tables)
    for table in tables:
        columns, expected = _rows(written, table)
        got_columns, got = _rows(loaded, table)
        assert got_columns == columns, table
        assert got == expected, table


def test_population_cardinalities_and_targets() -> None:
    pop = build(10_000)
    assert (len(pop.patients), len(pop.studies), len(pop.series)) == (400, 1000, 2500)
    assert sum(se.instances for se in pop.series) == 10_000
    per_patient: dict[str, int] = {}
    for study in pop.studies:
        per_patient[study.patient.patient_id] = per_patient.get(study.patient.patient_id, 0) + 1
    assert set(per_patient.values()) == {1, 2, 3, 4}
    t = pop.targets
    assert sum(p.name.startswith("SMITH") for p in pop.patients) == t.name_matches == 20
    assert sum(MONTH_LOW <= s.date <= MONTH_HIGH for s in pop.studies) == t.date_matches == 50
    assert per_patient[t.patient_id] == t.patient_id_studies
    assert sum(s.accession == t.accession for s in pop.studies) == 1
    assert len({s.accession for s in pop.studies}) == len(pop.studies)
    assert sum(se.study.uid == t.series_study_uid for se in pop.series) == t.series_matches
    assert len({se.modality for se in pop.series}) >= 6
    # Deterministic: the same arguments give the same population.
    assert build(10_000).studies[:50] == pop.studies[:50]


def test_sizes_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 200"):
        build(1234)
    db = tmp_path / "x.db"
    load(f"sqlite:///{db}", 1000)
    with pytest.raises(FileExistsError):
        load(f"sqlite:///{db}", 1000)
    load(f"sqlite:///{db}", 1000, replace=True)  # starts over rather than appending
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM instance").fetchone()[0] == 1000
    assert dt.UTC is RECEIVED_AT.tzinfo
