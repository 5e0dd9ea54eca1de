"""Storage Commitment Push Model SCP (PS3.4 Annex J) with pynetdicom as the modality.

The modality sends the N-ACTION with pynetdicom (in a thread) and takes the N-EVENT-REPORT
either on that association or as an SCP that minipacs calls back (its `peers` entry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from sqlalchemy import text

from minipacs.index.engine import make_engine
from minipacs.net.client import association
from minipacs.proto.dimse import NActionRQ, NActionRSP
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.sop import (
    STORAGE_COMMITMENT_PUSH,
    STORAGE_COMMITMENT_PUSH_INSTANCE,
    VERIFICATION,
)
from minipacs.proto.status import Status
from tests.interop.storecheck import own_store
from tests.support import (
    LOOPBACK,
    TEST_LIMITS,
    WAIT,
    attached,
    encode_implicit_le,
    free_port,
    make_config,
    make_ct,
    pynetdicom_ae,
    run_minipacs,
    running_server,
)

MODALITY: Final = "MODALITY"
SERVER_AE: Final = "MINIPACS"
CT_IMAGE_STORAGE: Final = str(CTImageStorage)
MR_IMAGE_STORAGE: Final = str(MRImageStorage)
# Fast retries for the tests; the defaults are seconds to minutes.
FAST: Final = {"retry_delay": 0.2, "max_retry_delay": 0.4, "timeout": 5}


@dataclass(frozen=True, slots=True)
class Report:
    """One N-EVENT-REPORT as the modality received it."""

    event_type_id: int
    info: Dataset
    calling_ae: str  # who opened the association it came on
    on_requestor_side: bool  # it came on the association the modality opened

    def committed(self) -> set[str]:
        return {i.ReferencedSOPInstanceUID for i in self.info.get("ReferencedSOPSequence", [])}

    def failed(self) -> dict[str, int]:
        return {i.ReferencedSOPInstanceUID: int(i.FailureReason)
                for i in self.info.get("FailedSOPSequence", [])}


def _on_report(reports: queue.Queue[Report]) -> Any:
    def handler(event: Any) -> tuple[int, None]:
        assoc = event.assoc
        reports.put(Report(event.request.EventTypeID, event.event_information,
                           assoc.requestor.ae_title, assoc.is_requestor))
        return 0x0000, None  # Success, no Event Reply

    return handler


@contextlib.contextmanager
def modality_scp(port: int) -> Iterator[queue.Queue[Report]]:
    """The modality listening for reports (PS3.4 J.3.3.1.3: it accepts the SCP role)."""
    from pynetdicom import evt

    reports: queue.Queue[Report] = queue.Queue()
    ae = pynetdicom_ae(MODALITY)
    ae.add_supported_context(STORAGE_COMMITMENT_PUSH, [ExplicitVRLittleEndian,
                                                       ImplicitVRLittleEndian],
                             scu_role=False, scp_role=True)
    server = ae.start_server((LOOPBACK, port), block=False,
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, _on_report(reports))])
    try:
        yield reports
    finally:
        server.shutdown()


def request_commitment(port: int, transaction_uid: str, items: Sequence[tuple[str, str]], *,
                       wait_report: float = 0.0) -> tuple[int, Report | None]:
    """The modality's N-ACTION (blocking): its status, and a report taken on the same
    association when `wait_report` seconds are given for it."""
    from pynetdicom import evt

    reports: queue.Queue[Report] = queue.Queue()
    ae = pynetdicom_ae(MODALITY)
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH, ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, port, ae_title=SERVER_AE,
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, _on_report(reports))])
    assert assoc.is_established
    try:
        ds = Dataset()
        ds.TransactionUID = transaction_uid
        refs = []
        for sop_class, uid in items:
            ref = Dataset()
            ref.ReferencedSOPClassUID = sop_class
            ref.ReferencedSOPInstanceUID = uid
            refs.append(ref)
        ds.ReferencedSOPSequence = refs
        status, _reply = assoc.send_n_action(ds, 1, STORAGE_COMMITMENT_PUSH,
                                             STORAGE_COMMITMENT_PUSH_INSTANCE)
        report = None
        if wait_report:
            with contextlib.suppress(queue.Empty):
                report = reports.get(timeout=wait_report)
    finally:
        assoc.release()
    return int(status.Status), report


async def next_report(reports: queue.Queue[Report], timeout: float = WAIT) -> Report:
    return await asyncio.to_thread(reports.get, True, timeout)


@dataclass(frozen=True, slots=True)
class Stored:
    uid: str
    path: Path  # the stored file


def index_url(directory: Path) -> str:
    """The SQLite index `pacs` makes in `directory` unless given another `url`."""
    return f"sqlite:///{directory / 'index.db'}"


def read_index(url: str, query: str, **params: object) -> list[Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(query), params).all())
    finally:
        engine.dispose()


async def store_cts(port: int, directory: Path, count: int,
                    url: str | None = None) -> list[Stored]:
    uids = []
    for index in range(1, count + 1):
        ds = make_ct(pixel_bytes=2048, index=index)
        rsp = await own_store(port, CT_IMAGE_STORAGE, ds.SOPInstanceUID, encode_implicit_le(ds),
                              transfer_syntax=ImplicitVRLittleEndian)
        assert rsp.status == Status.SUCCESS
        uids.append(ds.SOPInstanceUID)
    keys = dict(read_index(url or index_url(directory),
                           "SELECT sop_instance_uid, storage_key FROM instance"))
    return [Stored(uid, directory / "store" / keys[uid]) for uid in uids]


def transaction_state(url: str, transaction_uid: str) -> tuple[str, int] | None:
    rows = read_index(url, "SELECT state, attempts FROM commitment_transaction "
                           "WHERE transaction_uid = :uid", uid=transaction_uid)
    return None if not rows else (str(rows[0][0]), int(rows[0][1]))


class Outcomes(logging.Handler):
    """The `minipacs.commitment` log, awaited by the tests (no polling): the worker logs
    each attempt's outcome once the index has recorded it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._changed.set()

    async def wait_for(self, pattern: str, timeout: float = WAIT) -> str:
        regex = re.compile(pattern)
        async with asyncio.timeout(timeout):
            while True:
                found = [m for m in self.messages if regex.search(m)]
                if found:
                    return found[0]
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def outcomes() -> Iterator[Outcomes]:
    with attached(Outcomes(), "minipacs.commitment") as handler:
        yield handler


