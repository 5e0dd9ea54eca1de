"""Storage Commitment SCP pieces with in-memory fakes: action parsing, reports, checks, retries."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from minipacs.ports import (
    Channel,
    CommitmentClaim,
    CommitmentItem,
    CommitmentState,
    CommitmentTransaction,
    PeerUnreachable,
    StorageError,
    StoredCopy,
)
from minipacs.proto.status import Status
from minipacs.services.answers import encode_dataset
from minipacs.services.commitment import (
    EVENT_ALL_COMMITTED,
    EVENT_FAILURES_EXIST,
    ActionError,
    CommitmentPolicy,
    CommitmentService,
    FailureReason,
    build_report,
    file_intact,
    parse_action,
)
from minipacs.services.commitment_scu import action_information, parse_report

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_action_information_round_trips_in_both_native_syntaxes() -> None:
    items = [(CT, "1.2.3.1"), (CT, "1.2.3.2")]
    for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        uid, parsed = parse_action(action_information("1.2.9", items, ts), ts)
        assert uid == "1.2.9"
        assert [(i.sop_class_uid, i.sop_instance_uid) for i in parsed] == items
        assert all(i.failure_reason is None for i in parsed)


@pytest.mark.parametrize(("attributes", "words"), [
    ({}, "empty identifier"),
    ({"ReferencedSOPSequence": []}, "TransactionUID missing"),
    ({"TransactionUID": "1.2.3"}, "ReferencedSOPSequence empty"),
    ({"TransactionUID": "1.2.3", "ReferencedSOPSequence": [Dataset()]},
     "item 1: ReferencedSOPClassUID missing"),
    ({"TransactionUID": "1.2.03x"}, "TransactionUID is not a UID"),
])
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_bad_action_information_is_an_invalid_argument_value(attributes: dict[str, Any],
                                                             words: str) -> None:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    with pytest.raises(ActionError) as caught:
        parse_action(encode_dataset(ds, ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    assert caught.value.status == Status.INVALID_ARGUMENT_VALUE
    assert words in caught.value.comment


def _txn(*reasons: int | None) -> CommitmentTransaction:
    items = tuple(CommitmentItem(CT, f"1.2.3.{n}", r) for n, r in enumerate(reasons, 1))
    return CommitmentTransaction("1.2.9", "MODALITY", "PACS", items, datetime.now(UTC))


def test_reports_say_all_committed_or_list_the_failures() -> None:
    event, data = build_report(_txn(0, 0), "PACS", ExplicitVRLittleEndian)
    report = parse_report(event, data, ExplicitVRLittleEndian)
    assert event == EVENT_ALL_COMMITTED
    assert report.retrieve_ae_title == "PACS"
    assert [r.failure_reason for r in report.results] == [0, 0]

    event, data = build_report(_txn(0, FailureReason.NO_SUCH_OBJECT_INSTANCE),
                               "PACS", ImplicitVRLittleEndian)
    report = parse_report(event, data, ImplicitVRLittleEndian)
    assert event == EVENT_FAILURES_EXIST
    assert {r.sop_instance_uid: r.failure_reason for r in report.results} == {
        "1.2.3.1": 0, "1.2.3.2": 0x0112}

    event, data = build_report(_txn(FailureReason.PROCESSING_FAILURE), "PACS",
                               ExplicitVRLittleEndian)
    report = parse_report(event, data, ExplicitVRLittleEndian)
    assert report.retrieve_ae_title is None  # nothing committed, nothing to retrieve
    with pytest.raises(ValueError, match="Event Type"):
        parse_report(3, data, ExplicitVRLittleEndian)


class _FilesStorage:
    """Only `checksum`, over bytes in memory."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self.files = dict(files)
        self.checked: list[str] = []

    def checksum(self, key: str) -> str:
        self.checked.append(key)
        if key not in self.files:
            raise StorageError(f"cannot read {key}")
        return f"sha256:{hashlib.sha256(self.files[key]).hexdigest()}"


def test_file_intact_compares_the_storage_checksum() -> None:
    data = b"DICM" * 100
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    storage: Any = _FilesStorage({"a": data, "b": data[:-1] + b"X", "c": data + b"!"})
    assert file_intact(storage, StoredCopy(CT, "a", len(data), digest))
    assert not file_intact(storage, StoredCopy(CT, "b", len(data), digest))  # altered
    assert not file_intact(storage, StoredCopy(CT, "c", len(data), digest))  # grown
    assert not file_intact(storage, StoredCopy(CT, "gone", len(data), digest))  # missing
    assert not file_intact(storage, StoredCopy(CT, "a", len(data), "md99:00"))  # unknown hash
    assert storage.checked == ["a", "b", "c", "gone", "a"]  # asked the port, read nothing


