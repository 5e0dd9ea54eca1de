"""C-FIND on the SQL index: `ports.FindQuery` to SQL, one keyset page per short transaction.

PS3.4 C.2.2.2 matching, C.2.2.3 multiple values, C.4.1.3.2 relational queries, C.6.1.1 and
C.6.2.1 keys. Every value is a bound parameter. Matching rules as implemented:

- single value: exact and case-sensitive, except PN: case-insensitive on the ``_folded``
  column (``fold`` both sides). TM single values cover their precision ("1230" is
  12:30:00-12:30:59.999999); IS compares as integers;
- PN component groups: the query's groups are matched against the stored name's leading
  groups, so "Yamada^Tarou" also finds "Yamada^Tarou=山田^太郎"; an empty group in the
  query matches any value in that group; `*` may span a group delimiter;
- wildcard: `*` and `?` (a character is a Unicode code point), case-sensitive on both
  SQLite (GLOB) and PostgreSQL (LIKE), see ``engine.Dialect.wildcard``; a value of only
  `*` is universal matching (no condition, entities without a value match too); at most
  `MAX_PATTERN_LENGTH` characters;
- range on DA and TM, bounds inclusive, either end open; a TM bound with fewer components
  covers the whole unit ("-12" ends at 12:59:59.999999). Combined date-time ranges
  (C.2.2.2.5.4) compare date||time; an entity with a date and no time matches when its
  day meets the range;
- lists (of UIDs, and of other values): any value matches, each by the rules above (PN
  case and groups, wildcards); plain values as one IN, at most `MAX_LIST_VALUES` values;
- empty value ("", C.2.2.2.7): no value, or a zero-length one;
- multi-valued keys, ModalitiesInStudy, SOPClassesInStudy, OtherPatientIDs: an entity
  matches when any of its values does (EXISTS);
- keys of levels below the query level (relational): one EXISTS over the descendant
  chain, so a single descendant (series and its instance) must match all of them;
- sequence matching is not offered: ``matchable`` names no sequence attribute.

A condition the index cannot match (unknown key, bad DA/TM/IS value, NUL, too long a
list or pattern) raises ``DataSetError`` before any SQL runs: the service answers it
with a status and its Error Comment.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Engine,
    FromClause,
    Integer,
    Select,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
)

from ..ports import Condition, FindPage, FindQuery, JsonDataset, MatchKind
from ..ports import QueryLevel as _QueryLevel
from .answers import computed_keys, identifying_columns, merge_answer
from .engine import Dialect, dialect_of
from .matching import MAX_LIST_VALUES, MAX_PATTERN_LENGTH, bad, chunked, combined_range, predicate
from .models import (
    KEYS,
    MULTI_VALUED,
    Instance,
    KeyKind,
    Level,
    Patient,
    PatientOtherId,
    PatientValue,
    Series,
    SeriesValue,
    Study,
    StudyValue,
)

__all__ = [
    "MAX_LIST_VALUES",
    "MAX_PATTERN_LENGTH",
    "SqlQueryIndex",
    "keyset_select",
    "matchable_tags",
]

TAG_PATIENT_ID: Final = 0x00100020
TAG_ISSUER_OF_PATIENT_ID: Final = 0x00100021
TAG_OTHER_PATIENT_IDS: Final = 0x00101000
TAG_STUDY_INSTANCE_UID: Final = 0x0020000D
TAG_MODALITIES_IN_STUDY: Final = 0x00080061
TAG_SOP_CLASSES_IN_STUDY: Final = 0x00080062
TAG_SERIES_INSTANCE_UID: Final = 0x0020000E
TAG_SOP_INSTANCE_UID: Final = 0x00080018
TAG_SOP_CLASS_UID: Final = 0x00080016

ORDER: Final = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
_DEPTH: Final = {level: depth for depth, level in enumerate(ORDER)}
_TABLES: Final = {
    Level.PATIENT: Patient.__table__,
    Level.STUDY: Study.__table__,
    Level.SERIES: Series.__table__,
    Level.IMAGE: Instance.__table__,
}
_PARENT_FK: Final = {Level.STUDY: "patient_pk", Level.SERIES: "study_pk", Level.IMAGE: "series_pk"}
_VALUES: Final = {
    Level.PATIENT: PatientValue.__table__,
    Level.STUDY: StudyValue.__table__,
    Level.SERIES: SeriesValue.__table__,
}
_OTHER_IDS: Final = PatientOtherId.__table__
# Typed identifying values returned with every answer (unique keys of the levels above).
_IDENTIFIERS: Final = {
    Level.PATIENT: ("patient_id", "issuer_of_patient_id"),
    Level.STUDY: ("study_instance_uid",),
    Level.SERIES: ("series_instance_uid",),
    Level.IMAGE: ("sop_instance_uid", "sop_class_uid"),
}


class _Source(enum.Enum):
    """Where a key's values are kept."""

    COLUMN = "column"  # a column of the level's own table
    VALUES = "values"  # rows of the level's multi-valued key table
    OTHER_IDS = "other-ids"  # patient_other_id rows
    DESCENDANT = "descendant"  # a column of every descendant at level `via` (C.6.1.1.3)