# What the worker logs once attempt N's outcome is in the index (services/commitment.py).
_RECORDED: Final = {"delivered": r"report delivered to .* \(attempt {n}\)",
                    "pending": r"attempt {n} of \d+ failed",
                    "failed": r"not delivered after {n} attempt"}


async def wait_state(outcomes: Outcomes, url: str, transaction_uid: str, state: str,
                     attempts: int = 1) -> None:
    """Until the worker says attempt `attempts` ended in `state`; then the row says so."""
    await outcomes.wait_for(rf"storage commitment {re.escape(transaction_uid)}: .*"
                            + _RECORDED[state].format(n=attempts))
    assert transaction_state(url, transaction_uid) == (state, attempts)


@contextlib.asynccontextmanager
async def pacs(directory: Path, peer_port: int | None = None, *, url: str | None = None,
               **commitment: Any) -> AsyncIterator[int]:
    directory.mkdir(exist_ok=True)
    peers = {MODALITY: {"host": LOOPBACK, "port": peer_port}} if peer_port else {}
    config = make_config(directory, ae_title=SERVER_AE, limits=TEST_LIMITS, peers=peers,
                         storage={"min_free_mb": 0}, commitment={**FAST, **commitment},
                         database={"url": url or index_url(directory)})
    async with running_server(config) as server:
        yield server.port


# --- reports ----------------------------------------------------------------------------


