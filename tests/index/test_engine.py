"""The one write transaction (`engine.write_transaction`) and its dialect's retry rules.

Errors are the databases' own: SQLite's lock held by another connection, PostgreSQL's
SQLSTATEs raised by the server (``RAISE ... USING ERRCODE``) as a conflicting transaction
would raise them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from minipacs.index.engine import (
    RetryPolicy,
    dialect_of,
    make_engine,
    sync_url,
    write_transaction,
)
from minipacs.index.models_worklist import WorklistStep
from tests.databases import POSTGRESQL, sqlite_file, sqlite_only

SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
UNIQUE_VIOLATION = "23505"
DISK_FULL = "53100"


def raise_sqlstate(conn: Connection, sqlstate: str) -> None:
    conn.execute(text(
        f"DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{sqlstate}'; END $$"))


def steps(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(WorklistStep)).scalar_one())


def insert_step(conn: Connection) -> None:
    conn.execute(WorklistStep.__table__.insert().values(attributes="{}"))


class Pauses:
    """The injected clock: records each pause instead of sleeping, then runs `then`."""

    def __init__(self, then: Callable[[], None] = lambda: None) -> None:
        self.seen: list[float] = []
        self.then = then

    def __call__(self, delay: float) -> None:
        self.seen.append(delay)
        self.then()


@pytest.mark.parametrize("sqlstate", [SERIALIZATION_FAILURE, DEADLOCK_DETECTED])
@pytest.mark.parametrize("backend", [POSTGRESQL])
def test_postgresql_serialization_failures_and_deadlocks_are_retried(
        engine: Engine, sqlstate: str) -> None:
    pauses = Pauses()
    attempts = []

    def work(conn: Connection) -> str:
        attempts.append(1)
        insert_step(conn)  # rolled back with each failed attempt
        if len(attempts) < 3:
            raise_sqlstate(conn, sqlstate)
        return "done"

    retry = RetryPolicy(retries=5, delay=0.01, max_delay=0.02, sleep=pauses)
    assert write_transaction(engine, work, retry=retry) == "done"
    assert len(attempts) == 3 and len(pauses.seen) == 2
    assert all(0.005 <= pause < 0.02 for pause in pauses.seen)  # jittered, capped
    assert steps(engine) == 1  # the failed attempts left nothing


@pytest.mark.parametrize("backend", [POSTGRESQL])
def test_postgresql_other_errors_are_not_retried(engine: Engine) -> None:
    pauses = Pauses()

    def work(conn: Connection) -> None:
        insert_step(conn)
        raise_sqlstate(conn, UNIQUE_VIOLATION)

    with pytest.raises(IntegrityError):
        write_transaction(engine, work, retry=RetryPolicy(sleep=pauses))
    assert pauses.seen == [] and steps(engine) == 0


@pytest.mark.parametrize("backend", [POSTGRESQL])
def test_postgresql_disk_full_is_out_of_resources(engine: Engine) -> None:
    with pytest.raises(DBAPIError) as caught:
        write_transaction(engine, lambda conn: raise_sqlstate(conn, DISK_FULL))
    assert dialect_of(engine).is_full(caught.value)
    assert not dialect_of(engine).is_retryable(caught.value)


def test_retries_are_bounded(db_url: str, backend: str) -> None:
    pauses = Pauses()
    engine = make_engine(db_url, busy_timeout_ms=10)
    try:
        if backend == POSTGRESQL:
            def work(conn: Connection) -> None:
                raise_sqlstate(conn, SERIALIZATION_FAILURE)
            with pytest.raises(DBAPIError):
                write_transaction(engine, work, retry=RetryPolicy(retries=3, sleep=pauses))
        else:
            with locked(engine), pytest.raises(DBAPIError, match="locked"):
                write_transaction(engine, insert_step,
                                  retry=RetryPolicy(retries=3, sleep=pauses))
    finally:
        engine.dispose()
    assert len(pauses.seen) == 3


@contextlib.contextmanager
def locked(engine: Engine) -> contextlib.AbstractContextManager[sqlite3.Connection]:
    """Another process's writer holding SQLite's write lock."""
    holder = sqlite3.connect(sqlite_file(str(engine.url)), isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield holder
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


@sqlite_only
def test_sqlite_lock_is_waited_out_and_retried(db_url: str) -> None:
    engine = make_engine(db_url, busy_timeout_ms=10)
    try:
        with locked(engine) as holder:
            pauses = Pauses(then=lambda: holder.execute("COMMIT"))  # released while we wait
            write_transaction(engine, insert_step, retry=RetryPolicy(retries=3, sleep=pauses))
        assert len(pauses.seen) == 1 and steps(engine) == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize(("url", "driver"), [
    ("sqlite:///x.db", "sqlite"),
    ("sqlite+aiosqlite:///x.db", "sqlite"),
    ("postgresql://u@h/db", "postgresql+psycopg"),
    ("postgres://u@h/db", "postgresql+psycopg"),
    ("postgresql+asyncpg://u@h/db", "postgresql+psycopg"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
])
def test_urls_run_on_the_index_drivers(url: str, driver: str) -> None:
    assert sync_url(url).drivername == driver


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+asyncpg"])
@pytest.mark.parametrize("backend", [POSTGRESQL])
def test_postgresql_url_aliases_connect(db_url: str, scheme: str) -> None:
    url = make_url(db_url).set(drivername=scheme).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        assert engine.dialect.driver == "psycopg"
        assert steps(engine) == 0
    finally:
        engine.dispose()


def test_a_new_sqlite_file_held_by_another_connection_is_waited_for(tmp_path: Path) -> None:
    """Switching a new file to WAL gets "database is locked" at once from SQLite (no busy
    handler): the connect waits it out within the busy timeout, as several processes
    opening a new index together need."""
    path = tmp_path / "index.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")  # a rollback-journal write lock, as a first migrator's
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=10_000)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        release.join()
        holder.close()
        engine.dispose()