@dataclass(frozen=True, slots=True)
class _Key:
    """A matchable key: its level, where its values live and how they are kept."""

    tag: int
    level: Level
    column: str
    kind: KeyKind
    source: _Source = _Source.COLUMN
    via: Level | None = None


def _registry() -> dict[int, _Key]:
    keys = {c.tag: _Key(c.tag, level, c.column, c.kind)
            for level, columns in KEYS.items() for c in columns}
    keys |= {c.tag: _Key(c.tag, level, "value", c.kind, _Source.VALUES)
             for level, columns in MULTI_VALUED.items() for c in columns}
    text = KeyKind.TEXT
    for key in (
        _Key(TAG_PATIENT_ID, Level.PATIENT, "patient_id", text),
        _Key(TAG_ISSUER_OF_PATIENT_ID, Level.PATIENT, "issuer_of_patient_id", text),
        _Key(TAG_OTHER_PATIENT_IDS, Level.PATIENT, "other_patient_id", text, _Source.OTHER_IDS),
        _Key(TAG_STUDY_INSTANCE_UID, Level.STUDY, "study_instance_uid", text),
        _Key(TAG_MODALITIES_IN_STUDY, Level.STUDY, "modality", text, _Source.DESCENDANT,
             Level.SERIES),
        _Key(TAG_SOP_CLASSES_IN_STUDY, Level.STUDY, "sop_class_uid", text, _Source.DESCENDANT,
             Level.IMAGE),
        _Key(TAG_SERIES_INSTANCE_UID, Level.SERIES, "series_instance_uid", text),
        _Key(TAG_SOP_INSTANCE_UID, Level.IMAGE, "sop_instance_uid", text),
        _Key(TAG_SOP_CLASS_UID, Level.IMAGE, "sop_class_uid", text),
    ):
        keys[key.tag] = key
    return keys


_KEYS: Final = _registry()
_MATCHABLE: Final = {
    level: frozenset(k.tag for k in _KEYS.values() if _DEPTH[k.level] <= _DEPTH[level])
    for level in ORDER
}


def matchable_tags(level: _QueryLevel | Level) -> frozenset[int]:
    """Tags matched in SQL at `level`: its keys and those of the levels above (C.6.1.1)."""
    return _MATCHABLE[level]


# --- clauses ---------------------------------------------------------------------------

_Scope = Mapping[Level, FromClause]


def _rows(key: _Key, owner: FromClause) -> tuple[list[ColumnElement[bool]], ColumnElement[Any]]:
    """For a key kept in other rows: the clauses tying them to `owner`, and the column."""
    if key.source is _Source.VALUES:
        values = _VALUES[key.level].alias()
        column = values.c.value_folded if key.kind is KeyKind.PN else values.c.value
        return [values.c.owner_pk == owner.c.pk, values.c.tag == key.tag], column
    if key.source is _Source.OTHER_IDS:
        others = _OTHER_IDS.alias()
        return [others.c.patient_pk == owner.c.pk], others.c[key.column]
    assert key.via is not None
    links, parent = [], owner
    for level in ORDER[_DEPTH[key.level] + 1:_DEPTH[key.via] + 1]:
        table = _TABLES[level].alias()
        links.append(table.c[_PARENT_FK[level]] == parent.c.pk)
        parent = table
    return links, parent.c[key.column]


def _combined(key: _Key, cond: Condition, owner: FromClause) -> ColumnElement[bool]:
    """PS3.4 C.2.2.2.5.4: a DA and a TM key of one level matched as one date-time range."""
    partner = _KEYS.get(cond.combined_with or 0)
    if (key.kind is not KeyKind.DATE or partner is None or partner.kind is not KeyKind.TIME
            or partner.level != key.level or partner.source is not _Source.COLUMN
            or key.source is not _Source.COLUMN):
        raise bad(cond, "no combined date-time matching for this pair")
    return combined_range(owner.c[key.column], owner.c[partner.column], cond)


