"""The benchmark's C-FIND SCU: minipacs' asyncio client, one open association, timed replies.

Speaks plain DIMSE (PS3.7 §9.1.2 C-FIND) with the identifier encoded by pydicom in the
accepted transfer syntax, so it measures any SCP the same way and needs nothing of
minipacs' C-FIND service code. Study Root Query/Retrieve Information Model - FIND
(PS3.4 C.6.2) only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from find_servers import CLIENT_AE
from ingest_servers import SERVER_AE
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from minipacs.net.client import association
from minipacs.net.router import Router
from minipacs.proto.dimse import CFindRQ
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.pdu import AAssociateRQ
from minipacs.proto.sop import STUDY_ROOT_QR_FIND, dataset_encoding
from minipacs.proto.status import Status, StatusCategory, category, describe

__all__ = ["FindQuery", "FindTiming", "QueryResult", "encode_identifier", "measure_queries"]

MAX_PDU: Final = 131072
TIMEOUT: Final = 60.0  # per query: a stuck server fails the row, not the run


@dataclass(frozen=True, slots=True)
class FindQuery:
    """A Study Root identifier (keyword → value, "" = return key) and its answer count."""

    name: str
    label: str
    level: str
    keys: dict[str, str]
    expected: int  # matching entities
    expected_instances: int  # instances below them (qrscp answers once per instance)


@dataclass
class FindTiming:
    firsts: list[float] = field(default_factory=list)  # ms to the first response
    totals: list[float] = field(default_factory=list)  # ms to the final response
    server_cpu: float | None = None  # server CPU ms per measured query (all its threads)


@dataclass
class QueryResult:
    query: FindQuery
    timing: FindTiming
    error: str = ""
    sample: bytes | None = None  # the first answer's identifier, for a look
    answers: int = 0  # pending responses per query (entities, or instances for qrscp)


def encode_identifier(query: FindQuery, transfer_syntax: str) -> bytes:
    """The identifier as data-set bytes in `transfer_syntax` (PS3.4 C.4.1.1.3)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = query.level
    for keyword, value in query.keys.items():
        setattr(ds, keyword, value)
    implicit, little, deflated = dataset_encoding(transfer_syntax)
    if deflated or not little:
        raise ValueError(f"transfer syntax {transfer_syntax} not used by this SCU")
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    write_dataset(fp, ds)
    return fp.getvalue()


def _request() -> AAssociateRQ:
    return build_associate_rq(
        CLIENT_AE, SERVER_AE,
        [(STUDY_ROOT_QR_FIND, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])],
        max_pdu_length=MAX_PDU)


def _find_context(conn: Router) -> tuple[int, str]:
    context = next((c for c in conn.info.negotiated.contexts.values()
                    if c.abstract_syntax == STUDY_ROOT_QR_FIND), None)
    if context is None:
        raise RuntimeError("the server did not accept Study Root Query/Retrieve - FIND")
    return context.context_id, context.transfer_syntax


async def _one(conn: Router, context_id: int, data: bytes
               ) -> tuple[float, float, int, int, bytes | None]:
    """(ms to first response, ms to final, pending count, final status, first answer)."""
    message = CFindRQ(message_id=conn.next_message_id(),
                      affected_sop_class_uid=STUDY_ROOT_QR_FIND)
    first = None
    pending = 0
    status = -1
    sample = None
    started = time.perf_counter()
    async for reply in conn.request(context_id, message, data):
        if first is None:
            first = time.perf_counter()
        code = reply.message.status  # type: ignore[union-attr]
        if category(code) is StatusCategory.PENDING:
            pending += 1
            if sample is None:
                sample = reply.dataset
        else:
            status = code
    end = time.perf_counter()
    return ((first or end) - started) * 1000, (end - started) * 1000, pending, status, sample


async def measure_queries(port: int, queries: list[FindQuery], reps: int, warmup: int, *,
                          per_instance: bool = False,
                          cpu_probe: Callable[[], float] | None = None) -> list[QueryResult]:
    """Each query `warmup` + `reps` times in a row over one association.

    `per_instance`: the server answers once per matching instance, not per entity.
    `cpu_probe`: the server's CPU seconds so far, read around the measured repetitions.
    """
    results = []
    async with association("127.0.0.1", port, _request(), connect_timeout=TIMEOUT,
                           artim_timeout=TIMEOUT) as conn:
        context_id, ts = _find_context(conn)
        for query in queries:
            result = QueryResult(query, FindTiming())
            results.append(result)
            data = encode_identifier(query, ts)
            cpu_start = 0.0
            for i in range(warmup + reps):
                if i == warmup and cpu_probe is not None:
                    cpu_start = cpu_probe()
                async with asyncio.timeout(TIMEOUT):
                    first, total, count, status, sample = await _one(conn, context_id, data)
                if status != Status.SUCCESS:
                    result.error = f"final status {describe(status)} after {count} pending"
                    break
                expected = query.expected_instances if per_instance else query.expected
                if count != expected:
                    result.error = f"{count} answers, expected {expected}"
                    break
                if result.sample is None:
                    result.sample = sample
                result.answers = count
                if i >= warmup:
                    result.timing.firsts.append(first)
                    result.timing.totals.append(total)
            if cpu_probe is not None and result.timing.totals:
                spent = cpu_probe() - cpu_start
                result.timing.server_cpu = spent * 1000 / len(result.timing.totals)
    return results