async def test_commitment_of_stored_instances_is_reported_on_a_new_association(
        tmp_path: Path, db_url: str, outcomes: Outcomes) -> None:
    peer_port = free_port()
    with modality_scp(peer_port) as reports:
        async with pacs(tmp_path, peer_port, url=db_url) as port:
            stored = await store_cts(port, tmp_path, 2, db_url)
            txn = generate_uid()
            status, _ = await asyncio.to_thread(
                request_commitment, port, txn, [(CT_IMAGE_STORAGE, s.uid) for s in stored])
            assert status == Status.SUCCESS
            report = await next_report(reports)
            await wait_state(outcomes, db_url, txn, "delivered")
    assert report.event_type_id == 1
    assert report.info.TransactionUID == txn
    assert report.committed() == {s.uid for s in stored}
    assert "FailedSOPSequence" not in report.info
    assert report.info.RetrieveAETitle == SERVER_AE
    assert report.calling_ae == SERVER_AE  # minipacs opened it, under the called AE title
    assert not report.on_requestor_side
    assert reports.empty()


async def test_a_mix_of_failures_is_reported_with_each_reason(tmp_path: Path) -> None:
    peer_port = free_port()
    with modality_scp(peer_port) as reports:
        async with pacs(tmp_path, peer_port) as port:
            good, altered, deleted, conflict = await store_cts(port, tmp_path, 4)
            raw = bytearray(altered.path.read_bytes())
            raw[-1] ^= 0xFF  # same size, other bytes: the checksum no longer matches
            altered.path.write_bytes(bytes(raw))
            deleted.path.unlink()
            unknown = generate_uid()
            txn = generate_uid()
            items = [(CT_IMAGE_STORAGE, good.uid), (CT_IMAGE_STORAGE, altered.uid),
                     (CT_IMAGE_STORAGE, deleted.uid), (MR_IMAGE_STORAGE, conflict.uid),
                     (CT_IMAGE_STORAGE, unknown), (VERIFICATION, generate_uid())]
            status, _ = await asyncio.to_thread(request_commitment, port, txn, items)
            assert status == Status.SUCCESS
            report = await next_report(reports)
    assert report.event_type_id == 2
    assert report.committed() == {good.uid}
    assert report.failed() == {
        altered.uid: 0x0110, deleted.uid: 0x0110,  # PS3.3 C.14.1.1 processing failure
        conflict.uid: 0x0119,  # class/instance conflict
        unknown: 0x0112,  # no such object instance
        items[-1][1]: 0x0122,  # referenced SOP class not supported
    }


async def test_report_on_the_same_association_when_configured(
        tmp_path: Path, outcomes: Outcomes) -> None:
    async with pacs(tmp_path, same_association=True) as port:  # no peer entry needed
        stored = await store_cts(port, tmp_path, 1)
        txn = generate_uid()
        status, report = await asyncio.to_thread(
            request_commitment, port, txn, [(CT_IMAGE_STORAGE, stored[0].uid)],
            wait_report=WAIT)
        assert status == Status.SUCCESS
        await wait_state(outcomes, index_url(tmp_path), txn, "delivered")
    assert report is not None
    assert report.on_requestor_side
    assert report.event_type_id == 1
    assert report.committed() == {stored[0].uid}


async def test_same_association_gone_falls_back_to_a_new_one(tmp_path: Path) -> None:
    peer_port = free_port()
    with modality_scp(peer_port) as reports:
        async with pacs(tmp_path, peer_port, same_association=True) as port:
            txn = generate_uid()
            # The modality releases at once: the report follows on a new association.
            status, _ = await asyncio.to_thread(
                request_commitment, port, txn, [(CT_IMAGE_STORAGE, generate_uid())])
            assert status == Status.SUCCESS
            report = await next_report(reports)
    assert report.event_type_id == 2
    assert not report.on_requestor_side