def _clause(key: _Key, cond: Condition, scope: _Scope, dialect: Dialect
            ) -> ColumnElement[bool] | None:
    """`cond` on the entity of `key.level` in `scope`; None is universal matching."""
    owner = scope[key.level]
    if cond.kind is MatchKind.SEQUENCE:
        raise bad(cond, "sequence matching is not supported")
    if any("\x00" in value for value in cond.values):
        raise bad(cond, "NUL in a value")  # no text VR allows it; SQLite cuts strings there
    if cond.combined_with is not None:
        return _combined(key, cond, owner)
    if key.source is _Source.COLUMN:
        column = owner.c[key.column]
        if cond.kind is MatchKind.EMPTY:  # C.2.2.2.7
            return or_(column.is_(None), column == "")
        if key.kind is KeyKind.PN:
            column = owner.c[f"{key.column}_folded"]
        match = predicate(column, key.kind, cond, dialect)
        if match is not None and key.column == "patient_id":
            # Implied by any non-empty value; lets SQLite use the partial unique index.
            match = and_(column != "", match)
        return match
    # Values in other rows: the entity matches when any of them does (C.2.2.3).
    links, column = _rows(key, owner)
    if cond.kind is MatchKind.EMPTY:
        return ~exists().where(*links, column.is_not(None), column != "")
    match = predicate(column, key.kind, cond, dialect)
    return None if match is None else exists().where(*links, match)


def _key(cond: Condition) -> _Key:
    key = _KEYS.get(cond.tag)
    if key is None:
        raise bad(cond, "not a matching key here")
    return key


def _relational(level: Level, below: list[tuple[_Key, Condition]], scope: _Scope,
                dialect: Dialect) -> ColumnElement[bool] | None:
    """Keys below the query level (C.4.1.3.2): some descendant chain matches them all."""
    deepest = max(_DEPTH[key.level] for key, _ in below)
    inner, links, parent = dict(scope), [], scope[level]
    for child in ORDER[_DEPTH[level] + 1:deepest + 1]:
        table = _TABLES[child].alias()
        links.append(table.c[_PARENT_FK[child]] == parent.c.pk)
        inner[child] = parent = table
    clauses = [c for key, cond in below if (c := _clause(key, cond, inner, dialect)) is not None]
    return exists().where(*links, *clauses) if clauses else None


def _joined(level: Level, top: Level) -> tuple[FromClause, dict[Level, FromClause]]:
    """`level`'s table joined to its ancestors up to `top`, and the table of each level."""
    scope: dict[Level, FromClause] = {}
    from_: FromClause | None = None
    for current in reversed(ORDER[_DEPTH[top]:_DEPTH[level] + 1]):
        table = _TABLES[current]
        if from_ is None:
            from_ = table
        else:
            child = ORDER[_DEPTH[current] + 1]
            from_ = from_.join(table, scope[child].c[_PARENT_FK[child]] == table.c.pk)
        scope[current] = table
    assert from_ is not None
    return from_, scope


def _matching(query: FindQuery, dialect: Dialect) -> tuple[FromClause, ColumnElement[int],
                                                           list[ColumnElement[bool]]]:
    """FROM (only the ancestors conditions name), the entity's pk, and WHERE clauses."""
    level = query.level
    keyed = [(_key(cond), cond) for cond in query.conditions]
    top = min((_DEPTH[key.level] for key, _ in keyed), default=_DEPTH[level])
    from_, scope = _joined(level, ORDER[min(top, _DEPTH[level])])
    where: list[ColumnElement[bool]] = []
    below: list[tuple[_Key, Condition]] = []
    for key, cond in keyed:
        if _DEPTH[key.level] > _DEPTH[level]:
            below.append((key, cond))
        elif (clause := _clause(key, cond, scope, dialect)) is not None:
            where.append(clause)
    if below and (clause := _relational(level, below, scope, dialect)) is not None:
        where.append(clause)
    return from_, scope[level].c.pk, where


def keyset_select(query: FindQuery, dialect: Dialect, *, after: int | None = None,
                  limit: int | None = None) -> Select[Any]:
    """The primary keys of matching entities after `after`, in order (one page's keyset).

    Only primary keys, so SQLite's planner weighs covering indexes (a selective index
    plus a sort, rather than a scan in primary-key order); the rows come afterwards.
    `after` `AFTER` leaves the cursor a bound parameter of that name: one statement serves
    every page of a query.
    """
    from_, pk, where = _matching(query, dialect)
    stmt = select(pk).select_from(from_).where(*where)
    if after is AFTER:
        stmt = stmt.where(pk > bindparam(AFTER, type_=Integer))
    elif after is not None:
        stmt = stmt.where(pk > after)
    stmt = stmt.order_by(pk)
    if limit is None:
        return stmt
    # Inline (a validated int): SQLite plans a bound LIMIT as a scan in pk order, which
    # reads the whole table for a selective range such as a month of StudyDate.
    return stmt.limit(bindparam("page_limit", int(limit), type_=Integer, literal_execute=True))


def _rows_select(level: Level) -> Select[Any]:
    """The entities `:pks` with their ancestors' pks, JSON and identifying values."""
    from_, scope = _joined(level, Level.PATIENT)
    columns: list[Any] = []
    for current, table in scope.items():
        columns += [table.c.pk.label(f"{current.value}_pk"),
                    table.c.attributes.label(f"{current.value}_attrs")]
        columns += [table.c[name] for name in _IDENTIFIERS[current]]
    pks = bindparam("pks", expanding=True)
    return select(*columns).select_from(from_).where(scope[level].c.pk.in_(pks))


