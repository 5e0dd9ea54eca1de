"""Storage Commitment transactions on a real database (`SqlCommitmentIndex`), both backends:
persistence, and the claims that let several processes share the deliveries (issue 15)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from minipacs.index.commitment import SqlCommitmentIndex
from minipacs.index.processes import ProcessRegistry, live_processes
from minipacs.ports import CommitmentItem, CommitmentState, CommitmentTransaction

CT = "1.2.840.10008.5.1.4.1.1.2"
LEASE = 60.0  # long: a test ages a registration by hand, never by waiting


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
    assert await index.record_attempt("1.2.1", state=CommitmentState.PENDING, attempts=1,
                                      retry_in=30, error="x" * 300)
    txn = await index.transaction("1.2.1")
    assert txn is not None and txn.checked
    assert [i.failure_reason for i in txn.items] == [0, 0x0112]
    assert txn.attempts == 1 and txn.last_error == "x" * 200
    assert txn.next_attempt_at is not None
    assert abs((txn.next_attempt_at - later).total_seconds()) < 5
    # The attempt released the claim: due again (at once, as after a restart), claimed
    # again, then done.
    assert (await index.claim(10)).transaction_uids == ()
    assert await index.make_due() == 1
    assert (await index.claim(10)).transaction_uids == ("1.2.1",)
    assert await index.record_attempt("1.2.1", state=CommitmentState.DELIVERED, attempts=2,
                                      retry_in=None, error=None)
    assert await index.pending() == ()
    assert await index.locate(["1.2.1.1"]) == {}  # no such instance in the index


# --- several processes ----------------------------------------------------------------------


async def process(engine: Engine, name: str) -> tuple[ProcessRegistry, SqlCommitmentIndex]:
    """A registered serving process's registry and commitment adapter (no heartbeat task)."""
    registry = ProcessRegistry(engine, lease=LEASE, token=f"test:{name}")
    await asyncio.to_thread(registry.register, "PACS", f"{name}:11112")
    return registry, SqlCommitmentIndex(engine, owner=registry.token, lease=LEASE)


def age(engine: Engine, registry: ProcessRegistry, seconds: float) -> None:
    """Make the process's last heartbeat `seconds` older (a process that stopped renewing)."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE server_process SET heartbeat_at = :t WHERE token = :token"),
                     {"t": datetime.now(UTC) - timedelta(seconds=seconds),
                      "token": registry.token})


async def test_a_transaction_is_attempted_by_its_claimant_only(engine: Engine) -> None:
    _, a = await process(engine, "a")
    _, b = await process(engine, "b")
    assert await a.add_transaction(_txn("1.2.1", 1))  # claimed by A as it is recorded
    assert await b.make_due() == 0  # A holds it
    assert (await b.claim(10)).transaction_uids == ()
    # B may not record an outcome for it; A's attempt releases it, due at once.
    assert not await b.record_attempt("1.2.1", state=CommitmentState.DELIVERED, attempts=1,
                                      retry_in=None, error=None)
    assert await a.record_attempt("1.2.1", state=CommitmentState.PENDING, attempts=1,
                                  retry_in=0, error="peer down")
    assert (await b.claim(10)).transaction_uids == ("1.2.1",)
    assert (await a.claim(10)).transaction_uids == ()
    assert not await a.record_attempt("1.2.1", state=CommitmentState.DELIVERED, attempts=2,
                                      retry_in=None, error=None)
    assert await b.record_attempt("1.2.1", state=CommitmentState.DELIVERED, attempts=2,
                                  retry_in=None, error=None)
    assert (await b.transaction("1.2.1")).state is CommitmentState.DELIVERED  # type: ignore[union-attr]


async def test_a_dead_process_claims_are_taken_over(engine: Engine) -> None:
    dead_registry, dead = await process(engine, "dead")
    _, survivor = await process(engine, "survivor")
    assert await dead.add_transaction(_txn("1.2.1", 1))
    claim = await survivor.claim(10)
    assert claim.transaction_uids == ()
    assert 0 < claim.rescan_in <= LEASE  # it looks again within a lease
    age(engine, dead_registry, LEASE + 1)  # no heartbeat for longer than the lease
    assert [p.token for p in live_processes(engine, LEASE)] == ["test:survivor"]
    assert (await survivor.claim(10)).transaction_uids == ("1.2.1",)
    # The "dead" process wakes up: its outcome is refused, the survivor's stands.
    assert not await dead.record_attempt("1.2.1", state=CommitmentState.FAILED, attempts=1,
                                         retry_in=None, error="late")


async def test_stopping_releases_the_claims(engine: Engine) -> None:
    registry, stopping = await process(engine, "stopping")
    _, other = await process(engine, "other")
    assert await stopping.add_transaction(_txn("1.2.1", 1))
    await asyncio.to_thread(registry.unregister)
    assert (await other.claim(10)).transaction_uids == ("1.2.1",)


async def test_transactions_not_due_wait_unless_taken_up_at_start(engine: Engine) -> None:
    _, a = await process(engine, "a")
    await a.add_transaction(_txn("1.2.1", 1))
    assert await a.record_attempt("1.2.1", state=CommitmentState.PENDING, attempts=1,
                                  retry_in=20, error="peer down")
    claim = await a.claim(10)
    assert claim.transaction_uids == ()
    assert 10 < claim.rescan_in <= 20  # when it is due
    _, starting = await process(engine, "starting")
    assert await starting.make_due() == 1
    assert (await starting.claim(10)).transaction_uids == ("1.2.1",)
    assert (await a.claim(10)).transaction_uids == ()  # taken


async def test_concurrent_claims_share_the_work_without_overlap(engine: Engine) -> None:
    _, first = await process(engine, "first")
    uids = [f"1.2.{n}" for n in range(1, 31)]
    for uid in uids:
        await first.add_transaction(_txn(uid, 1))
        assert await first.record_attempt(uid, state=CommitmentState.PENDING, attempts=1,
                                          retry_in=0, error="peer down")
    claimants = [(await process(engine, f"p{n}"))[1] for n in range(4)]
    claims = await asyncio.gather(*(c.claim(8) for c in claimants))
    taken = [uid for claim in claims for uid in claim.transaction_uids]
    assert len(taken) == len(set(taken)) == 30  # each once, all of them (4 x 8 >= 30)
    assert sorted(taken) == sorted(uids)


async def test_registrations_renew_and_come_back(engine: Engine) -> None:
    registry, _ = await process(engine, "a")
    assert await asyncio.to_thread(registry.renew)
    with engine.begin() as conn:  # taken for dead and forgotten by another process
        conn.execute(text("DELETE FROM server_process"))
    assert not await asyncio.to_thread(registry.renew)  # re-registered
    (info,) = live_processes(engine, LEASE)
    assert info.token == registry.token and info.address == "a:11112"
    await asyncio.to_thread(registry.unregister)
    assert live_processes(engine, LEASE) == []