async def test_pending_report_survives_a_restart(tmp_path: Path, db_url: str,
                                                 outcomes: Outcomes) -> None:
    peer_port = free_port()  # nobody listens there yet
    txn = generate_uid()
    async with pacs(tmp_path, peer_port, url=db_url, retry_delay=60,
                    max_retry_delay=60) as port:
        stored = await store_cts(port, tmp_path, 1, db_url)
        status, _ = await asyncio.to_thread(
            request_commitment, port, txn, [(CT_IMAGE_STORAGE, stored[0].uid)])
        assert status == Status.SUCCESS
        await wait_state(outcomes, db_url, txn, "pending", attempts=1)  # the peer was down
    with modality_scp(peer_port) as reports:
        async with pacs(tmp_path, peer_port, url=db_url, retry_delay=60, max_retry_delay=60):
            report = await next_report(reports)  # at start, not after the 60 s backoff
            await wait_state(outcomes, db_url, txn, "delivered", attempts=2)
    assert report.event_type_id == 1
    assert report.info.TransactionUID == txn


async def test_delivery_gives_up_after_the_configured_attempts(
        tmp_path: Path, db_url: str, outcomes: Outcomes,
        caplog: pytest.LogCaptureFixture) -> None:
    async with pacs(tmp_path, url=db_url, max_attempts=2) as port:  # requestor: no peer
        txn = generate_uid()
        status, _ = await asyncio.to_thread(
            request_commitment, port, txn, [(CT_IMAGE_STORAGE, generate_uid())])
        assert status == Status.SUCCESS
        await wait_state(outcomes, db_url, txn, "failed", attempts=2)
    assert "is not a configured peer" in caplog.text
    assert "giving up" in caplog.text


# --- bad N-ACTIONs ----------------------------------------------------------------------


def _refs(*uids: str) -> list[Dataset]:
    items = []
    for uid in uids:
        item = Dataset()
        item.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    return items


def _info(**attributes: Any) -> bytes:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return encode_implicit_le(ds)


async def _n_action(port: int, *, instance: str = STORAGE_COMMITMENT_PUSH_INSTANCE,
                    action: int = 1, data: bytes | None,
                    sop_class: str = STORAGE_COMMITMENT_PUSH) -> NActionRSP:
    rq = build_associate_rq(MODALITY, SERVER_AE,
                            [(STORAGE_COMMITMENT_PUSH, [ImplicitVRLittleEndian])])
    async with association(LOOPBACK, port, rq, artim_timeout=5) as conn:
        message = NActionRQ(message_id=conn.next_message_id(), requested_sop_class_uid=sop_class,
                            requested_sop_instance_uid=instance, action_type_id=action,
                            has_dataset=data is not None)
        replies = [reply async for reply in conn.request(1, message, data)]
    (reply,) = replies
    assert isinstance(reply.message, NActionRSP)
    return reply.message


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
async def test_bad_n_actions_get_the_status_the_standard_names(tmp_path: Path) -> None:
    good = _info(TransactionUID=generate_uid(), ReferencedSOPSequence=_refs(generate_uid()))
    no_instance = Dataset()
    no_instance.ReferencedSOPClassUID = CT_IMAGE_STORAGE
    cases = [
        # PS3.7 10.1.4.1.10 / PS3.4 J.3.5: only the well-known instance exists.
        ({"instance": "1.2.3.4", "data": good}, Status.NO_SUCH_SOP_INSTANCE),
        ({"action": 2, "data": good}, Status.NO_SUCH_ACTION),
        ({"data": None}, Status.INVALID_ARGUMENT_VALUE),
        ({"data": _info(ReferencedSOPSequence=_refs(generate_uid()))},
         Status.INVALID_ARGUMENT_VALUE),  # no Transaction UID
        ({"data": _info(TransactionUID=generate_uid(), ReferencedSOPSequence=[])},
         Status.INVALID_ARGUMENT_VALUE),
        ({"data": _info(TransactionUID=generate_uid(), ReferencedSOPSequence=[no_instance])},
         Status.INVALID_ARGUMENT_VALUE),
        ({"data": _info(TransactionUID="not-a-uid", ReferencedSOPSequence=_refs("1.2"))},
         Status.INVALID_ARGUMENT_VALUE),
        ({"data": b"\x08\x00\x95\x11\xff\xff"}, Status.INVALID_ARGUMENT_VALUE),  # truncated
        ({"data": good, "sop_class": "1.2.840.10008.3.1.2.3.3"},
         Status.SOP_CLASS_NOT_SUPPORTED),  # not the context's SOP class
    ]
    async with pacs(tmp_path) as port:
        for kwargs, expected in cases:
            rsp = await _n_action(port, **kwargs)
            assert rsp.status == expected, (kwargs, rsp)
            assert rsp.error_comment
        # A repeated request (same transaction, same references) is taken once more...
        assert (await _n_action(port, data=good)).status == Status.SUCCESS
        assert (await _n_action(port, data=good)).status == Status.SUCCESS
        # ...the same Transaction UID for other references is refused (C.14.1.1: 0131H).
        ds = Dataset()
        ds.TransactionUID = _transaction_of(good)
        ds.ReferencedSOPSequence = _refs(generate_uid())
        rsp = await _n_action(port, data=encode_implicit_le(ds))
        assert rsp.status == Status.PROCESSING_FAILURE
        assert "already in use" in (rsp.error_comment or "")


