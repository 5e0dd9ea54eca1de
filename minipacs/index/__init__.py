"""The SQL index adapter (SQLAlchemy 2): `ports.Index` and `ports.QueryIndex` (DESIGN 11, 12)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import BinaryIO

from sqlalchemy import Engine

from ..ports import (
    AddResult,
    DuplicatePolicy,
    FindPage,
    FindQuery,
    InstanceAttributes,
    InstancePage,
    InstanceRecord,
    QueryLevel,
)

# The normalized-service tables share Base.metadata: import them so it is complete.
from . import models_commitment, models_mpps, models_worklist  # noqa: F401
from .extract import ExtractLimits, read_attributes
from .query import SqlQueryIndex
from .retrieve import SqlRetrieveIndex
from .writer import IndexWriter

__all__ = ["ExtractLimits", "IndexWriter", "SqlIndex", "SqlQueryIndex", "SqlRetrieveIndex"]


class SqlIndex:
    """`ports.Index` and `ports.QueryIndex` over an SQLAlchemy engine.

    Parsing in worker threads, one writer task; C-FIND pages through `SqlQueryIndex`.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        duplicate_policy: DuplicatePolicy = DuplicatePolicy.REPLACE,
        limits: ExtractLimits | None = None,
        max_batch: int = 256,
    ) -> None:
        self.engine = engine
        self.limits = limits or ExtractLimits()
        self.writer = IndexWriter(engine, duplicate_policy=duplicate_policy, max_batch=max_batch)
        self.query = SqlQueryIndex(engine)
        self.retrieve = SqlRetrieveIndex(engine)

    async def start(self) -> None:
        await self.writer.start()

    async def aclose(self) -> None:
        """Write what is queued, then stop the writer (the engine stays the caller's)."""
        await self.writer.aclose()

    async def __aenter__(self) -> SqlIndex:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def parse_attributes(
        self, data: bytes | BinaryIO, transfer_syntax_uid: str
    ) -> InstanceAttributes:
        """Parse a data set in memory or at a file's position (blocking). Raises DataSetError."""
        return read_attributes(data, transfer_syntax_uid, self.limits)

    async def read_attributes(
        self, open_dataset: Callable[[], BinaryIO], transfer_syntax_uid: str
    ) -> InstanceAttributes:
        """Parse a stored data set in a worker thread. Raises DataSetError (or StorageError)."""

        def parse() -> InstanceAttributes:
            with open_dataset() as fp:
                return read_attributes(fp, transfer_syntax_uid, self.limits)

        return await asyncio.to_thread(parse)

    async def add_instance(self, record: InstanceRecord) -> AddResult:
        """Index `record` durably. Raises IndexWriteError, or OutOfResources (database full)."""
        return await self.writer.submit(record)

    def matchable(self, level: QueryLevel) -> frozenset[int]:
        """Tags matched in SQL for a C-FIND at `level` (the level and above)."""
        return self.query.matchable(level)

    async def find(self, query: FindQuery, *, after: object | None, limit: int) -> FindPage:
        """One keyset page of answers, in its own read transaction (`SqlQueryIndex.find`)."""
        return await self.query.find(query, after=after, limit=limit)

    async def count(self, query: FindQuery, *, cap: int) -> int:
        """How many entities match, counting at most `cap` + 1."""
        return await self.query.count(query, cap=cap)

    async def instances(self, query: FindQuery, *, after: object | None, limit: int,
                        kinds: frozenset[tuple[str, str]] | None = None) -> InstancePage:
        """One keyset page of the instances a C-MOVE/C-GET selects (`SqlRetrieveIndex`)."""
        return await self.retrieve.instances(query, after=after, limit=limit, kinds=kinds)

    async def instance_kinds(self, query: FindQuery) -> tuple[tuple[str, str], ...]:
        """The distinct (SOP class, transfer syntax) pairs of the selected instances."""
        return await self.retrieve.instance_kinds(query)
