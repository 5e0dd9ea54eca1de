"""Storage Commitment transactions on the SQL index (`ports.CommitmentIndex`, PS3.4 Annex J).

Writes are rare (one per N-ACTION, one per check, one per delivery attempt), so each runs
as its own short write transaction in a worker thread, beside the instance writer, through
the one write transaction helper (``engine.write_transaction``); reads use their own short
transactions (DESIGN 11).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..ports import CommitmentItem, CommitmentState, CommitmentTransaction, StoredCopy
from .engine import DEFAULT_RETRY, RetryPolicy, write_transaction
from .matching import chunked
from .models import Instance
from .models_commitment import CommitmentReference
from .models_commitment import CommitmentTransaction as TransactionRow

__all__ = ["SqlCommitmentIndex"]

_TXN: Final = TransactionRow.__table__
_REF: Final = CommitmentReference.__table__
_INSTANCE: Final = Instance.__table__
_T = TypeVar("_T")


def _utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes: they were stored as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class SqlCommitmentIndex:
    """`ports.CommitmentIndex` over an SQLAlchemy engine; each call in a worker thread."""

    def __init__(self, engine: Engine, *, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self._engine = engine
        self._retry = retry

    # --- writes ---------------------------------------------------------------------------

    def _write(self, work: Callable[[Connection], _T]) -> _T:
        return write_transaction(self._engine, work, retry=self._retry,
                                 what="commitment write")

    async def add_transaction(self, transaction: CommitmentTransaction) -> bool:
        return await asyncio.to_thread(self._add, transaction)

    def _add(self, txn: CommitmentTransaction) -> bool:
        def work(conn: Connection) -> None:
            pk = conn.execute(insert(_TXN).values(
                transaction_uid=txn.transaction_uid,
                requestor_ae_title=txn.requestor_ae_title,
                called_ae_title=txn.called_ae_title,
                received_at=txn.received_at, state=str(txn.state),
                attempts=txn.attempts, next_attempt_at=txn.next_attempt_at,
                last_error=txn.last_error,
            )).inserted_primary_key[0]  # type: ignore[index]
            conn.execute(insert(_REF), [
                {"transaction_pk": pk, "position": position,
                 "sop_class_uid": item.sop_class_uid,
                 "sop_instance_uid": item.sop_instance_uid,
                 "failure_reason": item.failure_reason}
                for position, item in enumerate(txn.items)])

        try:
            self._write(work)
        except IntegrityError:
            return False  # the unique Transaction UID: already known
        return True

    async def record_results(self, transaction_uid: str, reasons: Sequence[int]) -> None:
        await asyncio.to_thread(self._results, transaction_uid, list(reasons))

    def _results(self, transaction_uid: str, reasons: list[int]) -> None:
        def work(conn: Connection) -> None:
            pk = conn.execute(select(_TXN.c.pk).where(
                _TXN.c.transaction_uid == transaction_uid)).scalar_one()
            conn.execute(
                update(_REF).where(_REF.c.transaction_pk == pk,
                                   _REF.c.position == bindparam("p"))
                .values(failure_reason=bindparam("r")),
                [{"p": position, "r": reason} for position, reason in enumerate(reasons)])

        self._write(work)

    async def record_attempt(self, transaction_uid: str, *, state: CommitmentState,
                             attempts: int, next_attempt_at: datetime | None,
                             error: str | None) -> None:
        values: dict[str, Any] = {
            "state": str(state), "attempts": attempts, "next_attempt_at": next_attempt_at,
            "last_error": None if error is None else error[:200],
        }
        if state is not CommitmentState.PENDING:
            values["finished_at"] = datetime.now(UTC)
        await asyncio.to_thread(self._update, transaction_uid, values)

    def _update(self, transaction_uid: str, values: dict[str, Any]) -> None:
        self._write(lambda conn: conn.execute(
            update(_TXN).where(_TXN.c.transaction_uid == transaction_uid).values(**values)))

    # --- reads ----------------------------------------------------------------------------

    async def transaction(self, transaction_uid: str) -> CommitmentTransaction | None:
        found = await asyncio.to_thread(self._load, _TXN.c.transaction_uid == transaction_uid)
        return found[0] if found else None

    async def pending(self) -> tuple[CommitmentTransaction, ...]:
        return tuple(await asyncio.to_thread(
            self._load, _TXN.c.state == str(CommitmentState.PENDING)))

    def _load(self, where: Any) -> list[CommitmentTransaction]:
        with self._engine.connect() as conn, conn.begin():
            rows = conn.execute(select(_TXN).where(where).order_by(_TXN.c.pk)).all()
            out: list[CommitmentTransaction] = []
            for row in rows:
                refs = conn.execute(
                    select(_REF.c.sop_class_uid, _REF.c.sop_instance_uid, _REF.c.failure_reason)
                    .where(_REF.c.transaction_pk == row.pk).order_by(_REF.c.position)).all()
                out.append(CommitmentTransaction(
                    transaction_uid=row.transaction_uid,
                    requestor_ae_title=row.requestor_ae_title,
                    called_ae_title=row.called_ae_title,
                    items=tuple(CommitmentItem(c, i, r) for c, i, r in refs),
                    received_at=_utc(row.received_at) or datetime.now(UTC),
                    state=CommitmentState(row.state),
                    attempts=row.attempts,
                    next_attempt_at=_utc(row.next_attempt_at),
                    last_error=row.last_error,
                ))
            return out

    async def locate(self, sop_instance_uids: Sequence[str]) -> Mapping[str, StoredCopy]:
        return await asyncio.to_thread(self._locate, list(dict.fromkeys(sop_instance_uids)))

    def _locate(self, uids: list[str]) -> dict[str, StoredCopy]:
        found: dict[str, StoredCopy] = {}
        stmt = (select(_INSTANCE.c.sop_instance_uid, _INSTANCE.c.sop_class_uid,
                       _INSTANCE.c.storage_key, _INSTANCE.c.file_size, _INSTANCE.c.checksum)
                .where(_INSTANCE.c.sop_instance_uid.in_(bindparam("uids", expanding=True))))
        with self._engine.connect() as conn, conn.begin():
            for chunk in chunked(uids):
                for uid, sop_class, key, size, checksum in conn.execute(stmt, {"uids": chunk}):
                    found[uid] = StoredCopy(sop_class, key, int(size), checksum)
        return found
