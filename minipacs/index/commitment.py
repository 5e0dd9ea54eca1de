"""Storage Commitment transactions on the SQL index (`ports.CommitmentIndex`, PS3.4 Annex J).

Writes are rare (one per N-ACTION, one per check, one per delivery attempt), so each runs
as its own short write transaction in a worker thread, beside the instance writer, through
the one write transaction helper (``engine.write_transaction``); reads use their own short
transactions (DESIGN 11).

Several processes share the transactions (issue 15). A process delivers a report only while
it holds the transaction's claim (``claimed_by``: its registration token, index/processes.py):
the N-ACTION's process claims it as it records it, and releases it with the outcome of each
attempt; between attempts any process may claim it once it is due. Claiming is one
``SELECT ... FOR UPDATE SKIP LOCKED`` and an UPDATE on PostgreSQL (concurrent claimers skip
each other's rows), and SQLite's writers take turns. A claim whose process has stopped
renewing its registration for a lease is free again: the survivors take its work over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..ports import (
    DEFAULT_PROCESS_LEASE,
    CommitmentClaim,
    CommitmentItem,
    CommitmentState,
    CommitmentTransaction,
    StoredCopy,
)
from .engine import DEFAULT_RETRY, RetryPolicy, database_now, write_transaction
from .matching import chunked
from .models import Instance
from .models_commitment import CommitmentReference
from .models_commitment import CommitmentTransaction as TransactionRow
from .processes import live_tokens, process_token

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
    """`ports.CommitmentIndex` over an SQLAlchemy engine; each call in a worker thread.

    `owner` is this process's registration token (`ProcessRegistry.token`), `lease` the
    seconds after which an unrenewed registration counts as dead (module docstring).
    """

    def __init__(self, engine: Engine, *, retry: RetryPolicy = DEFAULT_RETRY,
                 owner: str | None = None, lease: float = DEFAULT_PROCESS_LEASE) -> None:
        self._engine = engine
        self._retry = retry
        self.owner = owner or process_token()
        self.lease = lease

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
                last_error=txn.last_error, claimed_by=self.owner,
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
                             attempts: int, retry_in: float | None,
                             error: str | None) -> bool:
        return await asyncio.to_thread(self._attempted, transaction_uid, state, attempts,
                                       retry_in, error)

    def _attempted(self, transaction_uid: str, state: CommitmentState, attempts: int,
                   retry_in: float | None, error: str | None) -> bool:
        def work(conn: Connection) -> bool:
            now = database_now(conn)
            values: dict[str, Any] = {
                "state": str(state), "attempts": attempts, "claimed_by": None,
                "next_attempt_at": None if retry_in is None else now + timedelta(
                    seconds=retry_in),
                "last_error": None if error is None else error[:200],
            }
            if state is not CommitmentState.PENDING:
                values["finished_at"] = now
            return conn.execute(update(_TXN).where(
                _TXN.c.transaction_uid == transaction_uid, _TXN.c.claimed_by == self.owner
            ).values(**values)).rowcount == 1

        return self._write(work)

    def _others_free(self, now: datetime) -> ColumnElement[bool]:
        """Pending work no live process holds: unclaimed, or its claimant is dead."""
        return or_(_TXN.c.claimed_by.is_(None), and_(
            _TXN.c.claimed_by != self.owner,
            _TXN.c.claimed_by.not_in(live_tokens(now, self.lease))))

    async def claim(self, limit: int) -> CommitmentClaim:
        return await asyncio.to_thread(self._claim, limit)

    def _claim(self, limit: int) -> CommitmentClaim:
        def work(conn: Connection) -> CommitmentClaim:
            now = database_now(conn)
            free = [_TXN.c.state == str(CommitmentState.PENDING), self._others_free(now)]
            due = or_(_TXN.c.next_attempt_at.is_(None), _TXN.c.next_attempt_at <= now)
            rows = conn.execute(
                select(_TXN.c.pk, _TXN.c.transaction_uid).where(*free, due)
                .order_by(_TXN.c.next_attempt_at.nulls_first(), _TXN.c.pk).limit(limit)
                .with_for_update(skip_locked=True)).all()
            if rows:
                conn.execute(update(_TXN).where(_TXN.c.pk.in_([r.pk for r in rows]))
                             .values(claimed_by=self.owner))
            # The next one due among the rest, but look again within a lease anyway: a
            # process that dies leaves its claims to be taken over then.
            later = conn.execute(select(func.min(_TXN.c.next_attempt_at)).where(
                *free)).scalar()
            rescan = self.lease if later is None else min(
                self.lease, max(0.0, ((_utc(later) or now) - now).total_seconds()))
            return CommitmentClaim(tuple(r.transaction_uid for r in rows), rescan)

        return self._write(work)

    async def make_due(self) -> int:
        return await asyncio.to_thread(self._make_due)

    def _make_due(self) -> int:
        def work(conn: Connection) -> int:
            now = database_now(conn)
            return int(conn.execute(update(_TXN).where(
                _TXN.c.state == str(CommitmentState.PENDING), self._others_free(now)
            ).values(next_attempt_at=now)).rowcount)

        return self._write(work)

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
