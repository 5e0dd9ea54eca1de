"""Engine creation and the one switch for SQL dialect differences (DESIGN principle 11).

The index runs on SQLAlchemy's synchronous engine, driven from worker threads: the writer
sends a whole batch in one thread hop, where aiosqlite takes one hop per statement
(measured here: 96 µs per INSERT through aiosqlite against 1.8 µs with sqlite3 itself, and
every hop also wakes the event loop). ``sqlite+aiosqlite://`` URLs are accepted and run on
the standard sqlite3 driver; PostgreSQL URLs (``postgresql://``, ``postgres://``,
``postgresql+asyncpg://``) run on psycopg 3.

SQLite: WAL, ``synchronous=FULL`` (an acknowledged instance survives power loss: the WAL is
fsynced at each commit, once per group-committed batch), foreign keys on, a busy timeout
for other processes' writers, and SQLAlchemy's documented recipe for explicit BEGIN
(pysqlite's own transaction handling breaks SAVEPOINT); the writer's transactions are
``BEGIN IMMEDIATE`` so they take the write lock up front instead of failing on upgrade.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from sqlalchemy import (
    ColumnElement,
    Engine,
    Executable,
    Insert,
    Table,
    and_,
    create_engine,
    event,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError

__all__ = [
    "DEFAULT_RETRY",
    "LIKE_ESCAPE",
    "WILDCARDS",
    "WRITE_OPTION",
    "Dialect",
    "Prepared",
    "RetryPolicy",
    "database_now",
    "dialect_of",
    "glob_pattern",
    "like_pattern",
    "literal_prefix",
    "lock_for_migration",
    "make_engine",
    "successor",
    "sync_url",
    "write_transaction",
]

log = logging.getLogger("minipacs.index")
_T = TypeVar("_T")

# Execution option marking the writer's connection: its transactions BEGIN IMMEDIATE.
WRITE_OPTION: Final = "minipacs_write"
SQLITE_BUSY_TIMEOUT_MS: Final = 5000
# PostgreSQL SQLSTATEs worth retrying the whole transaction for.
_PG_RETRYABLE: Final = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_PG_FULL: Final = frozenset({"53100"})  # disk_full
_PG_UNIQUE_VIOLATION: Final = "23505"
# PostgreSQL advisory lock key of the schema migrations (any fixed 64-bit number: the first
# eight bytes of "minipacs" in ASCII, as a signed big-endian integer).
MIGRATION_LOCK_KEY: Final = int.from_bytes(b"minipacs", "big", signed=True)
_SQLITE_RETRYABLE: Final = ("database is locked", "database is busy", "database table is locked")
_SQLITE_FULL: Final = "database or disk is full"
_WAL_RETRY_S: Final = 0.01  # between attempts to switch a new SQLite file to WAL

# URL schemes the index accepts, as the drivers it runs: SQLite on the standard sqlite3, and
# PostgreSQL on psycopg 3 (``postgresql://`` would mean psycopg2 to SQLAlchemy; asyncpg URLs
# and libpq's own ``postgres://`` scheme are aliases).
_SYNC_DRIVERS: Final = {
    "sqlite+aiosqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgresql+asyncpg": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
}

# DICOM wildcards (PS3.4 C.2.2.2.4): `*` any sequence of characters, `?` exactly one.
WILDCARDS: Final = frozenset("*?")
_GLOB_SPECIAL: Final = str.maketrans({"[": "[[]"})  # `*` and `?` already mean what DICOM means
LIKE_ESCAPE: Final = "\\"
_LIKE_SPECIAL: Final = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_", "*": "%", "?": "_"})
_MAX_CODE_POINT: Final = 0x10FFFF
_SURROGATES: Final = range(0xD800, 0xE000)


def sync_url(url: str | URL) -> URL:
    """The URL with the driver the index runs (an alias replaced: `_SYNC_DRIVERS`)."""
    parsed = make_url(url)
    driver = _SYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between SQLite and PostgreSQL, in one place."""

    name: str

    @property
    def is_sqlite(self) -> bool:
        return self.name == "sqlite"

    def wildcard(self, column: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        """`column` matches the DICOM `pattern`, case-sensitively (PS3.4 C.2.2.2.4).

        SQLite: GLOB (case-sensitive; only `[` needs bracketing). PostgreSQL: LIKE (case-
        sensitive there) with `%`, `_` and the escape character escaped. A literal prefix is
        also a range an index serves. `pattern` is always a bound parameter.
        """
        if self.is_sqlite:
            match = column.op("GLOB", is_comparison=True)(glob_pattern(pattern))
        else:
            match = column.like(like_pattern(pattern), escape=LIKE_ESCAPE)
        prefix = literal_prefix(pattern)
        return and_(self.starts_with(column, prefix), match) if prefix else match

    def starts_with(self, column: ColumnElement[Any], prefix: str) -> ColumnElement[bool]:
        """`column` begins with `prefix`, as a range in code-point order (index-friendly)."""
        # SQLite's BINARY collation compares UTF-8 bytes, which is code-point order;
        # PostgreSQL needs the "C" collation for the same order.
        ordered = column if self.is_sqlite else column.collate("C")
        upper = successor(prefix)
        if upper is None:
            return ordered >= literal(prefix)
        return and_(ordered >= literal(prefix), ordered < literal(upper))

    def insert_ignoring_duplicates(self, table: Table) -> Insert:
        """INSERT that skips a row whose unique key exists (both: ON CONFLICT DO NOTHING)."""
        insert = sqlite_insert if self.is_sqlite else postgresql_insert
        return insert(table).on_conflict_do_nothing()

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether a failed transaction may succeed when run again (lock or serialization)."""
        if not isinstance(exc, DBAPIError):
            return False
        if self.is_sqlite:
            return any(text in str(exc.orig) for text in _SQLITE_RETRYABLE)
        return getattr(exc.orig, "sqlstate", None) in _PG_RETRYABLE

    def is_unique_race(self, exc: BaseException) -> bool:
        """Whether a unique violation may be another writer's concurrent insert of the key.

        PostgreSQL: an INSERT that meets a key another transaction inserted and has not
        committed waits for it, then fails (23505) once it commits; a new statement sees
        that row, so writing again resolves it. SQLite's writers take turns: never.
        """
        return (not self.is_sqlite and isinstance(exc, DBAPIError)
                and getattr(exc.orig, "sqlstate", None) == _PG_UNIQUE_VIOLATION)

    def is_full(self, exc: BaseException) -> bool:
        """Whether the database ran out of disk (PS3.4 B.2.3: 0xA700)."""
        if not isinstance(exc, DBAPIError):
            return False
        if self.is_sqlite:
            return _SQLITE_FULL in str(exc.orig)
        return getattr(exc.orig, "sqlstate", None) in _PG_FULL


def dialect_of(engine: Engine) -> Dialect:
    return Dialect(engine.dialect.name)


def glob_pattern(pattern: str) -> str:
    """A DICOM wildcard pattern as an SQLite GLOB pattern (`[` is GLOB's only other magic)."""
    return pattern.translate(_GLOB_SPECIAL)


def like_pattern(pattern: str) -> str:
    """A DICOM wildcard pattern as a LIKE pattern with `LIKE_ESCAPE` (PostgreSQL)."""
    return pattern.translate(_LIKE_SPECIAL)


def literal_prefix(pattern: str) -> str:
    """The characters of a DICOM wildcard pattern before its first wildcard."""
    for i, char in enumerate(pattern):
        if char in WILDCARDS:
            return pattern[:i]
    return pattern


def successor(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (None: no bound)."""
    chars = list(prefix)
    while chars and ord(chars[-1]) == _MAX_CODE_POINT:
        chars.pop()
    if not chars:
        return None
    code = ord(chars[-1]) + 1
    if code in _SURROGATES:  # not encodable in UTF-8: skip to the next scalar value
        code = _SURROGATES.stop
    chars[-1] = chr(code)
    return "".join(chars)


def make_engine(
    url: str | URL,
    *,
    synchronous: str = "FULL",
    busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
    **kwargs: Any,
) -> Engine:
    """An engine with the PRAGMAs and transaction handling the index relies on."""
    parsed = sync_url(url)
    engine = create_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, synchronous, busy_timeout_ms)
    return engine


def _configure_sqlite(engine: Engine, synchronous: str, busy_timeout_ms: int) -> None:
    if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite (SQLAlchemy's SQLite docs, "Enabling
        # Non-Legacy SQLite Transactional Modes"): we emit BEGIN ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            _enter_wal(cursor, busy_timeout_ms)
            cursor.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _enter_wal(cursor: Any, busy_timeout_ms: int) -> None:
    """``PRAGMA journal_mode = WAL``, waiting out other connections as the busy timeout would.

    Switching a new database file to WAL needs it to itself, and SQLite answers "database is
    locked" at once instead of calling the busy handler: several processes opening a new
    index together (`minipacs serve` twice, `db upgrade` beside it) failed at connect.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if not any(text in str(exc) for text in _SQLITE_RETRYABLE) or (
                    time.monotonic() >= deadline):
                raise
        time.sleep(_WAL_RETRY_S)


def database_now(conn: Connection) -> datetime:
    """The time by the database's clock, in UTC: what several hosts' processes agree on.

    PostgreSQL: ``now()`` (the transaction's start). SQLite serves one host: its clock.
    """
    if conn.dialect.name == "sqlite":
        return datetime.now(UTC)
    return conn.execute(select(func.now())).scalar_one().astimezone(UTC)


def lock_for_migration(conn: Connection) -> None:
    """Serialize schema migrations across processes, until `conn`'s transaction ends.

    PostgreSQL: a transaction-level advisory lock (waits for another migrating process).
    SQLite: the transaction is ``BEGIN IMMEDIATE`` already (`WRITE_OPTION`), which holds
    the database's write lock, so nothing more is needed.
    """
    if conn.dialect.name != "sqlite":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


# --- a statement for the hot path ---------------------------------------------------------


class Prepared:
    """A Core statement compiled once for an engine's dialect, run on the DBAPI cursor.

    For the index writer's per-instance INSERT: SQLAlchemy's execution (compiled-cache
    lookup, parameter processing, result set-up) costs about as much as SQLite's own work
    for it. The SQL, the parameter order and the types' bind processors are SQLAlchemy's
    own; errors are raised as SQLAlchemy's (`DBAPIError.instance`), so retry rules and
    callers see what `Connection.execute` would raise, and ``before_cursor_execute``
    listeners still see the statement.
    """

    def __init__(self, statement: Executable, engine: Engine) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self._dialect = dialect
        self.sql = compiled.string
        self._order = tuple(compiled.positiontup or ()) if compiled.positional else None
        self._processors = {
            name: processor for name, bind in compiled.binds.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None}

    def execute(self, conn: Connection, params: dict[str, Any]) -> int:
        """Run in `conn`'s transaction; returns the cursor's rowcount."""
        for name, processor in self._processors.items():
            params[name] = processor(params[name])
        args: Any = params if self._order is None else [params[name] for name in self._order]
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            for listener in conn.dispatch.before_cursor_execute:  # logging, tests' probes
                listener(conn, cursor, self.sql, args, None, False)
            cursor.execute(self.sql, args)
            return int(cursor.rowcount)
        except self._dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(self.sql, args, exc, self._dialect.loaded_dbapi.Error,
                                      dialect=self._dialect) from exc
        finally:
            cursor.close()


# --- the one write transaction ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how soon a write transaction that lost a lock race is run again.

    `retries` more attempts after the first, the n-th after ``delay * 2**n`` seconds capped
    at `max_delay`, each scaled by a random factor in [0.5, 1) so that writers that collided
    do not collide again in step. `sleep` is the clock (tests inject their own).
    """

    retries: int = 8
    delay: float = 0.02
    max_delay: float = 1.0
    sleep: Callable[[float], None] = time.sleep

    def backoff(self, attempt: int) -> float:
        """The pause before retry number `attempt` (0-based), jitter included."""
        return min(self.max_delay, self.delay * 2**attempt) * random.uniform(0.5, 1.0)


DEFAULT_RETRY: Final = RetryPolicy()


def write_transaction(engine: Engine, work: Callable[[Connection], _T], *,
                      retry: RetryPolicy = DEFAULT_RETRY, what: str = "index write",
                      connection: Connection | None = None) -> _T:
    """`work` in one write transaction, committed; run again while the dialect says so.

    SQLite: the transaction is ``BEGIN IMMEDIATE`` (the write lock up front, waiting out the
    busy timeout), retried on "database is locked"/"busy". PostgreSQL: retried on SQLSTATE
    40001 (serialization failure) and 40P01 (deadlock). Any other error, or the last
    retry's, propagates after the rollback. Blocking: call it from a worker thread.
    `connection`: a connection of `engine` the caller keeps between transactions (the
    index writer's), instead of one checked out of the pool for this one.
    """
    dialect = dialect_of(engine)
    attempt = 0
    while True:
        try:
            if connection is not None:
                with connection.execution_options(**{WRITE_OPTION: True}).begin():
                    return work(connection)
            with (engine.connect().execution_options(**{WRITE_OPTION: True}) as conn,
                  conn.begin()):
                return work(conn)
        except DBAPIError as exc:
            if not dialect.is_retryable(exc) or attempt >= retry.retries:
                raise
            pause = retry.backoff(attempt)
            attempt += 1
            log.warning("%s: index busy (%s); retry %d in %.2f s", what,
                        str(exc.orig).strip(), attempt, pause)
            retry.sleep(pause)