def _transaction_of(data: bytes) -> str:
    from minipacs.services.identifier import decode_identifier

    return str(decode_identifier(data, ImplicitVRLittleEndian).TransactionUID)


# --- minipacs commit (SCU) --------------------------------------------------------------


def _write_cts(directory: Path, count: int) -> list[Path]:
    directory.mkdir()
    paths = []
    for index in range(1, count + 1):
        ds = make_ct(pixel_bytes=2048, index=index)
        ds.file_meta = Dataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = directory / f"ct{index}.dcm"
        ds.save_as(path, enforce_file_format=True, implicit_vr=True, little_endian=True)
        paths.append(path)
    return paths


async def test_commit_cli_on_the_same_association(tmp_path: Path) -> None:
    files = _write_cts(tmp_path / "files", 2)
    async with pacs(tmp_path / "pacs", same_association=True) as port:
        await store_cts(port, tmp_path / "pacs", 1)  # the first file's instance only
        result = await run_minipacs("commit", LOOPBACK, str(port), str(tmp_path / "files"),
                                    "--calling-ae", MODALITY, "--called-ae", SERVER_AE,
                                    "--timeout", "10", timeout=30)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("committed") and files[0].name in line for line in lines)
    assert any(line.startswith("failed") and files[1].name in line
               and "no such object instance" in line for line in lines)
    assert "1 of 2 instance(s) committed" in result.stderr


async def test_commit_cli_listening_for_the_report(tmp_path: Path) -> None:
    files = _write_cts(tmp_path / "files", 1)
    listen = free_port()
    (tmp_path / "pacs").mkdir()
    config = make_config(tmp_path / "pacs", ae_title=SERVER_AE, limits=TEST_LIMITS,
                         peers={MODALITY: {"host": LOOPBACK, "port": listen}},
                         storage={"min_free_mb": 0}, commitment=FAST)
    async with running_server(config) as server:
        await store_cts(server.port, tmp_path / "pacs", 1)
        result = await run_minipacs("commit", LOOPBACK, str(server.port), str(files[0]),
                                    "--calling-ae", MODALITY, "--called-ae", SERVER_AE,
                                    "--listen", str(listen), "--listen-host", LOOPBACK,
                                    "--timeout", "10", timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("committed")
    assert "1 of 1 instance(s) committed (event type 1" in result.stdout


async def test_commit_cli_misuse_is_one_line_and_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = await run_minipacs("commit", LOOPBACK, "11112", str(empty))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "no DICOM instance found" in result.stderr
    result = await run_minipacs("commit", LOOPBACK, "0", str(empty))
    assert result.returncode == 2
    assert "out of range" in result.stderr
