"""Modality Worklist on the SQL index: scheduled procedure steps stored, matched and marked.

PS3.4 K.6.1.2.1: one row, and one C-FIND answer, per Scheduled Procedure Step. The matching
rules are those of C-FIND (``matching.predicate``: single value, wildcard, list, ranges, PN
case-insensitive on the folded columns, empty value); the keys inside the Scheduled
Procedure Step Sequence (0040,0100) are columns of the step's own row, so sequence matching
(PS3.4 C.2.2.2.6) is a plain WHERE on that row. Scheduled Procedure Step Start Date and
Time given together as ranges are matched as one date-time range (C.2.2.2.5.4).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from sqlalchemy import ColumnElement, Engine, delete, or_, select, update
from sqlalchemy.engine import Connection

from ..ports import Condition, FindPage, JsonDataset, MatchKind
from .engine import DEFAULT_RETRY, Dialect, RetryPolicy, dialect_of, write_transaction
from .matching import bad, combined_range, predicate
from .models import KeyKind, clip, fold, iter_json_strings, normalize_date, normalize_time
from .models_worklist import WorklistStep

__all__ = [
    "STEP_KEYS",
    "TAG_SPS_SEQUENCE",
    "TOP_KEYS",
    "SqlWorklist",
    "StepSummary",
    "step_rows",
]

log = logging.getLogger("minipacs.worklist")

_T = TypeVar("_T")

TAG_SPECIFIC_CHARACTER_SET: Final = 0x00080005
TAG_SPS_SEQUENCE: Final = 0x00400100  # Scheduled Procedure Step Sequence
TAG_SPS_START_DATE: Final = 0x00400002
TAG_SPS_START_TIME: Final = 0x00400003
TAG_SPS_STATUS: Final = 0x00400020
_SPS_SEQUENCE_KEY: Final = f"{TAG_SPS_SEQUENCE:08X}"
_SPS_STATUS_KEY: Final = f"{TAG_SPS_STATUS:08X}"

_T_, _PN, _DA, _TM = KeyKind.TEXT, KeyKind.PN, KeyKind.DATE, KeyKind.TIME

# PS3.4 Table K.6-1 matching keys kept as columns: (column, how it is kept).
TOP_KEYS: Final[Mapping[int, tuple[str, KeyKind]]] = {
    0x00100010: ("patient_name", _PN),
    0x00100020: ("patient_id", _T_),
    0x00080050: ("accession_number", _T_),
    0x00401001: ("requested_procedure_id", _T_),
    0x0020000D: ("study_instance_uid", _T_),
}
STEP_KEYS: Final[Mapping[int, tuple[str, KeyKind]]] = {
    0x00080060: ("modality", _T_),
    0x00400001: ("scheduled_station_ae_title", _T_),
    TAG_SPS_START_DATE: ("sps_start_date", _DA),
    TAG_SPS_START_TIME: ("sps_start_time", _TM),
    0x00400006: ("scheduled_performing_physician_name", _PN),
    0x00400009: ("sps_id", _T_),
    TAG_SPS_STATUS: ("sps_status", _T_),
}
_TABLE: Final = WorklistStep.__table__


@dataclass(frozen=True, slots=True)
class StepSummary:
    """One stored step as `minipacs worklist list` shows it."""

    id: int
    start_date: str
    start_time: str
    modality: str
    station_ae: str
    patient_name: str
    patient_id: str
    accession_number: str
    sps_id: str
    status: str


# --- rows from items ---------------------------------------------------------------------


def _column_values(keys: Mapping[int, tuple[str, KeyKind]], ds: JsonDataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag, (column, kind) in keys.items():
        values = list(iter_json_strings(ds.get(f"{tag:08X}")))
        raw = "\\".join(values) if values else None
        value: Any = raw
        if raw is not None and kind is KeyKind.DATE:
            value = normalize_date(raw)
        elif raw is not None and kind is KeyKind.TIME:
            value = normalize_time(raw)
        out[column] = clip(value, _TABLE.c[column].type.length)
        if kind is KeyKind.PN:
            out[f"{column}_folded"] = clip(fold(raw), _TABLE.c[f"{column}_folded"].type.length)
    return out


def step_rows(item: JsonDataset) -> list[dict[str, Any]]:
    """One row per Scheduled Procedure Step of a worklist item (PS3.4 K.6.1.2.1).

    Each row keeps the item with its Specific Character Set dropped (the JSON is Unicode;
    answers choose their own) and only that step in the Scheduled Procedure Step Sequence.
    """
    base = {tag: value for tag, value in item.items()
            if tag != f"{TAG_SPECIFIC_CHARACTER_SET:08X}"}
    steps = [step for step in (base.get(_SPS_SEQUENCE_KEY) or {}).get("Value") or ()
             if isinstance(step, Mapping)]
    top = _column_values(TOP_KEYS, base)
    rows = []
    for step in steps:
        one = dict(base)
        one[_SPS_SEQUENCE_KEY] = {"vr": "SQ", "Value": [dict(step)]}
        rows.append({**top, **_column_values(STEP_KEYS, step),
                     "attributes": json.dumps(one, ensure_ascii=False, separators=(",", ":"))})
    return rows


# --- matching ----------------------------------------------------------------------------


def _where(conditions: Iterable[Condition], dialect: Dialect) -> list[ColumnElement[bool]]:
    """WHERE clauses of a worklist query; raises DataSetError for a key we cannot match."""
    clauses: list[ColumnElement[bool]] = []
    for cond in conditions:
        if cond.tag == TAG_SPS_SEQUENCE and cond.kind is MatchKind.SEQUENCE:
            clauses += _clauses(cond.items, STEP_KEYS, dialect)
        else:
            clauses += _clauses((cond,), TOP_KEYS, dialect)
    return clauses


def _clauses(conditions: Iterable[Condition], keys: Mapping[int, tuple[str, KeyKind]],
             dialect: Dialect) -> list[ColumnElement[bool]]:
    out = []
    for cond in conditions:
        if cond.tag not in keys or cond.kind is MatchKind.SEQUENCE:
            raise bad(cond, "not a matching key of the worklist")
        if any("\x00" in value for value in cond.values):
            raise bad(cond, "NUL in a value")
        column_name, kind = keys[cond.tag]
        column = _TABLE.c[column_name]
        if cond.combined_with is not None:  # C.2.2.2.5.4: SPS Start Date with Start Time
            if cond.tag != TAG_SPS_START_DATE or cond.combined_with != TAG_SPS_START_TIME:
                raise bad(cond, "no combined date-time matching for this pair")
            out.append(combined_range(column, _TABLE.c.sps_start_time, cond))
            continue
        if cond.kind is MatchKind.EMPTY:  # C.2.2.2.7
            out.append(or_(column.is_(None), column == ""))
            continue
        if kind is KeyKind.PN:
            column = _TABLE.c[f"{column_name}_folded"]
        clause = predicate(column, kind, cond, dialect)
        if clause is not None:
            out.append(clause)
    return out


# --- the adapter -------------------------------------------------------------------------


class SqlWorklist:
    """`ports.WorklistIndex` over an SQLAlchemy engine, plus the blocking admin calls."""

    def __init__(self, engine: Engine, *, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self._engine = engine
        self._dialect = dialect_of(engine)
        self._retry = retry

    def matchable(self, sequence: int | None = None) -> frozenset[int]:
        """Tags matched in SQL: top-level keys (None) or those inside `sequence`'s item."""
        if sequence is None:
            return frozenset(TOP_KEYS) | {TAG_SPS_SEQUENCE}
        return frozenset(STEP_KEYS) if sequence == TAG_SPS_SEQUENCE else frozenset()

    async def find(self, conditions: Sequence[Condition], *, after: object | None,
                   limit: int) -> FindPage:
        """At most `limit` steps after the keyset cursor `after`, in one read transaction."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if after is not None and not isinstance(after, int):
            raise TypeError(f"not a cursor of this index: {after!r}")
        stmt = select(_TABLE.c.pk, _TABLE.c.attributes).where(
            *_where(conditions, self._dialect))
        if after is not None:
            stmt = stmt.where(_TABLE.c.pk > after)
        stmt = stmt.order_by(_TABLE.c.pk).limit(limit + 1)

        def page() -> FindPage:
            with self._engine.connect() as conn, conn.begin():
                rows = conn.execute(stmt).all()
            more = len(rows) > limit
            rows = rows[:limit]
            answers = tuple(json.loads(row.attributes) for row in rows)
            return FindPage(answers, rows[-1].pk if more else None)

        return await asyncio.to_thread(page)

    async def mark_steps(self, status: str, steps: Sequence[tuple[str, str]]) -> int:
        """Set SPS Status (0040,0020) of the (Study Instance UID, SPS ID) steps.

        A pair without an SPS ID names no step; an empty Study Instance UID matches any.
        Returns how many rows were marked.
        """
        return await asyncio.to_thread(self.mark_steps_sync, status, steps)

    def mark_steps_sync(self, status: str, steps: Sequence[tuple[str, str]]) -> int:
        wanted = [(study, sps) for study, sps in steps if sps]
        if not wanted:
            return 0

        def work(conn: Connection) -> int:
            marked = 0
            for study, sps in dict.fromkeys(wanted):
                stmt = select(_TABLE.c.pk, _TABLE.c.attributes).where(_TABLE.c.sps_id == sps)
                if study:
                    stmt = stmt.where(_TABLE.c.study_instance_uid == study)
                for row in conn.execute(stmt).all():
                    conn.execute(update(_TABLE).where(_TABLE.c.pk == row.pk).values(
                        sps_status=status, attributes=_with_status(row.attributes, status)))
                    marked += 1
            return marked

        marked = self._write(work)
        log.info("worklist: %d step(s) marked %s", marked, status)
        return marked

    # --- blocking admin calls (the CLI) --------------------------------------------------

    def add_items(self, items: Sequence[JsonDataset]) -> list[list[int]]:
        """Store worklist items in one transaction; the new step IDs of each item."""
        prepared = [step_rows(item) for item in items]

        def work(conn: Connection) -> list[list[int]]:
            ids = []
            for rows in prepared:
                ids.append([int(conn.execute(_TABLE.insert().values(**row)).inserted_primary_key[0])
                            for row in rows])
            return ids

        return self._write(work)

    def list_steps(self) -> list[StepSummary]:
        """Every stored step, by start date and time, then ID."""
        c = _TABLE.c
        stmt = select(c.pk, c.sps_start_date, c.sps_start_time, c.modality,
                      c.scheduled_station_ae_title, c.patient_name, c.patient_id,
                      c.accession_number, c.sps_id, c.sps_status).order_by(
            c.sps_start_date, c.sps_start_time, c.pk)
        with self._engine.connect() as conn, conn.begin():
            rows = conn.execute(stmt).all()
        return [StepSummary(row.pk, row.sps_start_date or "", (row.sps_start_time or "")[:6],
                            row.modality or "", row.scheduled_station_ae_title or "",
                            row.patient_name or "", row.patient_id or "",
                            row.accession_number or "", row.sps_id or "", row.sps_status or "")
                for row in rows]

    def remove_steps(self, step_ids: Sequence[int]) -> list[int]:
        """Delete the steps of `step_ids` in one transaction; the IDs that were not there."""

        def work(conn: Connection) -> None:
            missing = [step_id for step_id in dict.fromkeys(step_ids)
                       if not conn.execute(delete(_TABLE).where(_TABLE.c.pk == step_id)).rowcount]
            if missing:  # all or nothing: the transaction rolls back
                raise _Missing(missing)

        try:
            self._write(work)
        except _Missing as exc:
            return exc.ids
        return []

    def _write(self, work: Callable[[Connection], _T]) -> _T:
        return write_transaction(self._engine, work, retry=self._retry, what="worklist write")

class _Missing(Exception):
    def __init__(self, ids: list[int]) -> None:
        super().__init__(ids)
        self.ids = ids


def _with_status(attributes: str, status: str) -> str:
    """The stored item with its one step's SPS Status replaced (what answers return)."""
    item = json.loads(attributes)
    steps = copy.deepcopy((item.get(_SPS_SEQUENCE_KEY) or {}).get("Value") or [])
    for step in steps:
        if isinstance(step, dict):
            step[_SPS_STATUS_KEY] = {"vr": "CS", "Value": [status]}
    if steps:
        item[_SPS_SEQUENCE_KEY] = {"vr": "SQ", "Value": steps}
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"))