_ROWS: Final = {level: _rows_select(level) for level in ORDER}
AFTER: Final = "after"  # the keyset cursor's parameter (`keyset_select`)
BEFORE_FIRST: Final = -1  # below every primary key: the first page's cursor
STATEMENTS: Final = 256  # queries whose page statement is kept
PARSED: Final = 8192  # level JSON texts whose parse is kept (~2 KB each)


@functools.lru_cache(maxsize=PARSED)
def _parsed(text: str) -> dict[str, Any]:
    """A level's DICOM JSON, parsed; kept by its text, so a changed row is parsed anew.

    json.loads cost ~10 us per level per answer, a third of building a C-FIND answer; the
    same patients and studies come back in the pages of repeated and overlapping queries.
    Callers must not change the result (it is shared).
    """
    return json.loads(text)  # type: ignore[no-any-return]


# --- the port --------------------------------------------------------------------------


class SqlQueryIndex:
    """`ports.QueryIndex` over an SQLAlchemy engine; each page in its own read transaction.

    The engine is synchronous (see ``engine``): each page runs in a worker thread, on a
    connection of its own, so no cursor outlives a page (a held cursor pins SQLite's WAL).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = dialect_of(engine)
        # The page statement of recent queries: built and compiled once, not once per page.
        self._statements: dict[tuple[FindQuery, int], Select[Any]] = {}

    def matchable(self, level: _QueryLevel) -> frozenset[int]:
        """Tags matched in SQL for a query at `level` (the level and above)."""
        return matchable_tags(level)

    async def find(self, query: FindQuery, *, after: object | None, limit: int) -> FindPage:
        """At most `limit` answers after the keyset cursor `after` (None: from the start)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if after is not None and not isinstance(after, int):
            raise TypeError(f"not a cursor of this index: {after!r}")
        stmt = self._statement(query, limit + 1)
        cursor = BEFORE_FIRST if after is None else after
        return await asyncio.to_thread(self._page, stmt, cursor, query.level, limit)

    def _statement(self, query: FindQuery, limit: int) -> Select[Any]:
        """The keyset page statement of `query` (`keyset_select`), kept for its next pages."""
        key = (query, limit)
        stmt = self._statements.get(key)
        if stmt is None:
            stmt = keyset_select(query, self._dialect, after=AFTER, limit=limit)
            if len(self._statements) >= STATEMENTS:
                self._statements.pop(next(iter(self._statements)))  # the oldest
            self._statements[key] = stmt
        return stmt

    async def count(self, query: FindQuery, *, cap: int) -> int:
        """How many entities match, counting no further than `cap` + 1."""
        matches = keyset_select(query, self._dialect, limit=max(cap, 0) + 1).order_by(None)
        stmt = select(func.count()).select_from(matches.subquery())
        return await asyncio.to_thread(self._scalar, stmt)

    def _scalar(self, stmt: Select[Any]) -> int:
        with self._engine.connect() as conn, conn.begin():
            return int(conn.execute(stmt).scalar_one())

    def _page(self, keyset: Select[Any], after: int, level: Level, limit: int) -> FindPage:
        with self._engine.connect() as conn, conn.begin():
            pks = list(conn.execute(keyset, {AFTER: after}).scalars())
            more = len(pks) > limit
            del pks[limit:]
            rows: dict[int, Mapping[str, Any]] = {}
            for chunk in chunked(pks):
                for row in conn.execute(_ROWS[level], {"pks": chunk}).mappings():
                    rows[row[f"{level.value}_pk"]] = row
            extra = computed_keys(conn, level, pks)
        answers = _answers((rows[pk] for pk in pks if pk in rows), level, extra)
        return FindPage(answers, pks[-1] if more else None)


def _answers(rows: Iterable[Mapping[str, Any]], level: Level,
             extra: Mapping[int, JsonDataset]) -> tuple[JsonDataset, ...]:
    parsed: dict[tuple[Level, int], dict[str, Any]] = {}  # ancestors repeat along a page
    out = []
    identifying: tuple[str, ...] | None = None
    for row in rows:
        if identifying is None:
            identifying = identifying_columns(row.keys())
        levels = []
        for current in ORDER[:_DEPTH[level] + 1]:
            pk = row[f"{current.value}_pk"]
            key = (current, pk)
            if key not in parsed:
                parsed[key] = _parsed(row[f"{current.value}_attrs"])
            levels.append(parsed[key])
        out.append(merge_answer(levels, row, extra.get(row[f"{level.value}_pk"], {}),
                                identifying))
    return tuple(out)
