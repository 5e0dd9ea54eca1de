"""The SQL index adapter (SQLAlchemy 2): implements `ports.Index` (DESIGN principles 11, 12)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import BinaryIO

from sqlalchemy import Engine

from ..ports import AddResult, DuplicatePolicy, InstanceAttributes, InstanceRecord
from .extract import ExtractLimits, read_attributes
from .writer import IndexWriter

__all__ = ["ExtractLimits", "IndexWriter", "SqlIndex"]


class SqlIndex:
    """`ports.Index` over an SQLAlchemy engine: parsing in worker threads, one writer task."""

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
