"""C-MOVE / C-GET on the SQL index: the stored instances under selected entities, by keyset.

PS3.4 C.4.2.2.1 and C.4.3.2.1: a retrieve names entities by their unique keys; every
instance below them is sent. The selection reuses C-FIND's SQL (``query.keyset_select``) at
the IMAGE level, so conditions on the keys of any level above apply through the joins. Each
page runs in its own short read transaction (DESIGN 11): a retrieve of thousands of
instances never holds a cursor while sub-operations are under way.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from sqlalchemy import Engine, Select, and_, bindparam, false, or_, select

from ..ports import FindQuery, InstanceLocation, InstancePage, QueryLevel
from .engine import dialect_of
from .matching import chunked
from .models import Instance
from .query import keyset_select

__all__ = ["SqlRetrieveIndex"]

_TABLE: Final = Instance.__table__
_LOCATIONS: Final = (
    select(_TABLE.c.pk, _TABLE.c.sop_class_uid, _TABLE.c.sop_instance_uid,
           _TABLE.c.transfer_syntax_uid, _TABLE.c.storage_key, _TABLE.c.dataset_offset,
           _TABLE.c.file_size)
    .where(_TABLE.c.pk.in_(bindparam("pks", expanding=True)))
)


def _instances_of(query: FindQuery) -> FindQuery:
    """The same conditions, answered at the IMAGE level (the instances below the entities)."""
    return FindQuery(QueryLevel.IMAGE, query.conditions)


class SqlRetrieveIndex:
    """`ports.RetrieveIndex` over an SQLAlchemy engine; each call in a worker thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = dialect_of(engine)

    async def instances(self, query: FindQuery, *, after: object | None, limit: int,
                        kinds: frozenset[tuple[str, str]] | None = None) -> InstancePage:
        """At most `limit` instances under the entities `query` selects, in pk order."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if after is not None and not isinstance(after, int):
            raise TypeError(f"not a cursor of this index: {after!r}")
        keyset = keyset_select(_instances_of(query), self._dialect, after=after,
                               limit=limit + 1)
        if kinds is not None:
            keyset = keyset.where(or_(false(), *(
                and_(_TABLE.c.sop_class_uid == sop_class, _TABLE.c.transfer_syntax_uid == ts)
                for sop_class, ts in sorted(kinds))))
        return await asyncio.to_thread(self._page, keyset, limit)

    async def instance_kinds(self, query: FindQuery) -> tuple[tuple[str, str], ...]:
        """Distinct (SOP class, transfer syntax) of the selected instances, in a stable order."""
        pks = keyset_select(_instances_of(query), self._dialect).order_by(None).subquery()
        stmt = (select(_TABLE.c.sop_class_uid, _TABLE.c.transfer_syntax_uid)
                .where(_TABLE.c.pk.in_(select(pks.c[0])))
                .distinct()
                .order_by(_TABLE.c.sop_class_uid, _TABLE.c.transfer_syntax_uid))
        rows = await asyncio.to_thread(self._rows, stmt)
        return tuple((str(a), str(b)) for a, b in rows)

    def _rows(self, stmt: Select[Any]) -> list[Any]:
        with self._engine.connect() as conn, conn.begin():
            return list(conn.execute(stmt).all())

    def _page(self, keyset: Select[Any], limit: int) -> InstancePage:
        with self._engine.connect() as conn, conn.begin():
            pks = list(conn.execute(keyset).scalars())
            more = len(pks) > limit
            del pks[limit:]
            rows = {row.pk: row for chunk in chunked(pks)
                    for row in conn.execute(_LOCATIONS, {"pks": chunk})}
        found = tuple(
            InstanceLocation(row.sop_class_uid, row.sop_instance_uid, row.transfer_syntax_uid,
                             row.storage_key, int(row.dataset_offset), int(row.file_size))
            for pk in pks if (row := rows.get(pk)) is not None)
        return InstancePage(found, pks[-1] if more else None)
