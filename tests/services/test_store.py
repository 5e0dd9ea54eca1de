"""StoreService (PS3.4 Annex B C-STORE SCP) against in-memory fake ports.

The fakes keep everything in dictionaries so each test can say exactly what is left behind:
stored files, open spools, index rows. Data sets are real (pydicom-encoded) so the fake
index parses them the way the real one would, only without SQL.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final, TypeVar

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from minipacs.ports import (
    AddOutcome,
    AddResult,
    AssociationClosed,
    AssociationInfo,
    AssociationUsage,
    DataSetError,
    DuplicatePolicy,
    FileMeta,
    IndexWriteError,
    InstanceAttributes,
    InstanceRecord,
    OutOfResources,
    PatientConflict,
    Request,
    StorageError,
    StoredFile,
)
from minipacs.proto.dimse import CStoreRQ, CStoreRSP
from minipacs.proto.negotiation import AcceptedContext, Negotiated
from minipacs.proto.status import Status
from minipacs.services.store import SPOOL_BUFFER, StoreService

UID_ROOT: Final = "1.2.826.0.1.3680043.8.498.4242.60"
HEADER: Final = b"PART10-HEADER:"  # what the fake spool writes before the data set
CALLING: Final = "MODALITY"
CALLED: Final = "MINIPACS"
CONTEXT_ID: Final = 1
PDV: Final = 16 * 1024  # fragment size the fake stream hands out
TAG_PIXEL_DATA: Final = 0x7FE00010
T = TypeVar("T")


# --- data -------------------------------------------------------------------------------------


def make_dataset(n: int = 1, *, sop_class: str = CTImageStorage, pixels: int = 0,
                 name: str = "Fake^Patient") -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{UID_ROOT}.3.{n}"
    ds.StudyInstanceUID = f"{UID_ROOT}.1"
    ds.SeriesInstanceUID = f"{UID_ROOT}.2"
    ds.PatientID = "P1"
    ds.PatientName = name
    ds.Modality = "CT"
    if pixels:
        ds.add_new(TAG_PIXEL_DATA, "OB", bytes(range(256)) * (pixels // 256))
    return ds


def encode(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


# --- fake ports -------------------------------------------------------------------------------


class FakeSpool:
    """`ports.Spool` in memory; failures are injected through its storage."""

    def __init__(self, storage: FakeStorage, name: str) -> None:
        self.storage = storage
        self.name = name
        self.data = bytearray(HEADER)
        self.writes: list[int] = []
        self.done = False

    @property
    def size(self) -> int:
        return len(self.data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.done, "write after commit/discard"
        if self.storage.fail_write_after is not None and \
                self.size - len(HEADER) + len(data) > self.storage.fail_write_after:
            self.discard()  # the port's contract: the spool is removed before raising
            raise self.storage.fail_write
        self.writes.append(len(data))
        self.data += data

    def commit(self) -> StoredFile:
        assert not self.done, "commit after commit/discard"
        if self.storage.fail_commit is not None:
            self.discard()
            raise self.storage.fail_commit
        self.done = True
        del self.storage.spools[self.name]
        key = f"{len(self.storage.committed):02x}/00/{self.name}.dcm"
        self.storage.files[key] = bytes(self.data)
        self.storage.committed.append(key)
        return StoredFile(key, len(self.data), f"fake:{len(self.data)}", len(HEADER))

    def discard(self) -> None:
        self.done = True
        self.storage.spools.pop(self.name, None)


@dataclass
class FakeStorage:
    """`ports.Storage` in memory: files by key, spools by name."""

    free: bool = True
    fail_write_after: int | None = None  # data-set bytes accepted before a write fails
    fail_write: StorageError = field(
        default_factory=lambda: OutOfResources("cannot write spool file: File too large"))
    fail_commit: StorageError | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    spools: dict[str, FakeSpool] = field(default_factory=dict)
    metas: list[FileMeta] = field(default_factory=list)
    opened_spools: list[FakeSpool] = field(default_factory=list)
    committed: list[str] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    stores: int = 0  # whole data sets stored in one call
    open_gate: threading.Event | None = None  # open_spool waits for it when set
    opening: threading.Event = field(default_factory=threading.Event)

    def check_free_space(self) -> None:
        if not self.free:
            raise OutOfResources("1 bytes free, below the 512 MiB watermark")

    def open_spool(self, meta: FileMeta) -> FakeSpool:
        if self.open_gate is not None:  # a slow disk: the thread waits, the test goes on
            self.opening.set()
            assert self.open_gate.wait(5)
        name = f"spool{len(self.metas):028d}"
        self.metas.append(meta)
        spool = self.spools[name] = FakeSpool(self, name)
        self.opened_spools.append(spool)
        return spool

    def store(self, meta: FileMeta, data: bytes) -> StoredFile:
        self.check_free_space()
        self.stores += 1
        spool = self.open_spool(meta)
        spool.write(data)
        return spool.commit()

    def open_dataset(self, key: str, dataset_offset: int | None = None) -> BinaryIO:
        self.opened.append(key)
        return io.BytesIO(self.files[key][dataset_offset or len(HEADER):])

    def checksum(self, key: str) -> str:
        return f"fake:{len(self.files[key])}"

    def delete(self, key: str) -> None:
        self.deleted.append(key)
        self.files.pop(key, None)

    def release(self, key: str) -> None:
        self.released.append(key)


@dataclass
class FakeParser:
    """`ports.AttributeParser` reading only the identity, as the real one would find it."""

    parsed: int = 0

    def parse(self, data: bytes | BinaryIO, transfer_syntax_uid: str) -> InstanceAttributes:
        ts = UID(transfer_syntax_uid)
        raw = data if isinstance(data, bytes) else data.read()
        self.parsed += 1
        try:
            ds = read_dataset(io.BytesIO(raw), ts.is_implicit_VR, ts.is_little_endian)
            identity = (str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                        str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
        except Exception as exc:
            raise DataSetError(f"cannot parse data set: {type(exc).__name__}") from exc
        return InstanceAttributes(*identity, patient_id=str(ds.get("PatientID", "")),
                                  issuer_of_patient_id="", patient={}, study={}, series={},
                                  instance={})


@dataclass
class FakeIndex:
    """`ports.Index` in memory, with the duplicate policy and injectable failures."""

    policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST
    fail: Exception | None = None
    gate: asyncio.Event | None = None  # add_instance waits for it when set
    rows: dict[str, InstanceRecord] = field(default_factory=dict)
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def add_instance(self, record: InstanceRecord) -> AddResult:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        uid = record.attributes.sop_instance_uid
        old = self.rows.get(uid)
        if old is not None and self.policy is DuplicatePolicy.KEEP_FIRST:
            return AddResult(AddOutcome.KEPT_FIRST)
        self.rows[uid] = record
        if old is not None:
            return AddResult(AddOutcome.REPLACED, old.stored.key)
        return AddResult(AddOutcome.ADDED)


class FakeStream:
    """`ports.DataStream`: fragments of `data`; optionally dies after `fail_after` bytes."""

    def __init__(self, data: bytes, *, fail_after: int | None = None,
                 hold: asyncio.Event | None = None) -> None:
        self.data = data
        self.fail_after = fail_after
        self.hold = hold  # the last fragment waits for it
        self.holding = asyncio.Event()  # set while the last fragment waits
        self.delivered = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.delivered < len(self.data):
            if self.fail_after is not None and self.delivered >= self.fail_after:
                raise AssociationClosed("peer: A-ABORT")
            chunk = self.data[self.delivered:self.delivered + PDV]
            if self.hold is not None and self.delivered + len(chunk) >= len(self.data):
                self.holding.set()
                await self.hold.wait()
            self.delivered += len(chunk)
            yield chunk

    async def read_all(self, limit: int) -> bytes:
        return b"".join([chunk async for chunk in self])

    async def drain(self) -> None:
        async for _ in self:
            pass


class FakeChannel:
    """The part of `ports.Channel` the store handler uses: the association's info."""

    def __init__(self) -> None:
        context = AcceptedContext(CONTEXT_ID, CTImageStorage, ExplicitVRLittleEndian)
        self._info = AssociationInfo(CALLING, CALLED, "192.0.2.1", 40000,
                                     Negotiated({CONTEXT_ID: context}, 16384))
        self.usage = AssociationUsage()

    @property
    def info(self) -> AssociationInfo:
        return self._info


