"""Storage Commitment transactions on a real, migrated SQLite file (`SqlCommitmentIndex`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from minipacs.index.commitment import SqlCommitmentIndex
from minipacs.ports import CommitmentItem, CommitmentState, CommitmentTransaction

CT = "1.2.840.10008.5.1.4.1.1.2"


def _txn(uid: str, count: int) -> CommitmentTransaction:
    items = tuple(CommitmentItem(CT, f"{uid}.{n}") for n in range(1, count + 1))
    return CommitmentTransaction(uid, "MODALITY", "PACS", items,
                                 datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


async def test_transactions_persist_with_their_items_in_order(engine: Engine) -> None:
    index = SqlCommitmentIndex(engine)
    assert await index.add_transaction(_txn("1.2.1", 3))
    assert await index.add_transaction(_txn("1.2.2", 1))
    assert not await index.add_transaction(_txn("1.2.1", 1))  # the UID is taken
    loaded = await index.transaction("1.2.1")
    assert loaded == _txn("1.2.1", 3)  # timezone-aware again, items in request order
    assert not loaded.checked
    assert [t.transaction_uid for t in await index.pending()] == ["1.2.1", "1.2.2"]
    assert await index.transaction("1.2.404") is None


async def test_results_and_attempts_are_recorded(engine: Engine) -> None:
    index = SqlCommitmentIndex(engine)
    await index.add_transaction(_txn("1.2.1", 2))
    await index.record_results("1.2.1", [0, 0x0112])
    later = datetime.now(UTC) + timedelta(seconds=30)
    await index.record_attempt("1.2.1", state=CommitmentState.PENDING, attempts=1,
                               next_attempt_at=later, error="x" * 300)
    txn = await index.transaction("1.2.1")
    assert txn is not None and txn.checked
    assert [i.failure_reason for i in txn.items] == [0, 0x0112]
    assert txn.attempts == 1 and txn.last_error == "x" * 200
    assert txn.next_attempt_at is not None
    assert abs((txn.next_attempt_at - later).total_seconds()) < 1
    await index.record_attempt("1.2.1", state=CommitmentState.DELIVERED, attempts=2,
                               next_attempt_at=None, error=None)
    assert await index.pending() == ()
    assert await index.locate(["1.2.1.1"]) == {}  # no such instance in the index
