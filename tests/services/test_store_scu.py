"""C-STORE SCU logic with in-memory fakes: context planning, sending, outcomes, losses."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

import pytest

from minipacs.ports import AssociationClosed, AssociationInfo, PeerUnreachable, Reply
from minipacs.proto.dimse import CStoreRQ, CStoreRSP, DimseMessage
from minipacs.proto.negotiation import AcceptedContext, Negotiated
from minipacs.proto.sop import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    STORAGE_SOP_CLASSES,
)
from minipacs.proto.status import Status, StatusCategory
from minipacs.services.store_scu import (
    MAX_FRUITLESS_LOSSES,
    ContextKey,
    StoreProgress,
    StoreTally,
    plan_associations,
    send_all,
)
from minipacs.services.store_sender import ChunkReader, store_instance

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
IMPLICIT = IMPLICIT_VR_LITTLE_ENDIAN
EXPLICIT = EXPLICIT_VR_LITTLE_ENDIAN


@dataclass(frozen=True, slots=True)
class Item:
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    data: bytes = b"\x08\x00\x16\x00" * 4

    @property
    def dataset_size(self) -> int:
        return len(self.data)

    @property
    def source(self) -> str:
        return f"/data/{self.sop_instance_uid}.dcm"


def items(n: int, sop_class: str = CT, ts: str = IMPLICIT, start: int = 0) -> list[Item]:
    return [Item(sop_class, f"1.2.3.{start + i}", ts, bytes([i % 256]) * (10 + i))
            for i in range(n)]


def open_item(item: Item) -> BinaryIO:
    return io.BytesIO(item.data)


# --- planning -------------------------------------------------------------------------------


def test_one_pair_is_one_association_in_file_order() -> None:
    files = items(5)
    (plan,) = plan_associations(files)
    assert plan.contexts == ((CT, IMPLICIT),)
    assert plan.items == tuple(files)


def test_contexts_are_grouped_in_first_seen_order() -> None:
    a, b, c, d = Item(CT, "1", IMPLICIT), Item(MR, "2", EXPLICIT), Item(CT, "3", EXPLICIT), \
        Item(CT, "4", IMPLICIT)
    (plan,) = plan_associations([a, b, c, d])
    assert plan.contexts == ((CT, IMPLICIT), (MR, EXPLICIT), (CT, EXPLICIT))
    assert plan.items == (a, b, c, d)


def test_more_than_128_pairs_are_split_over_associations() -> None:
    classes = sorted(STORAGE_SOP_CLASSES)[:150]
    files = [Item(sop, f"1.2.{i}.{j}", ts, b"x")
             for j in range(2)  # two files per pair, interleaved
             for i, sop in enumerate(classes) for ts in (IMPLICIT, EXPLICIT)]
    plans = plan_associations(files)
    assert [len(p.contexts) for p in plans] == [128, 128, 44]
    assert sum(len(p.items) for p in plans) == len(files) == 600
    seen: set[ContextKey] = set()
    for plan in plans:
        keys = set(plan.contexts)
        assert len(keys) == len(plan.contexts)  # each pair proposed once
        assert not keys & seen  # ... and in one association only
        seen |= keys
        assert {(i.sop_class_uid, i.transfer_syntax_uid) for i in plan.items} == keys
        assert list(plan.items) == [i for i in files if i in set(plan.items)]  # order kept
    assert plans[0].contexts[:2] == ((classes[0], IMPLICIT), (classes[0], EXPLICIT))


def test_exactly_128_pairs_fit_in_one_association() -> None:
    files = [Item(sop, str(i), IMPLICIT) for i, sop in enumerate(sorted(STORAGE_SOP_CLASSES)[:128])]
    assert len(plan_associations(files)) == 1
    assert [len(p.contexts) for p in plan_associations([*files, Item(CT, "x", EXPLICIT)])] == [
        128, 1]


def test_smaller_context_limit_and_bad_limits() -> None:
    files = [Item(CT, "1", IMPLICIT), Item(MR, "2", IMPLICIT), Item(CT, "3", EXPLICIT)]
    plans = plan_associations(files, max_contexts=2)
    assert [p.contexts for p in plans] == [((CT, IMPLICIT), (MR, IMPLICIT)), ((CT, EXPLICIT),)]
    assert plan_associations([]) == []
    for bad in (0, 129):
        with pytest.raises(ValueError):
            plan_associations(files, max_contexts=bad)


# --- fakes ----------------------------------------------------------------------------------

Responder = Callable[[CStoreRQ, bytes], Status | int]


class FakeChannel:
    """An established association that answers C-STOREs through `respond`."""

    def __init__(self, contexts: Sequence[ContextKey], accept: Callable[[ContextKey], bool],
                 peer: FakePeer) -> None:
        accepted = {2 * i + 1: AcceptedContext(2 * i + 1, sop, ts)
                    for i, (sop, ts) in enumerate(contexts) if accept((sop, ts))}
        self.info = AssociationInfo("SCU", "SCP", "127.0.0.1", 104,
                                    Negotiated(MappingProxyType(accepted), 0))
        self.peer = peer
        self._ids = 0

    def next_message_id(self) -> int:
        self._ids += 1
        return self._ids

    async def request(self, context_id: int, message: DimseMessage,
                      dataset: bytes | AsyncIterable[bytes] | None = None
                      ) -> AsyncIterator[Reply]:
        assert isinstance(message, CStoreRQ) and isinstance(dataset, AsyncIterable)
        ctx = self.info.negotiated.contexts[context_id]
        assert ctx.abstract_syntax == message.affected_sop_class_uid
        data = b"".join([chunk async for chunk in dataset])
        status = await self.peer.respond(message, data)
        self.peer.received.append((message.affected_sop_instance_uid, ctx.transfer_syntax, data))
        yield Reply(CStoreRSP(message_id_being_responded_to=message.message_id, status=status,
                              error_comment="disk full" if status == Status.OUT_OF_RESOURCES
                              else None))


@dataclass
class FakePeer:
    """Opens FakeChannels; records proposals, releases and aborts."""

    accept: Callable[[ContextKey], bool] = lambda key: True
    statuses: dict[str, int] = field(default_factory=dict)  # instance UID → status
    lose: set[str] = field(default_factory=set)  # instance UIDs that kill the association
    unavailable: bool = False
    hang: bool = False
    proposals: list[list[ContextKey]] = field(default_factory=list)
    received: list[tuple[str, str, bytes]] = field(default_factory=list)
    released: int = 0
    aborted: int = 0

    async def respond(self, message: CStoreRQ, data: bytes) -> int:
        if self.hang:
            await asyncio.Event().wait()
        if message.affected_sop_instance_uid in self.lose:
            raise AssociationClosed("peer: A-ABORT (source 0, reason 0)")
        return self.statuses.get(message.affected_sop_instance_uid, Status.SUCCESS)

    @contextlib.asynccontextmanager
    async def connect(self, contexts: Sequence[ContextKey]) -> AsyncIterator[FakeChannel]:
        self.proposals.append(list(contexts))
        if self.unavailable:
            raise PeerUnreachable("cannot connect to 127.0.0.1:1: Connection refused")
        try:
            yield FakeChannel(contexts, self.accept, self)
        except BaseException:
            self.aborted += 1
            raise
        self.released += 1


async def run(files: Sequence[Item], peer: FakePeer, timeout: float = 5.0,
              progress: list[StoreProgress] | None = None) -> StoreTally:
    tally = StoreTally(len(files), skipped=2,
                       progress=progress.append if progress is not None else None)
    await send_all(plan_associations(files), peer.connect, open_item, tally, timeout=timeout)
    return tally


# --- sending --------------------------------------------------------------------------------


async def test_all_stored_on_one_association_bytes_unchanged() -> None:
    files = items(3) + items(2, MR, EXPLICIT, start=10)
    peer = FakePeer()
    progress: list[StoreProgress] = []
    tally = await run(files, peer, progress=progress)
    summary = tally.summary()
    assert (summary.stored, summary.warnings, summary.failed, summary.skipped) == (5, 0, 0, 2)
    assert summary.ok and summary.associations == 1 and summary.problems == ()
    assert summary.bytes_sent == sum(f.dataset_size for f in files)
    assert peer.proposals == [[(CT, IMPLICIT), (MR, EXPLICIT)]]
    assert (peer.released, peer.aborted) == (1, 0)
    assert peer.received == [(f.sop_instance_uid, f.transfer_syntax_uid, f.data) for f in files]
    assert [p.done for p in progress] == [1, 2, 3, 4, 5]
    assert all(p.total == 5 and p.skipped == 2 for p in progress)
    assert progress[-1].outcome is not None and progress[-1].outcome.source == files[-1].source


async def test_rejected_context_fails_its_files_only() -> None:
    files = items(2, CT, EXPLICIT) + items(3, CT, IMPLICIT, start=5)
    peer = FakePeer(accept=lambda key: key[1] == IMPLICIT)
    summary = (await run(files, peer)).summary()
    assert (summary.stored, summary.failed) == (3, 2)
    assert not summary.ok
    reasons = {p.source: p.reason for p in summary.problems}
    assert reasons == {f.source: "peer rejected CT Image Storage in Explicit VR Little Endian"
                       for f in files[:2]}
    assert all(p.status is None and p.category is StatusCategory.FAILURE
               for p in summary.problems)
    assert [uid for uid, _, _ in peer.received] == [f.sop_instance_uid for f in files[2:]]
    assert peer.released == 1


async def test_nothing_accepted_fails_every_file_and_releases() -> None:
    peer = FakePeer(accept=lambda key: False)
    summary = (await run(items(4), peer)).summary()
    assert (summary.stored, summary.failed, summary.unsent) == (0, 4, 0)
    assert summary.error is None and peer.released == 1 and peer.received == []


async def test_warning_and_failure_statuses() -> None:
    files = items(4)
    peer = FakePeer(statuses={"1.2.3.1": Status.COERCION_OF_DATA_ELEMENTS,
                              "1.2.3.2": Status.OUT_OF_RESOURCES,
                              "1.2.3.3": 0xC123})
    summary = (await run(files, peer)).summary()
    assert (summary.stored, summary.warnings, summary.failed) == (2, 1, 2)
    assert [(p.label, p.status, p.reason) for p in summary.problems] == [
        ("warning", 0xB000, "0xB000 Coercion of data elements"),
        ("failed", 0xA700, "0xA700 Out of resources (disk full)"),
        ("failed", 0xC123, "0xC123 Cannot understand"),
    ]
    # Data went out for every answered file, failed or not.
    assert summary.bytes_sent == sum(f.dataset_size for f in files)


async def test_lost_association_fails_one_file_and_goes_on_with_a_new_one() -> None:
    files = items(5)
    peer = FakePeer(lose={"1.2.3.2"})
    summary = (await run(files, peer)).summary()
    assert (summary.stored, summary.failed, summary.associations) == (4, 1, 2)
    (problem,) = summary.problems
    assert problem.source == files[2].source
    assert problem.reason.startswith("association lost: peer: A-ABORT")
    assert (peer.aborted, peer.released) == (1, 1)
    assert len(peer.proposals) == 2 and peer.proposals[0] == peer.proposals[1]


async def test_run_stops_after_fruitless_losses() -> None:
    files = items(6)
    peer = FakePeer(lose={f.sop_instance_uid for f in files})
    summary = (await run(files, peer)).summary()
    assert summary.associations == MAX_FRUITLESS_LOSSES == 3
    assert summary.failed == 6 and summary.unsent == 3 and summary.attempted == 3
    assert summary.error is not None and "3 associations in a row" in summary.error
    assert peer.aborted == 3


async def test_unavailable_peer_fails_everything_unsent() -> None:
    peer = FakePeer(unavailable=True)
    files = [Item(sop, str(i), IMPLICIT) for i, sop in enumerate(sorted(STORAGE_SOP_CLASSES))]
    files += items(3)
    progress: list[StoreProgress] = []
    summary = (await run(files, peer, progress=progress)).summary()
    assert len(peer.proposals) == 1  # the run stops at the first refusal: no retry per plan
    assert summary.failed == summary.unsent == len(files)
    assert summary.attempted == 0 and summary.associations == 0
    assert summary.error == "cannot connect to 127.0.0.1:1: Connection refused"
    assert summary.problems == ()  # no per-file line for files never sent
    assert len(progress) == 1 and progress[0].outcome is None and progress[0].failed == len(files)


async def test_unreadable_file_fails_alone() -> None:
    files = items(3)

    def opener(item: Item) -> BinaryIO:
        if item is files[1]:
            raise FileNotFoundError(2, "No such file or directory")
        return open_item(item)

    peer = FakePeer()
    tally = StoreTally(3)
    await send_all(plan_associations(files), peer.connect, opener, tally, timeout=5)
    summary = tally.summary()
    assert (summary.stored, summary.failed, summary.associations) == (2, 1, 1)
    assert summary.problems[0].reason == "cannot read: No such file or directory"
    assert peer.aborted == 0


async def test_hung_peer_times_out_and_aborts() -> None:
    peer = FakePeer(hang=True)
    summary = (await run(items(1), peer, timeout=0.05)).summary()
    assert summary.failed == 1 and peer.aborted == 1
    assert summary.problems[0].reason == "no progress for 0.05 s: association aborted"


# --- chunks and the progress timeout --------------------------------------------------------


async def test_chunk_reader_reads_whole_file_in_pieces(tmp_path: Path) -> None:
    for size in (0, 5, 16, 17, 64):
        data = bytes(range(256))[:size]
        path = tmp_path / f"f{size}"
        path.write_bytes(b"HEADER" + data)

        def opener(path: Path = path) -> BinaryIO:
            fp = open(path, "rb")  # noqa: SIM115
            fp.seek(6)
            return fp

        reader = await ChunkReader.open(opener, chunk_size=16)
        chunks = [chunk async for chunk in reader]
        assert b"".join(chunks) == data
        assert all(len(c) == 16 for c in chunks[:-1]) and len(chunks[-1]) <= 16
        reader.close()


async def test_timeout_counts_silence_not_total_time() -> None:
    """A slow but steady transfer outlives `timeout`; only a stall ends it."""

    class SlowChannel(FakeChannel):
        async def request(self, context_id: int, message: DimseMessage,
                          dataset: bytes | AsyncIterable[bytes] | None = None
                          ) -> AsyncIterator[Reply]:
            assert isinstance(dataset, AsyncIterable)
            async for _ in dataset:
                await asyncio.sleep(0.03)  # each chunk "drains" in 30 ms
            yield Reply(CStoreRSP(message_id_being_responded_to=1))

    item = Item(CT, "1.2.3", IMPLICIT, bytes(100))
    channel = SlowChannel([(CT, IMPLICIT)], lambda key: True, FakePeer())
    reader = await ChunkReader.open(lambda: open_item(item), chunk_size=10)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, comment = await store_instance(channel, 1, item, reader, timeout=0.1)
    assert (status, comment) == (Status.SUCCESS, None)
    assert loop.time() - started > 0.25  # ten chunks: well past the 0.1 s timeout
