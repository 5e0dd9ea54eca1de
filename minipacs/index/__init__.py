"""The SQL index adapter (SQLAlchemy 2): one backend object for every index port (DESIGN 11, 12)."""

from __future__ import annotations

from concurrent.futures import Future

from sqlalchemy import Engine

from ..ports import (
    DEFAULT_PROCESS_LEASE,
    AddResult,
    DuplicatePolicy,
    FindPage,
    FindQuery,
    InstancePage,
    InstanceRecord,
    PatientConflictPolicy,
    QueryLevel,
)

# The normalized-service tables share Base.metadata: import them so it is complete.
from . import models_commitment, models_mpps, models_processes, models_worklist  # noqa: F401
from .commitment import SqlCommitmentIndex
from .engine import DEFAULT_RETRY, RetryPolicy
from .extract import AttributeReader, ExtractLimits
from .mpps import SqlMppsIndex
from .processes import ProcessRegistry
from .query import SqlQueryIndex
from .retrieve import SqlRetrieveIndex
from .worklist import SqlWorklist
from .writer import IndexWriter

__all__ = [
    "AttributeReader",
    "ExtractLimits",
    "IndexWriter",
    "ProcessRegistry",
    "SqlCommitmentIndex",
    "SqlIndex",
    "SqlMppsIndex",
    "SqlQueryIndex",
    "SqlRetrieveIndex",
    "SqlWorklist",
]


class SqlIndex:
    """The index on one SQLAlchemy engine: `ports.Index`, `ports.QueryIndex` and
    `ports.RetrieveIndex` itself, and the adapters of the normalized services
    (`worklist`, `mpps`, `commitment`), all writing through one retry policy.

    One writer task for instances (group commit); C-FIND pages through `query`.
    `processes` is this process's registration among those sharing the index (a serving
    process starts it); the commitment adapter claims work under its token.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        duplicate_policy: DuplicatePolicy | None = None,
        patient_conflict: PatientConflictPolicy | None = None,
        max_batch: int = 256,
        retry: RetryPolicy = DEFAULT_RETRY,
        process_lease: float = DEFAULT_PROCESS_LEASE,
    ) -> None:
        self.engine = engine
        self.writer = IndexWriter(engine, duplicate_policy=duplicate_policy,
                                  patient_conflict=patient_conflict, max_batch=max_batch,
                                  retry=retry)
        self.query = SqlQueryIndex(engine)
        self.retrieve = SqlRetrieveIndex(engine)
        self.worklist = SqlWorklist(engine, retry=retry)
        self.mpps = SqlMppsIndex(engine, retry=retry)
        self.processes = ProcessRegistry(engine, lease=process_lease, retry=retry)
        self.commitment = SqlCommitmentIndex(engine, retry=retry, owner=self.processes.token,
                                             lease=process_lease)

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

    async def add_instance(self, record: InstanceRecord, *,
                           durable: Future[None] | None = None) -> AddResult:
        """Index `record` durably, committed once `durable` (the file's sync) succeeded.
        Raises IndexWriteError, OutOfResources (database full) or `durable`'s error."""
        return await self.writer.submit(record, durable=durable)

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
