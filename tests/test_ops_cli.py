"""`minipacs db upgrade|check|rebuild|backup` and `minipacs delete`, as subprocesses.

Stores are filled through the C-STORE SCP's handler (`tests.ingest`), or by a running server
fed by pynetdicom; every check then
runs `python -m minipacs ...` and looks at exit codes, output, rows and files.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from sqlalchemy import inspect, select

from minipacs.app.daemon import prepare
from minipacs.config import Config, load_config
from minipacs.index import SqlIndex
from minipacs.index.engine import make_engine
from minipacs.index.models import Instance, Patient, Series, Study
from minipacs.ports import DuplicatePolicy, StoredFile
from minipacs.storage.inventory import read_journals, release_journal, write_journal
from tests.index.dicomdata import EXPLICIT_LE, IMPLICIT_LE, encode, make_dataset, uid
from tests.ingest import c_store_ok, store_service
from tests.support import (
    LOOPBACK,
    minipacs_env,
    pynetdicom_ae,
    run_minipacs,
    running_server,
    write_config,
)

WAIT = 60.0


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minipacs", *map(str, args)],
                          capture_output=True, text=True, timeout=WAIT, env=minipacs_env(),
                          stdin=subprocess.DEVNULL, check=False)


def setup(directory: Path, **sections: Any) -> tuple[Path, Config]:
    path = write_config(directory, **sections)
    return path, load_config(path)


def populate(config: Config, datasets: list[Dataset], ts: str = EXPLICIT_LE
             ) -> dict[str, StoredFile]:
    """Store and index `datasets` through the C-STORE SCP; returns files by SOP Instance UID."""
    storage = prepare(config)

    async def ingest() -> dict[str, StoredFile]:
        engine = make_engine(config.database.url)
        try:
            async with SqlIndex(engine, duplicate_policy=DuplicatePolicy(
                    config.storage.duplicates)) as index:
                service = store_service(storage, index)
                for ds in datasets:
                    await c_store_ok(service, encode(ds, ts), sop_class_uid=ds.SOPClassUID,
                                     sop_instance_uid=ds.SOPInstanceUID, transfer_syntax=ts,
                                     called_ae=config.ae_title)
            with engine.connect() as conn:
                rows = conn.execute(select(Instance.sop_instance_uid, Instance.storage_key,
                                           Instance.file_size, Instance.checksum,
                                           Instance.dataset_offset)).all()
        finally:
            engine.dispose()
        return {uid: StoredFile(key, size, checksum, offset)
                for uid, key, size, checksum, offset in rows}

    return asyncio.run(ingest())


def two_studies() -> list[Dataset]:
    """Study 1 (series 1: 3 instances, series 2: 2) and study 2 (1), patient PID1."""
    return [make_dataset(n, study=1, series=s) for s, count in ((1, 3), (2, 2))
            for n in range(1, count + 1)] + [make_dataset(1, study=2, series=1)]


def index_rows(config: Config) -> list[tuple[Any, ...]]:
    """Every instance row with its patient, study and series identity, sorted."""
    engine = make_engine(config.database.url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Instance.sop_instance_uid, Instance.sop_class_uid, Instance.storage_key,
                       Instance.checksum, Instance.file_size, Instance.dataset_offset,
                       Instance.transfer_syntax_uid, Instance.calling_ae_title,
                       Instance.called_ae_title, Instance.instance_number,
                       Series.series_instance_uid, Series.modality, Study.study_instance_uid,
                       Study.accession_number, Patient.patient_id,
                       Patient.issuer_of_patient_id, Patient.patient_name)
                .join(Series, Series.pk == Instance.series_pk)
                .join(Study, Study.pk == Series.study_pk)
                .join(Patient, Patient.pk == Study.patient_pk)
                .order_by(Instance.sop_instance_uid)
            ).all()
        return [tuple(r) for r in rows]
    finally:
        engine.dispose()


def table_counts(db: Path) -> tuple[int, int, int, int]:
    conn = sqlite3.connect(db)
    try:
        n = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
             for t in ("patient", "study", "series", "instance")]
    finally:
        conn.close()
    return n[0], n[1], n[2], n[3]


def db_file(config: Config) -> Path:
    return Path(config.database.url.split(":///", 1)[1])


# --- db upgrade ---------------------------------------------------------------------------


def test_db_upgrade_creates_the_schema_then_has_nothing_to_do(tmp_path: Path) -> None:
    path, config = setup(tmp_path, database={"url": f"sqlite:///{tmp_path / 'new' / 'i.db'}"})
    first = run("db", "upgrade", "--config", path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "index upgraded to revision 0008_processes (was empty)\n"
    engine = make_engine(config.database.url)
    try:
        assert {"patient", "study", "series", "instance", "alembic_version"} <= set(
            inspect(engine).get_table_names())
    finally:
        engine.dispose()
    again = run("db", "upgrade", "--config", path)
    assert (again.returncode, again.stdout) == (
        0, "index already at revision 0008_processes\n")


def test_commands_refuse_a_missing_index(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    for args in (["db", "check"], ["db", "backup", tmp_path / "b.db"],
                 ["delete", "--study", "1.2.3", "--yes"]):
        result = run(*args, "--config", path)
        assert result.returncode == 1, args
        assert result.stderr.endswith("(minipacs db upgrade creates it)\n")
        assert result.stderr.count("\n") == 1
    assert not db_file(config).exists()  # nothing was created by looking


def test_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: {fsync: maybe}\n", encoding="utf-8")
    result = run("db", "check", "--config", bad)
    assert result.returncode == 2
    assert result.stderr.startswith("config error: storage.fsync")


# --- db check -----------------------------------------------------------------------------


def test_db_check_clean_store_exits_0(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    populate(config, two_studies())
    (config.storage.root / ".spool" / "leftover.part").write_bytes(b"ignored")
    result = run("db", "check", "--config", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "checked 6 instances and 6 files: no problems\n"


def test_db_check_finds_missing_corrupted_resized_and_orphan_files(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    stored = populate(config, two_studies())
    root = config.storage.root
    missing, corrupted, resized = (stored[uid(1, 1, n)].key for n in (1, 2, 3))
    (root / missing).unlink()
    with open(root / corrupted, "r+b") as fp:  # same size, two bytes flipped
        fp.seek(stored[uid(1, 1, 2)].dataset_offset + 10)
        data = fp.read(2)
        fp.seek(-2, 1)
        fp.write(bytes(b ^ 0xFF for b in data))
    with open(root / resized, "ab") as fp:
        fp.write(b"\0\0")
    orphan = "ab/cd/abcd" + "0" * 28 + ".dcm"
    (root / "ab" / "cd").mkdir(parents=True, exist_ok=True)
    (root / orphan).write_bytes((root / stored[uid(2, 1, 1)].key).read_bytes())
    (root / "notes.txt").write_text("not an instance")

    result = run("db", "check", "--config", path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == ("checked 6 instances and 7 files: 1 missing file, 1 checksum mismatch, "
                        "1 size mismatch, 2 orphan files")
    assert sorted(lines[1:]) == sorted([
        f"missing file: {missing} (instance {uid(1, 1, 1)})",
        f"checksum mismatch: {corrupted} (instance {uid(1, 1, 2)})",
        f"size mismatch: {resized} ({stored[uid(1, 1, 3)].size + 2} bytes, index says "
        f"{stored[uid(1, 1, 3)].size})",
        f"orphan file: {orphan} ({stored[uid(2, 1, 1)].size} bytes, no index row)",
        "orphan file: notes.txt (15 bytes, no index row)",
    ])


def test_db_check_repair_sets_orphans_aside_and_drops_rows_of_missing_files(
        tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    stored = populate(config, two_studies())
    root = config.storage.root
    missing, corrupted = stored[uid(2, 1, 1)].key, stored[uid(1, 1, 2)].key
    orphan = "ab/cd/abcd" + "0" * 28 + ".dcm"
    (root / orphan).parent.mkdir(parents=True, exist_ok=True)
    (root / orphan).write_bytes((root / missing).read_bytes())
    (root / missing).unlink()  # the only instance of study 2: its rows all go
    with open(root / corrupted, "ab") as fp:
        fp.write(b"!")

    result = run("db", "check", "--repair", "--config", path)
    assert result.returncode == 1  # the altered file is only reported
    lines = result.stdout.splitlines()
    assert sorted(lines[:2]) == sorted([
        f"repaired orphan file: {orphan} ({stored[uid(2, 1, 1)].size} bytes, no index row)",
        f"repaired missing file: {missing} (instance {uid(2, 1, 1)})"])
    assert lines[2] == "checked 6 instances and 6 files: 1 size mismatch"
    assert (root / ".orphans" / orphan).is_file() and not (root / orphan).exists()
    (root / corrupted).write_bytes((root / corrupted).read_bytes()[:-1])
    again = run("db", "check", "--config", path)
    assert again.returncode == 0, again.stdout
    assert again.stdout == "checked 5 instances and 5 files: no problems\n"
    assert [r[0] for r in index_rows(config)] == sorted(
        stored_uid for stored_uid in stored if stored_uid != uid(2, 1, 1))


def test_db_check_lists_the_first_problems_unless_verbose(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    populate(config, [make_dataset(1)])
    folder = config.storage.root / "ff" / "ff"
    folder.mkdir(parents=True)
    for i in range(25):
        (folder / f"ffff{i:028x}.dcm").write_bytes(b"x")
    short = run("db", "check", "--config", path)
    assert short.returncode == 1
    assert short.stdout.splitlines()[0] == "checked 1 instance and 26 files: 25 orphan files"
    assert len(short.stdout.splitlines()) == 1 + 20 + 1
    assert short.stdout.splitlines()[-1] == "... and 5 more (--verbose lists them all)"
    full = run("db", "check", "--verbose", "--config", path)
    assert full.returncode == 1
    assert len(full.stdout.splitlines()) == 1 + 25


# --- db rebuild ---------------------------------------------------------------------------


def test_db_rebuild_restores_a_lost_index(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    populate(config, two_studies()[:3])
    populate(config, two_studies()[3:], ts=IMPLICIT_LE)  # another transfer syntax too
    before = index_rows(config)
    db = db_file(config)
    for name in (db.name, f"{db.name}-wal", f"{db.name}-shm"):
        (db.parent / name).unlink(missing_ok=True)

    result = run("db", "rebuild", "--config", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("indexed 6 of 6 files (0 duplicate, 0 skipped): "
                             "1 patient, 2 studies, 3 series, 6 instances\n")
    assert index_rows(config) == before
    assert run("db", "check", "--config", path).returncode == 0


def test_db_rebuild_backs_up_the_old_index_and_reports_unreadable_files(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    populate(config, two_studies())
    before = index_rows(config)
    root = config.storage.root
    garbage = "00/11/0011" + "0" * 28 + ".dcm"
    (root / "00" / "11").mkdir(parents=True)
    (root / garbage).write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    stray = root / "README"
    stray.write_text("hello")

    result = run("db", "rebuild", "--config", path)
    assert result.returncode == 1  # some files could not be indexed
    lines = result.stdout.splitlines()
    backups = list(db_file(config).parent.glob("index.db.bak-*"))
    assert len(backups) == 1
    assert lines[0] == (f"old index backed up to {backups[0]} "
                        "(1 patient, 2 studies, 3 series, 6 instances)")
    assert lines[1] == ("indexed 6 of 8 files (0 duplicate, 2 skipped): "
                        "1 patient, 2 studies, 3 series, 6 instances")
    assert "skipped README: not a storage key" in result.stderr
    assert f"skipped {garbage}: " in result.stderr
    assert index_rows(config) == before
    assert table_counts(backups[0]) == (1, 2, 3, 6)
    assert (root / garbage).exists() and stray.exists()  # left alone


def test_db_rebuild_follows_the_duplicate_policy_in_received_order(tmp_path: Path) -> None:
    path, config = setup(tmp_path, storage={"duplicates": "replace"})
    first = populate(config, [make_dataset(1)])[uid(1, 1, 1)]
    root = config.storage.root
    first_bytes = (root / first.key).read_bytes()
    ds = make_dataset(1)
    ds.StudyDescription = "Second copy"
    second = populate(config, [ds])[uid(1, 1, 1)]
    # The replaced file put back, as a crash between the commit and its unlink leaves it.
    assert not (root / first.key).exists()
    (root / first.key).write_bytes(first_bytes)
    assert [r[2] for r in index_rows(config)] == [second.key]
    old = (root / second.key).stat().st_mtime - 60  # received a minute before
    os.utime(root / first.key, (old, old))

    result = run("db", "rebuild", "--config", path)
    assert result.returncode == 0, result.stderr
    assert "(1 duplicate, 0 skipped)" in result.stdout
    assert [r[2] for r in index_rows(config)] == [second.key]  # the newest file wins
    assert (root / first.key).exists()  # rebuild deletes nothing


# --- delete -------------------------------------------------------------------------------


def test_delete_study_removes_rows_files_and_empty_parents(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    stored = populate(config, [*two_studies(),
                               make_dataset(1, study=3, series=1, patient_id="PID2")])
    root = config.storage.root
    result = run("delete", "--study", uid(1), "--yes", "--config", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"deleted study {uid(1)}: 0 patients, 1 study, 2 series, "
                             "5 instances, 5 files removed\n")
    gone = [k for k in stored if k.startswith(uid(1) + ".")]
    assert len(gone) == 5
    assert all(not (root / stored[k].key).exists() for k in gone)
    assert [r[0] for r in index_rows(config)] == [uid(2, 1, 1), uid(3, 1, 1)]
    assert (root / stored[uid(2, 1, 1)].key).exists()
    assert not read_journals(root)  # the journal goes once the files are gone

    result = run("delete", "--study", uid(3), "--yes", "--config", path)
    assert result.stdout.startswith(f"deleted study {uid(3)}: 1 patient, 1 study, 1 series")
    assert [r[14] for r in index_rows(config)] == ["PID1"]
    assert run("db", "check", "--config", path).returncode == 0

    unknown = run("delete", "--study", uid(1), "--yes", "--config", path)
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == f"minipacs delete: no study {uid(1)} in the index\n"


def test_delete_series_keeps_its_study(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    populate(config, two_studies())
    result = run("delete", "--series", uid(1, 2), "--yes", "--config", path)
    assert result.returncode == 0, result.stderr
    assert "0 patients, 0 studies, 1 series, 2 instances, 2 files removed" in result.stdout
    assert {r[10] for r in index_rows(config)} == {uid(1, 1), uid(2, 1)}


def test_delete_patient_under_two_issuers_needs_issuer(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    populate(config, [make_dataset(1, study=1, patient_id="P", issuer="HOSP_A"),
                      make_dataset(1, study=2, patient_id="P", issuer="HOSP_B"),
                      make_dataset(1, study=3, patient_id="P")])
    refused = run("delete", "--patient", "P", "--yes", "--config", path)
    assert refused.returncode == 2
    assert refused.stderr == ("minipacs delete: patient P exists under 3 issuers: (none), "
                              "'HOSP_A', 'HOSP_B'; choose one with --issuer\n")
    assert len(index_rows(config)) == 3

    result = run("delete", "--patient", "P", "--issuer", "HOSP_B", "--yes", "--config", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("deleted patient P (issuer HOSP_B): 1 patient, 1 study")
    assert [(r[14], r[15]) for r in index_rows(config)] == [("P", "HOSP_A"), ("P", "")]
    result = run("delete", "--patient", "P", "--issuer", "", "--yes", "--config", path)
    assert result.stdout.startswith("deleted patient P (issuer none): 1 patient")
    # One issuer left: no --issuer needed.
    result = run("delete", "--patient", "P", "--yes", "--config", path)
    assert result.stdout.startswith("deleted patient P (issuer HOSP_A): 1 patient")
    assert index_rows(config) == []


def test_delete_usage_errors(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    populate(config, [make_dataset(1)])
    cases = {
        ("delete", "--study", uid(1)): "not a terminal: confirm with --yes",
        ("delete", "--series", uid(1, 1), "--issuer", "X", "--yes"): "--issuer goes with",
        ("delete", "--patient", " ", "--yes"): "an empty Patient ID names no patient",
        ("delete", "--study", uid(1), "--series", uid(1, 1)): "not allowed with argument",
    }
    for args, fragment in cases.items():
        result = run(*args, "--config", path)
        assert result.returncode == 2, args
        assert fragment in result.stderr, result.stderr
    assert len(index_rows(config)) == 1


def test_an_interrupted_delete_is_finished_by_the_next(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    stored = populate(config, [*two_studies(), make_dataset(1, study=3, series=1)])
    root = config.storage.root
    # A delete of study 1 that journaled its keys and committed, then stopped before
    # unlinking: rows gone, files not. Its journal also lists a key still referenced.
    keys = [stored[k].key for k in stored if k.startswith(uid(1) + ".")]
    journal = write_journal(root, [*keys, stored[uid(2, 1, 1)].key])
    engine = make_engine(config.database.url)
    try:
        with engine.begin() as conn:
            conn.execute(Instance.__table__.delete().where(Instance.storage_key.in_(keys)))
    finally:
        engine.dispose()

    check = run("db", "check", "--config", path)
    assert check.returncode == 1
    assert check.stdout.count("orphan file: ") == 5
    assert "6 files of an interrupted delete are listed for removal" in check.stdout

    # While its process lives (it holds the journal's lock), another delete leaves it alone.
    result = run("delete", "--study", uid(3), "--yes", "--config", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"deleted study {uid(3)}:")
    assert all((root / k).exists() for k in keys)

    release_journal(journal)  # its process died
    result = run("delete", "--study", uid(2), "--yes", "--config", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "removed 5 files left by an interrupted delete"
    assert all(not (root / k).exists() for k in keys)
    assert not read_journals(root)
    final = run("db", "check", "--config", path)
    assert final.returncode == 0, final.stdout


# --- db backup ----------------------------------------------------------------------------


def test_db_backup_refuses_other_databases(tmp_path: Path) -> None:
    path, _ = setup(tmp_path, database={"url": "postgresql+asyncpg://pacs@127.0.0.1/pacs"})
    result = run("db", "backup", tmp_path / "b.db", "--config", path)
    assert result.returncode == 2
    assert result.stderr == ("minipacs db backup: postgresql+asyncpg://pacs@127.0.0.1/pacs is "
                             "not an SQLite database file: use the database's own backup "
                             "tools\n")
    assert not (tmp_path / "b.db").exists()


def send_until(port: int, started: threading.Event, stop: threading.Event,
               limit: int = 5000) -> list[int]:
    """pynetdicom C-STOREs of study 1 until `stop` (blocking: run it in a thread)."""
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    ae = pynetdicom_ae()
    ae.add_requested_context(CTImageStorage, EXPLICIT_LE)
    assoc = ae.associate(LOOPBACK, port, ae_title="MINIPACS")
    assert assoc.is_established
    statuses: list[int] = []
    try:
        for n in range(1, limit + 1):
            if stop.is_set():
                break
            ds = make_dataset(n, study=1, series=1 + n % 4)
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = EXPLICIT_LE
            statuses.append(int(assoc.send_c_store(ds).Status))
            if n == 4:
                started.set()
        return statuses
    finally:
        started.set()
        assoc.release()


async def test_backup_and_delete_beside_a_running_server(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    await asyncio.to_thread(populate, config, [make_dataset(n, study=9) for n in (1, 2, 3)])
    backups = [tmp_path / f"backup{i}.db" for i in range(3)]
    started, stop = threading.Event(), threading.Event()
    async with running_server(config) as server:
        sending = asyncio.create_task(
            asyncio.to_thread(send_until, server.port, started, stop))
        try:
            assert await asyncio.to_thread(started.wait, WAIT)
            for dest in backups:
                result = await run_minipacs("db", "backup", str(dest), "--config", str(path),
                                            timeout=WAIT)
                assert result.returncode == 0, result.stderr
            deleted = await run_minipacs("delete", "--study", uid(9), "--yes", "--config",
                                         str(path), timeout=WAIT)
            assert deleted.returncode == 0, deleted.stderr
            assert not sending.done(), "the writes ended before the operations"
        finally:
            stop.set()
            statuses = await sending
    sent = len(statuses)
    assert statuses == [0] * sent
    for dest in backups:  # each a consistent snapshot taken while the server wrote
        conn = sqlite3.connect(dest)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            empty = conn.execute("SELECT count(*) FROM series WHERE pk NOT IN "
                                 "(SELECT series_pk FROM instance)").fetchone()
            assert empty == (0,)
        finally:
            conn.close()
        assert 3 + 4 <= table_counts(dest)[3] <= 3 + sent
    final = run("db", "backup", tmp_path / "final.db", "--config", path)
    assert final.returncode == 0, final.stderr
    assert table_counts(tmp_path / "final.db") == table_counts(db_file(config)) == (
        1, 1, 4, sent)
    assert final.stdout == (f"index backed up to {tmp_path / 'final.db'} "
                            f"(1 patient, 1 study, 4 series, {sent} instances)\n")
    assert run("db", "check", "--config", path).returncode == 0