def store_request(data: bytes, *, instance_uid: str | None = None,
                  sop_class: str = CTImageStorage, stream: FakeStream | None = None) -> Request:
    message = CStoreRQ(message_id=7, affected_sop_class_uid=sop_class,
                       affected_sop_instance_uid=instance_uid or f"{UID_ROOT}.3.1")
    context = AcceptedContext(CONTEXT_ID, sop_class, ExplicitVRLittleEndian)
    return Request(context, message, stream or FakeStream(data))


class ThreadHops:
    """The service's injected `to_thread`: runs each call in a thread and names it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, func: Callable[..., T], /, *args: Any) -> Awaitable[T]:
        self.calls.append(getattr(func, "__name__", repr(func)))
        return asyncio.to_thread(func, *args)


@dataclass
class Harness:
    storage: FakeStorage
    index: FakeIndex
    service: StoreService
    channel: FakeChannel
    hops: ThreadHops

    async def store(self, request: Request) -> CStoreRSP:
        outcome = await self.service(self.channel, request)
        assert isinstance(outcome.message, CStoreRSP)
        assert outcome.dataset is None
        return outcome.message

    def assert_nothing_left(self) -> None:
        assert self.storage.files == {}, "a file was left behind"
        assert self.storage.spools == {}, "a spool was left behind"
        assert self.index.rows == {}, "a row was left behind"


@pytest.fixture
def harness() -> Harness:
    storage, index, hops = FakeStorage(), FakeIndex(), ThreadHops()
    service = StoreService(storage, index, FakeParser(), to_thread=hops)
    return Harness(storage, index, service, FakeChannel(), hops)


# --- success ----------------------------------------------------------------------------------


async def test_success_stores_file_then_row_then_answers(harness: Harness) -> None:
    data = encode(make_dataset())
    rsp = await harness.store(store_request(data))
    assert rsp.status == Status.SUCCESS
    assert rsp.message_id_being_responded_to == 7
    assert rsp.affected_sop_class_uid == CTImageStorage
    assert rsp.affected_sop_instance_uid == f"{UID_ROOT}.3.1"
    # PS3.10 §7.1 meta from the command, the context and the association.
    assert harness.storage.metas == [FileMeta(CTImageStorage, f"{UID_ROOT}.3.1",
                                              ExplicitVRLittleEndian, CALLING, CALLED)]
    (key,) = harness.storage.files
    assert harness.storage.files[key] == HEADER + data  # bytes kept bit for bit
    record = harness.index.rows[f"{UID_ROOT}.3.1"]
    assert record.stored.key == key
    assert record.transfer_syntax_uid == ExplicitVRLittleEndian
    assert (record.calling_ae_title, record.called_ae_title) == (CALLING, CALLED)
    assert record.received_at.tzinfo is not None
    assert harness.storage.spools == {}
    assert harness.storage.released == [key]  # after the row: the intent record may go
    # A small data set is parsed from memory, never read back from the file.
    assert harness.storage.opened == []
    # The association's count by study, for its audit line (issue 12).
    assert harness.channel.usage.studies == {record.attributes.study_instance_uid: 1}


async def test_large_data_set_is_written_in_big_pieces_and_parsed_from_the_file(
        harness: Harness) -> None:
    data = encode(make_dataset(pixels=SPOOL_BUFFER * 5 // 2))
    rsp = await harness.store(store_request(data))
    assert rsp.status == Status.SUCCESS
    (key,) = harness.storage.files
    assert harness.storage.files[key] == HEADER + data
    # DESIGN §14: one thread hop per ~1 MiB piece, not one per 16 KiB PDV.
    (spool,) = harness.storage.opened_spools
    assert sum(spool.writes) == len(data)
    assert len(spool.writes) == 3
    assert all(size >= SPOOL_BUFFER for size in spool.writes[:-1])
    assert harness.storage.opened == [key]  # too big to keep: parsed from the stored file


async def test_small_data_set_costs_one_thread_hop(harness: Harness) -> None:
    # DESIGN §14: parse, free-space check, spool, write and commit in one hop.
    data = encode(make_dataset())
    assert (await harness.store(store_request(data))).status == Status.SUCCESS
    assert harness.hops.calls == ["parse_and_store"]
    assert harness.storage.stores == 1
    (spool,) = harness.storage.opened_spools
    assert spool.writes == [len(data)]


async def test_large_data_set_below_watermark_is_a700_and_leaves_nothing(
        harness: Harness) -> None:
    harness.storage.free = False
    data = encode(make_dataset(pixels=3 * SPOOL_BUFFER))
    stream = FakeStream(data)
    rsp = await harness.store(store_request(data, stream=stream))
    assert rsp.status == Status.OUT_OF_RESOURCES
    assert rsp.error_comment and "watermark" in rsp.error_comment
    assert stream.delivered < len(data)  # refused at the first piece; the rest is drained
    assert harness.storage.metas == []
    harness.assert_nothing_left()


# --- refusals: 0xA700 Out of Resources ----------------------------------------------------


async def test_below_free_space_watermark_is_a700_before_spooling(harness: Harness) -> None:
    harness.storage.free = False
    stream = FakeStream(encode(make_dataset()))
    rsp = await harness.store(store_request(b"", stream=stream))
    assert rsp.status == Status.OUT_OF_RESOURCES
    assert rsp.error_comment and "watermark" in rsp.error_comment
    assert harness.storage.metas == []  # no spool was even opened
    harness.assert_nothing_left()


async def test_write_failure_mid_stream_is_a700_and_leaves_nothing(harness: Harness) -> None:
    harness.storage.fail_write_after = SPOOL_BUFFER  # the first 1 MiB piece fails
    data = encode(make_dataset(pixels=3 * SPOOL_BUFFER))
    stream = FakeStream(data)
    rsp = await harness.store(store_request(data, stream=stream))
    assert rsp.status == Status.OUT_OF_RESOURCES
    assert rsp.error_comment and "too large" in rsp.error_comment
    # The handler stopped reading; the dispatcher drains the rest before answering.
    assert stream.delivered < len(data)
    await stream.drain()
    harness.assert_nothing_left()


async def test_write_failure_on_last_piece_is_a700(harness: Harness) -> None:
    harness.storage.fail_write_after = 10
    rsp = await harness.store(store_request(encode(make_dataset())))
    assert rsp.status == Status.OUT_OF_RESOURCES
    harness.assert_nothing_left()


async def test_io_error_on_write_is_answered_like_one_on_commit(harness: Harness) -> None:
    # Not only "no room": EIO on the spool is answered (A700, as at commit), not turned
    # into a processing failure with a traceback by the dispatcher.
    harness.storage.fail_write_after = 0
    harness.storage.fail_write = StorageError("cannot write spool file: Input/output error")
    rsp = await harness.store(store_request(encode(make_dataset())))
    assert rsp.status == Status.OUT_OF_RESOURCES
    assert rsp.error_comment == "cannot write spool file: Input/output error"
    harness.assert_nothing_left()


@pytest.mark.parametrize("error", [OutOfResources("cannot commit spool file: No space left"),
                                   StorageError("cannot commit spool file: I/O error")])
async def test_commit_failure_is_a700_and_leaves_nothing(harness: Harness,
                                                         error: StorageError) -> None:
    harness.storage.fail_commit = error
    rsp = await harness.store(store_request(encode(make_dataset())))
    assert rsp.status == Status.OUT_OF_RESOURCES
    assert rsp.error_comment == str(error)[:64]
    harness.assert_nothing_left()


async def test_patient_conflict_is_c000_with_its_comment_and_leaves_nothing(
        harness: Harness) -> None:
    harness.index.fail = PatientConflict("Patient ID differs from the study's patient")
    rsp = await harness.store(store_request(encode(make_dataset())))
    assert rsp.status == Status.CANNOT_UNDERSTAND
    assert rsp.error_comment == "Patient ID differs from the study's patient"
    assert harness.storage.deleted == harness.storage.committed
    harness.assert_nothing_left()


@pytest.mark.parametrize("error", [
    IndexWriteError("cannot index instance: disk I/O error"),
    OutOfResources("index database: database or disk is full"),
], ids=["write-error", "database-full"])
async def test_index_failure_deletes_the_file_and_fails(harness: Harness,
                                                        error: Exception) -> None:
    harness.index.fail = error
    rsp = await harness.store(store_request(encode(make_dataset())))
    assert rsp.status == Status.OUT_OF_RESOURCES
    assert len(harness.storage.committed) == 1
    assert harness.storage.deleted == harness.storage.committed  # the committed file is gone
    harness.assert_nothing_left()


# --- refusals: 0xA900 and 0xC000 --------------------------------------------------------------


async def test_instance_uid_mismatch_is_a900(harness: Harness) -> None:
    data = encode(make_dataset(1))
    rsp = await harness.store(store_request(data, instance_uid=f"{UID_ROOT}.3.999"))
    assert rsp.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert rsp.error_comment and "SOP Instance UID" in rsp.error_comment
    assert rsp.affected_sop_instance_uid == f"{UID_ROOT}.3.999"  # the command's, echoed
    assert harness.storage.metas == []  # parsed before storing: no file was ever written
    harness.assert_nothing_left()


async def test_mismatch_in_a_large_data_set_removes_its_file(harness: Harness) -> None:
    data = encode(make_dataset(1, pixels=2 * SPOOL_BUFFER))
    rsp = await harness.store(store_request(data, instance_uid=f"{UID_ROOT}.3.999"))
    assert rsp.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert len(harness.storage.committed) == 1  # spooled and committed, then parsed
    assert harness.storage.deleted == harness.storage.committed
    harness.assert_nothing_left()


async def test_sop_class_mismatch_is_a900(harness: Harness) -> None:
    data = encode(make_dataset(1, sop_class=MRImageStorage))
    rsp = await harness.store(store_request(data, sop_class=CTImageStorage))
    assert rsp.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert rsp.error_comment and "SOP Class UID" in rsp.error_comment
    harness.assert_nothing_left()


@pytest.mark.parametrize("data", [b"", b"\x08\x00\x16\x00UI\xff\x7fshort", bytes(range(256))],
                         ids=["empty", "truncated", "garbage"])
async def test_unparseable_data_set_is_c000_with_comment(harness: Harness, data: bytes) -> None:
    rsp = await harness.store(store_request(data))
    assert rsp.status == Status.CANNOT_UNDERSTAND
    assert rsp.error_comment and len(rsp.error_comment) <= 64
    harness.assert_nothing_left()


# --- duplicates -------------------------------------------------------------------------------


async def test_keep_first_keeps_the_first_file(harness: Harness) -> None:
    first = encode(make_dataset(name="First^Copy"))
    second = encode(make_dataset(name="Second^Copy"))
    assert (await harness.store(store_request(first))).status == Status.SUCCESS
    assert (await harness.store(store_request(second))).status == Status.SUCCESS
    first_key, second_key = harness.storage.committed
    assert harness.storage.files == {first_key: HEADER + first}
    assert harness.storage.deleted == [second_key]
    assert harness.storage.released == [first_key]  # the second is deleted, not released
    assert harness.index.rows[f"{UID_ROOT}.3.1"].stored.key == first_key


async def test_replace_deletes_the_old_file_after_the_row_moved(harness: Harness) -> None:
    harness.index.policy = DuplicatePolicy.REPLACE
    first = encode(make_dataset(name="First^Copy"))
    second = encode(make_dataset(name="Second^Copy"))
    assert (await harness.store(store_request(first))).status == Status.SUCCESS
    assert (await harness.store(store_request(second))).status == Status.SUCCESS
    first_key, second_key = harness.storage.committed
    assert first_key != second_key  # a re-sent instance gets a new file, never overwrites
    assert harness.storage.files == {second_key: HEADER + second}
    assert harness.storage.deleted == [first_key]
    assert harness.index.rows[f"{UID_ROOT}.3.1"].stored.key == second_key


async def test_replace_succeeds_even_when_the_old_file_cannot_be_deleted(
        harness: Harness) -> None:
    harness.index.policy = DuplicatePolicy.REPLACE
    assert (await harness.store(store_request(encode(make_dataset())))).status == Status.SUCCESS

    def refuse(key: str) -> None:
        raise StorageError(f"cannot delete {key}: Permission denied")

    harness.storage.delete = refuse  # type: ignore[method-assign]
    # The new instance is durable and indexed: the SCU must hear Success (the old file is an
    # orphan for `db check` to report), not a failure that makes it resend.
    rsp = await harness.store(store_request(encode(make_dataset(name="Again^Sent"))))
    assert rsp.status == Status.SUCCESS
    new_key = harness.storage.committed[-1]
    assert harness.index.rows[f"{UID_ROOT}.3.1"].stored.key == new_key


# --- abort and cancellation -------------------------------------------------------------------


async def test_abort_mid_transfer_leaves_nothing(harness: Harness) -> None:
    data = encode(make_dataset(pixels=3 * SPOOL_BUFFER))
    stream = FakeStream(data, fail_after=2 * SPOOL_BUFFER)  # after one piece was written
    with pytest.raises(AssociationClosed):
        await harness.store(store_request(data, stream=stream))
    assert len(harness.storage.metas) == 1
    harness.assert_nothing_left()


async def test_cancelled_while_receiving_leaves_nothing(harness: Harness) -> None:
    data = encode(make_dataset(pixels=2 * SPOOL_BUFFER))
    stream = FakeStream(data, hold=asyncio.Event())
    task = asyncio.create_task(harness.store(store_request(data, stream=stream)))
    async with asyncio.timeout(5):
        await stream.holding.wait()  # every piece but the last is in the spool
    assert harness.storage.opened_spools[0].writes
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    harness.assert_nothing_left()


async def test_cancelled_while_the_spool_is_being_created_leaves_nothing(
        harness: Harness) -> None:
    harness.storage.open_gate = threading.Event()
    data = encode(make_dataset(pixels=2 * SPOOL_BUFFER))
    task = asyncio.create_task(harness.store(store_request(data)))
    # The thread is inside open_spool.
    assert await asyncio.to_thread(harness.storage.opening.wait, 5)
    task.cancel()
    harness.storage.open_gate.set()  # the thread finishes creating the spool after all
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(harness.storage.opened_spools) == 1
    harness.assert_nothing_left()


async def _other_tasks() -> None:
    """Wait for every task but this one (the shielded finish keeps running on its own)."""
    current = asyncio.current_task()
    async with asyncio.timeout(5):
        await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not current),
                             return_exceptions=True)


@pytest.mark.parametrize("index_fails", [False, True], ids=["indexed", "index-fails"])
async def test_cancelled_after_last_fragment_still_finishes(harness: Harness,
                                                            index_fails: bool) -> None:
    harness.index.gate = asyncio.Event()
    if index_fails:
        harness.index.fail = IndexWriteError("the index writer stopped")
    task = asyncio.create_task(harness.store(store_request(encode(make_dataset()))))
    async with asyncio.timeout(5):
        await harness.index.entered.wait()  # file committed, row being written
    task.cancel()  # an A-ABORT or a shutdown now must not leave a row without a file
    with pytest.raises(asyncio.CancelledError):
        await task
    harness.index.gate.set()
    await _other_tasks()  # the shielded finish ran to its end
    if index_fails:
        harness.assert_nothing_left()
        return
    (key,) = harness.storage.files
    assert harness.index.rows[f"{UID_ROOT}.3.1"].stored.key == key
    assert harness.storage.spools == {}