class _MemoryIndex:
    """`ports.CommitmentIndex` in memory, with the attempts recorded."""

    def __init__(self) -> None:
        self.rows: dict[str, CommitmentTransaction] = {}
        self.attempts: list[tuple[CommitmentState, int, str | None]] = []
        self.claimed: set[str] = set()
        self.changed = asyncio.Event()

    async def add_transaction(self, transaction: CommitmentTransaction) -> bool:
        if transaction.transaction_uid in self.rows:
            return False
        self.rows[transaction.transaction_uid] = transaction
        return True

    async def transaction(self, transaction_uid: str) -> CommitmentTransaction | None:
        return self.rows.get(transaction_uid)

    async def pending(self) -> tuple[CommitmentTransaction, ...]:
        return tuple(t for t in self.rows.values() if t.state is CommitmentState.PENDING)

    async def claim(self, limit: int) -> CommitmentClaim:
        """One process: the pending transactions due, claimed; the next due time."""
        now = datetime.now(UTC)
        due = [uid for uid, t in self.rows.items() if t.state is CommitmentState.PENDING
               and uid not in self.claimed and (t.next_attempt_at is None
                                                or t.next_attempt_at <= now)][:limit]
        self.claimed.update(due)
        later = [t.next_attempt_at for uid, t in self.rows.items()
                 if uid not in self.claimed and t.state is CommitmentState.PENDING
                 and t.next_attempt_at is not None]
        rescan = min([60.0, *((when - now).total_seconds() for when in later)])
        return CommitmentClaim(tuple(due), max(0.0, rescan))

    async def make_due(self) -> int:
        pending = [uid for uid, t in self.rows.items()
                   if t.state is CommitmentState.PENDING and uid not in self.claimed]
        for uid in pending:
            self.rows[uid] = replace(self.rows[uid], next_attempt_at=None)
        return len(pending)

    async def locate(self, sop_instance_uids: Sequence[str]) -> Mapping[str, StoredCopy]:
        return {}

    async def record_results(self, transaction_uid: str, reasons: Sequence[int]) -> None:
        txn = self.rows[transaction_uid]
        items = tuple(replace(i, failure_reason=r) for i, r in zip(txn.items, reasons,
                                                                   strict=True))
        self.rows[transaction_uid] = replace(txn, items=items)

    async def record_attempt(self, transaction_uid: str, *, state: CommitmentState,
                             attempts: int, retry_in: float | None,
                             error: str | None) -> bool:
        later = None if retry_in is None else datetime.now(UTC) + timedelta(seconds=retry_in)
        self.rows[transaction_uid] = replace(self.rows[transaction_uid], state=state,
                                             attempts=attempts, last_error=error,
                                             next_attempt_at=later)
        self.claimed.discard(transaction_uid)
        self.attempts.append((state, attempts, error))
        self.changed.set()
        return True


class _DownPeers:
    """A configured peer that never answers."""

    def address(self, ae_title: str) -> str | None:
        return "127.0.0.1:1"

    @contextlib.asynccontextmanager
    async def connect(self, ae_title: str, contexts: Sequence[tuple[str, str]], *,
                      roles: Sequence[Any] = (), calling_ae: str | None = None
                      ) -> AsyncIterator[Channel]:
        raise PeerUnreachable("connection refused")
        yield  # pragma: no cover


async def test_retries_back_off_then_give_up_and_stay_recorded() -> None:
    index = _MemoryIndex()
    await index.add_transaction(_txn(None))  # loaded as pending at start
    policy = CommitmentPolicy(retry_delay=0.05, max_retry_delay=0.1, max_attempts=3)
    service = CommitmentService(index, _FilesStorage({}), _DownPeers(),  # type: ignore[arg-type]
                                ae_title="PACS", storage_classes=frozenset({CT}),
                                policy=policy)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await service.start()
    try:
        async with asyncio.timeout(5):
            while not index.attempts or index.attempts[-1][0] is CommitmentState.PENDING:
                index.changed.clear()
                await index.changed.wait()
    finally:
        await service.aclose()
    elapsed = loop.time() - started
    assert [(s, n) for s, n, _ in index.attempts] == [
        (CommitmentState.PENDING, 1), (CommitmentState.PENDING, 2), (CommitmentState.FAILED, 3)]
    assert all(error == "connection refused" for _, _, error in index.attempts)
    assert elapsed >= 0.05 + 0.1  # the delays: 0.05 s, then doubled to the 0.1 s ceiling
    # Checked before the first attempt: no index entry, so no such object instance.
    assert index.rows["1.2.9"].items[0].failure_reason == FailureReason.NO_SUCH_OBJECT_INSTANCE
