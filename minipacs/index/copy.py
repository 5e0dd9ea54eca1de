"""Copying a whole index to another database: SQLite to PostgreSQL and back (issue 15).

All or nothing: every row goes into the destination in one transaction, committed only once
every table is in and its row count matches the source's; a failure (or Ctrl-C) rolls the
destination back to empty, and the copy is simply run again. The source is read in one
read transaction (one snapshot: a consistent index even if something wrote meanwhile),
each table streamed in batches, so memory stays flat whatever the index's size.

Tables go parents first (`Base.metadata.sorted_tables`), primary keys as they are, so every
foreign key and every keyset cursor still holds; PostgreSQL's sequences are then set past
the copied keys, and the destination is analysed (planner statistics). Timestamps are
normalised to UTC (SQLite keeps them without a zone, as
UTC). What belongs to running processes is not copied: their registrations, and the claims
on Storage Commitment transactions (which stay pending and are delivered from the copy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import DateTime, Engine, Table, func, insert, select, text
from sqlalchemy.engine import Connection

from .engine import WRITE_OPTION
from .models import Base
from .models_commitment import CommitmentTransaction
from .models_processes import ServerProcess

__all__ = ["BATCH_ROWS", "CopyMismatch", "copied_tables", "copy_index", "row_counts"]

BATCH_ROWS: Final = 5000
# Not index content: who serves it now.
_SKIPPED: Final = frozenset({ServerProcess.__tablename__})
# Column values reset in the copy: (table, column) → value.
_RESET: Final[Mapping[tuple[str, str], object]] = {
    (CommitmentTransaction.__tablename__, "claimed_by"): None,
}

Progress = Callable[[str, int], None]


class CopyMismatch(Exception):
    """The destination's row count of a table differs from the source's (rolled back)."""


def copied_tables() -> list[Table]:
    """The tables a copy carries, parents before children."""
    return [t for t in Base.metadata.sorted_tables if t.name not in _SKIPPED]


def row_counts(conn: Connection, tables: Sequence[Table] | None = None) -> dict[str, int]:
    """Rows per table, in `conn`'s transaction."""
    return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (copied_tables() if tables is None else tables)}


def copy_index(source: Engine, dest: Engine, *, batch: int = BATCH_ROWS,
               progress: Progress | None = None) -> dict[str, int]:
    """Copy every row of `source` into `dest` (migrated to the same revision, empty).

    Returns the rows copied per table. Raises CopyMismatch, or the database's error; in
    both cases nothing is left in `dest` (module docstring).
    """
    tables = copied_tables()
    with source.connect() as reader, reader.begin():
        if reader.dialect.name != "sqlite":  # one snapshot for every table
            reader.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        expected = row_counts(reader, tables)
        with dest.connect().execution_options(**{WRITE_OPTION: True}) as writer, \
                writer.begin():
            for table in tables:
                done = 0
                for rows in _batches(reader, table, batch):
                    writer.execute(insert(table), rows)
                    done += len(rows)
                    if progress is not None:
                        progress(table.name, done)
            if writer.dialect.name == "postgresql":
                _advance_sequences(writer, tables)
            copied = row_counts(writer, tables)
            if copied != expected:
                wrong = {name: (expected[name], n) for name, n in copied.items()
                         if n != expected[name]}
                raise CopyMismatch(f"row counts differ after the copy (source, copy): {wrong}")
    with dest.connect() as conn, conn.begin():  # planner statistics of the new tables
        conn.execute(text("ANALYZE"))
    return copied


def _batches(conn: Connection, table: Table, size: int) -> Iterator[list[dict[str, Any]]]:
    """The rows of `table` in primary-key order, `size` at a time, values made portable."""
    dates = [c.name for c in table.columns if isinstance(c.type, DateTime)]
    resets = {column: value for (name, column), value in _RESET.items()
              if name == table.name}
    result = conn.execution_options(stream_results=True, yield_per=size).execute(
        select(table).order_by(*table.primary_key.columns))
    for partition in result.mappings().partitions(size):
        rows = []
        for mapping in partition:
            row = dict(mapping)
            for name in dates:
                row[name] = _utc(row[name])
            row.update(resets)
            rows.append(row)
        yield rows


def _utc(value: datetime | None) -> datetime | None:
    """An aware UTC datetime (SQLite's naive values are UTC; PostgreSQL's carry a zone)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _advance_sequences(conn: Connection, tables: Sequence[Table]) -> None:
    """Set each integer key's sequence past the copied keys (PostgreSQL)."""
    for table in tables:
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or keys[0].type.python_type is not int:
            continue
        conn.execute(text(
            "SELECT setval(pg_get_serial_sequence(:table, :column), "
            f"COALESCE((SELECT max({keys[0].name}) FROM {table.name}), 0) + 1, false)"),
            {"table": table.name, "column": keys[0].name})
