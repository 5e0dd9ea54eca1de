"""Index maintenance beside serving processes (issue 15): `db check` is safe while they
store, `db rebuild` refuses while one is registered alive."""

from __future__ import annotations

import asyncio
from pathlib import Path

from minipacs.app import ops
from minipacs.app.daemon import build_storage, prepare
from minipacs.config import load_config
from minipacs.index.engine import make_engine
from minipacs.index.processes import ProcessRegistry
from minipacs.ports import FileMeta
from tests.index.dicomdata import EXPLICIT_LE, encode, make_dataset
from tests.support import running_server, write_config
from tests.test_ops_cli import run

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_a_file_being_indexed_by_a_server_is_no_orphan(tmp_path: Path) -> None:
    """Linked under its key, its row not committed yet: the moment a serving process is in
    while `db check` walks the store. Not an orphan, and `--repair` leaves it alone."""
    config = load_config(write_config(tmp_path))
    prepare(config)
    storage = build_storage(config)  # as the serving process's store
    ds = make_dataset(1)
    spool = storage.open_spool(FileMeta(CT, ds.SOPInstanceUID, EXPLICIT_LE, "MODALITY",
                                        "MINIPACS"))
    spool.write(encode(ds))
    stored = spool.commit()  # the entry stays, locked, until the row commits
    try:
        for repair in (False, True):
            report = ops.db_check(config, repair=repair)
            assert (report.problems, report.repaired) == ((), ())
            assert report.files == 1
            assert storage.path_of(stored.key).exists()
    finally:
        spool.release()  # the "server" crashed instead of indexing: now it is an orphan
    (problem,) = ops.db_check(config).problems
    assert (problem.kind, problem.key) == (ops.ProblemKind.ORPHAN, stored.key)


async def test_db_rebuild_refuses_while_a_server_serves_the_index(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    async with running_server(load_config(path)) as server:
        port = server.port
        result = await asyncio.to_thread(run, "db", "rebuild", "--config", path)
    assert result.returncode == 1, result.stderr
    assert "1 minipacs serve process(es) use this index" in result.stderr
    assert f"at 127.0.0.1:{port}" in result.stderr
    assert result.stderr.count("\n") == 1
    # Once it has stopped (and unregistered), the rebuild runs.
    result = await asyncio.to_thread(run, "db", "rebuild", "--config", path)
    assert result.returncode == 0, result.stderr


def test_a_killed_server_stops_counting_after_its_lease(tmp_path: Path) -> None:
    path = write_config(tmp_path, database={"process_lease": 60})
    config = load_config(path)
    prepare(config)
    engine = make_engine(config.database.url)
    try:
        registry = ProcessRegistry(engine, lease=60, token="test:killed")
        registry.register("MINIPACS", "127.0.0.1:11112")  # and never renewed: killed
        refused = run("db", "rebuild", "--config", path)
        assert refused.returncode == 1 and "stop them first" in refused.stderr
        with engine.begin() as conn:  # its last heartbeat, a lease ago
            conn.exec_driver_sql("UPDATE server_process SET heartbeat_at = "
                                 "'2000-01-01 00:00:00.000000'")
        assert run("db", "rebuild", "--config", path).returncode == 0
    finally:
        engine.dispose()
