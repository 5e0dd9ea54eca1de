"""Several processes migrating one index at once, and an index newer than the code.

Migrations run once, under a lock (PostgreSQL's advisory lock, SQLite's write lock): the
processes started together all succeed and the schema is made once. A database at a
revision the code does not know is refused by `upgrade`, `serve` and the db commands, and
left untouched (issue 15).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text

from minipacs.index.engine import make_engine
from minipacs.index.migrate import SchemaTooNew, upgrade
from tests.databases import Databases
from tests.support import WAIT, minipacs_env, write_config

PROCESSES = 4
FUTURE = "9999_from_a_newer_minipacs"
# Each child imports, says so, and waits for the word to go: they migrate at the same time.
_CHILD = """
import sys
from minipacs.index.migrate import upgrade
print("ready", flush=True)
sys.stdin.readline()
upgrade(sys.argv[1])
"""


def revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def test_processes_migrating_a_new_index_at_once_all_succeed(
        databases: Databases, backend: str) -> None:
    url = databases.create_empty(backend)
    children = [subprocess.Popen([sys.executable, "-c", _CHILD, url], text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=minipacs_env())
                for _ in range(PROCESSES)]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=WAIT * 6) for child in children]
    finally:
        for child in children:
            child.kill()
            child.wait(WAIT)
    errors = [err for (_out, err), child in zip(results, children, strict=True)
              if child.returncode]
    assert errors == []
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    finally:
        engine.dispose()
    upgrade(url)  # and the head it reached is ours: nothing left to do
    assert revision(url) is not None


def make_future(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})


def test_an_index_newer_than_the_code_is_refused_untouched(
        engine: Engine, db_url: str) -> None:
    make_future(engine)
    with pytest.raises(SchemaTooNew, match=FUTURE):
        upgrade(db_url)
    assert revision(db_url) == FUTURE


def _minipacs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minipacs", *args], capture_output=True,
                          text=True, timeout=WAIT * 6, env=minipacs_env(),
                          stdin=subprocess.DEVNULL, check=False)


def test_serve_and_db_commands_refuse_a_newer_index(
        engine: Engine, db_url: str, tmp_path: Path) -> None:
    make_future(engine)
    config = str(write_config(tmp_path, database={"url": db_url}))
    serve = _minipacs("serve", "--config", config)
    assert serve.returncode == 2, serve.stderr
    (line,) = [line for line in serve.stderr.splitlines() if "cannot start" in line]
    assert f"index schema is at revision {FUTURE}" in line and "newer minipacs" in line
    for command, code in ((("db", "upgrade"), 1), (("db", "check"), 1)):
        result = _minipacs(*command, "--config", config)
        assert result.returncode == code, result.stderr
        assert f"revision {FUTURE}" in result.stderr and "newer minipacs" in result.stderr
    assert not (tmp_path / "store").exists()  # nothing made for an index it cannot serve
    assert revision(db_url) == FUTURE
