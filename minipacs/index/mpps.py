"""MPPS instances on the SQL index: `ports.MppsIndex` (PS3.4 F.7.2).

Low volume (a few messages per procedure), so each call is one short transaction in a worker
thread rather than a trip through the C-STORE writer's queue, through the one write
transaction helper (``engine.write_transaction``: lock and serialization retries). A
final state is written once: the UPDATE only matches a row still IN PROGRESS.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from sqlalchemy import Connection, Engine, Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..ports import MppsRecord
from .engine import DEFAULT_RETRY, RetryPolicy, write_transaction
from .models import Study
from .models_mpps import Mpps, MppsStep

__all__ = ["IN_PROGRESS", "SqlMppsIndex"]

IN_PROGRESS: Final = "IN PROGRESS"  # PS3.3 C.4.14 Performed Procedure Step Status
_T = TypeVar("_T")

_MPPS: Final = Mpps.__table__
_STEP: Final = MppsStep.__table__
_STUDY: Final = Study.__table__


def _clip(value: str, column: Any) -> str:
    """A key cut to its column (the whole value stays in the JSON data set)."""
    return value[: column.type.length]


def _keys(record: MppsRecord) -> dict[str, Any]:
    c = _MPPS.c
    return {
        "status": _clip(record.status, c.status),
        "patient_id": _clip(record.patient_id, c.patient_id),
        "modality": _clip(record.modality, c.modality),
        "station_ae": _clip(record.station_ae, c.station_ae),
        "start_date": _clip(record.start_date, c.start_date),
        "start_time": _clip(record.start_time, c.start_time),
        "end_date": _clip(record.end_date, c.end_date),
        "end_time": _clip(record.end_time, c.end_time),
        "attributes": json.dumps(record.dataset, ensure_ascii=False, separators=(",", ":")),
    }


class SqlMppsIndex:
    """`ports.MppsIndex` over an SQLAlchemy engine."""

    def __init__(self, engine: Engine, *, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self._engine = engine
        self._retry = retry

    async def create_mpps(self, record: MppsRecord) -> bool:
        return await asyncio.to_thread(self._write, lambda conn: self._create(conn, record))

    async def get_mpps(self, sop_instance_uid: str) -> MppsRecord | None:
        found = await asyncio.to_thread(self._read, [sop_instance_uid], None)
        return found[0] if found else None

    async def update_mpps(self, record: MppsRecord) -> bool:
        return await asyncio.to_thread(self._write, lambda conn: self._update(conn, record))

    async def mpps_for_study(self, study_instance_uid: str) -> tuple[MppsRecord, ...]:
        return tuple(await asyncio.to_thread(self._read, None, study_instance_uid))

    async def linked_studies(self, sop_instance_uid: str) -> tuple[str, ...]:
        """The studies of an MPPS's scheduled steps that the index holds (stored images)."""
        stmt = (select(_STUDY.c.study_instance_uid).distinct()
                .join(_STEP, _STEP.c.study_instance_uid == _STUDY.c.study_instance_uid)
                .join(_MPPS, _MPPS.c.pk == _STEP.c.mpps_pk)
                .where(_MPPS.c.sop_instance_uid == sop_instance_uid)
                .order_by(_STUDY.c.study_instance_uid))

        def run() -> tuple[str, ...]:
            with self._engine.connect() as conn, conn.begin():
                return tuple(conn.execute(stmt).scalars())

        return await asyncio.to_thread(run)

    # --- in worker threads ---------------------------------------------------------------

    def _create(self, conn: Connection, record: MppsRecord) -> bool:
        now = datetime.now(UTC)
        nested = conn.begin_nested()  # a duplicate UID rolls back this INSERT only
        try:
            pk = conn.execute(
                insert(_MPPS).values(
                    sop_instance_uid=record.sop_instance_uid,
                    calling_ae=_clip(record.calling_ae, _MPPS.c.calling_ae),
                    created=now, updated=now, **_keys(record))
                .returning(_MPPS.c.pk)).scalar_one()
        except IntegrityError:
            nested.rollback()
            return False
        nested.commit()
        if record.steps:
            conn.execute(insert(_STEP), [
                {"mpps_pk": pk, "study_instance_uid": _clip(study, _STEP.c.study_instance_uid),
                 "scheduled_step_id": _clip(step, _STEP.c.scheduled_step_id)}
                for study, step in record.steps])
        return True

    def _update(self, conn: Connection, record: MppsRecord) -> bool:
        result = conn.execute(
            update(_MPPS)
            .where(_MPPS.c.sop_instance_uid == record.sop_instance_uid,
                   _MPPS.c.status == IN_PROGRESS)
            .values(updated=datetime.now(UTC), **_keys(record)))
        return bool(result.rowcount)

    def _read(self, uids: list[str] | None, study: str | None) -> list[MppsRecord]:
        stmt = select(_MPPS).order_by(_MPPS.c.pk)
        if uids is not None:
            stmt = stmt.where(_MPPS.c.sop_instance_uid.in_(uids))
        if study is not None:
            stmt = stmt.where(_MPPS.c.pk.in_(
                select(_STEP.c.mpps_pk).where(_STEP.c.study_instance_uid == study)))
        with self._engine.connect() as conn, conn.begin():
            rows = conn.execute(stmt).all()
            steps: dict[int, list[tuple[str, str]]] = {row.pk: [] for row in rows}
            if steps:
                for step in conn.execute(
                        select(_STEP.c.mpps_pk, _STEP.c.study_instance_uid,
                               _STEP.c.scheduled_step_id)
                        .where(_STEP.c.mpps_pk.in_(list(steps))).order_by(_STEP.c.pk)):
                    steps[step.mpps_pk].append((step.study_instance_uid,
                                                step.scheduled_step_id))
        return [_record(row, tuple(steps[row.pk])) for row in rows]

    def _write(self, work: Callable[[Connection], _T]) -> _T:
        return write_transaction(self._engine, work, retry=self._retry, what="MPPS write")

def _record(row: Row[Any], steps: tuple[tuple[str, str], ...]) -> MppsRecord:
    return MppsRecord(
        sop_instance_uid=row.sop_instance_uid, status=row.status,
        dataset=json.loads(row.attributes), patient_id=row.patient_id or "",
        modality=row.modality or "", station_ae=row.station_ae or "",
        start_date=row.start_date or "", start_time=row.start_time or "",
        end_date=row.end_date or "", end_time=row.end_time or "",
        calling_ae=row.calling_ae or "", steps=steps, created=row.created,
        updated=row.updated)
