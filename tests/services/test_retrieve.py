"""C-GET / C-MOVE SCP logic with in-memory fakes: identifiers, counts, statuses, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, BinaryIO

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from minipacs.ports import (
    AssociationClosed,
    AssociationInfo,
    Condition,
    FindQuery,
    InstanceLocation,
    InstancePage,
    MatchKind,
    PeerUnreachable,
    QueryLevel,
    Reply,
    Request,
)
from minipacs.proto.dimse import CGetRQ, CMoveRQ, CStoreRQ, CStoreRSP, DimseMessage
from minipacs.proto.negotiation import AcceptedContext, Negotiated
from minipacs.proto.sop import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    MPEG2_MPML,
    PATIENT_ROOT_QR_GET,
    PATIENT_ROOT_QR_MOVE,
    STORAGE_SOP_CLASSES,
    STUDY_ROOT_QR_GET,
    STUDY_ROOT_QR_MOVE,
)
from minipacs.proto.status import Status
from minipacs.services.identifier import Model
from minipacs.services.matching import IdentifierError
from minipacs.services.retrieve import RetrieveService, encode_failed_list
from minipacs.services.retrieve_keys import parse_retrieve_identifier

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
IMPLICIT = IMPLICIT_VR_LITTLE_ENDIAN
EXPLICIT = EXPLICIT_VR_LITTLE_ENDIAN
TAGS = {0x00100020: "patient", 0x00100021: "issuer", 0x0020000D: "study",
        0x0020000E: "series", 0x00080018: "uid"}


# --- fakes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    patient: str
    issuer: str
    study: str
    series: str
    loc: InstanceLocation

    @property
    def uid(self) -> str:
        return self.loc.sop_instance_uid


def row(n: int, *, study: str = "1.1", series: str = "1.1.1", patient: str = "P1",
        issuer: str = "", sop_class: str = CT, ts: str = EXPLICIT) -> Row:
    uid = f"{series}.{n}"
    return Row(patient, issuer, study, series,
               InstanceLocation(sop_class, uid, ts, f"key/{uid}", 10, 10 + 20 + n))


class FakeIndex:
    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows = list(rows)
        self.pages = 0
        self.read = 0  # instance locations handed out

    def _match(self, query: FindQuery) -> list[Row]:
        def ok(r: Row, c: Condition) -> bool:
            return getattr(r, TAGS[c.tag]) in c.values
        return [r for r in self.rows if all(ok(r, c) for c in query.conditions)]

    async def count(self, query: FindQuery, *, cap: int) -> int:
        rows = self._match(query)
        if query.level is QueryLevel.PATIENT:
            return min(len({(r.patient, r.issuer) for r in rows}), cap + 1)
        assert query.level is QueryLevel.IMAGE
        return min(len(rows), cap + 1)

    async def instances(self, query: FindQuery, *, after: object | None, limit: int,
                        kinds: frozenset[tuple[str, str]] | None = None) -> InstancePage:
        self.pages += 1
        rows = [r for r in self._match(query)
                if kinds is None or (r.loc.sop_class_uid, r.loc.transfer_syntax_uid) in kinds]
        start = int(after or 0)  # type: ignore[call-overload]
        page = rows[start:start + limit]
        self.read += len(page)
        more = start + limit < len(rows)
        return InstancePage(tuple(r.loc for r in page), start + limit if more else None)

    async def instance_kinds(self, query: FindQuery) -> tuple[tuple[str, str], ...]:
        return tuple(dict.fromkeys((r.loc.sop_class_uid, r.loc.transfer_syntax_uid)
                                   for r in self._match(query)))


class FakeStorage:
    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = files or {}  # storage key -> data set; others hold filler bytes

    def open_dataset(self, key: str, dataset_offset: int | None = None) -> BinaryIO:
        if key.endswith(".missing"):
            raise FileNotFoundError(key)
        return io.BytesIO(self.files.get(key, key.encode() * 3))


Responder = Callable[[CStoreRQ], int]


@dataclass
class FakeChannel:
    contexts: dict[int, AcceptedContext]
    respond: Responder = lambda rq: Status.SUCCESS
    calling_ae: str = "CALLER"
    sent: list[tuple[DimseMessage, bytes | None]] = field(default_factory=list)
    stores: list[tuple[CStoreRQ, bytes]] = field(default_factory=list)
    on_store: Callable[[int], None] | None = None
    _ids: int = 0

    @property
    def info(self) -> AssociationInfo:
        return AssociationInfo(self.calling_ae, "MINIPACS", "127.0.0.1", 1,
                               Negotiated(MappingProxyType(self.contexts), 0))

    def next_message_id(self) -> int:
        self._ids += 1
        return self._ids

    async def send(self, context_id: int, message: DimseMessage,
                   dataset: bytes | AsyncIterable[bytes] | None = None) -> None:
        assert not isinstance(dataset, AsyncIterable)
        self.sent.append((message, dataset))

    async def request(self, context_id: int, message: DimseMessage,
                      dataset: bytes | AsyncIterable[bytes] | None = None
                      ) -> AsyncIterator[Reply]:
        assert isinstance(message, CStoreRQ) and isinstance(dataset, AsyncIterable)
        data = b"".join([chunk async for chunk in dataset])
        self.stores.append((message, data))
        if self.on_store is not None:
            self.on_store(len(self.stores))
        status = self.respond(message)
        if status < 0:
            raise AssociationClosed("peer aborted")
        yield Reply(CStoreRSP(message_id_being_responded_to=message.message_id, status=status,
                              affected_sop_instance_uid=message.affected_sop_instance_uid))


def storage_contexts(*pairs: tuple[str, str], scp_role: bool = True,
                     qr: str = PATIENT_ROOT_QR_GET) -> dict[int, AcceptedContext]:
    out = {1: AcceptedContext(1, qr, EXPLICIT)}
    for n, (sop_class, ts) in enumerate(pairs):
        out[3 + 2 * n] = AcceptedContext(3 + 2 * n, sop_class, ts, True, scp_role)
    return out


@dataclass
class FakePeers:
    channels: list[FakeChannel] = field(default_factory=list)
    proposed: list[tuple[tuple[str, str], ...]] = field(default_factory=list)
    accept: Callable[[tuple[str, str]], bool] = lambda key: True
    unreachable: str | None = None
    respond: Responder = lambda rq: Status.SUCCESS
    exits: list[bool] = field(default_factory=list)  # True: aborted (the block raised)

    def address(self, ae_title: str) -> str | None:
        return "127.0.0.1:104" if ae_title in ("DEST", "DEST2") else None

    @contextlib.asynccontextmanager
    async def connect(self, ae_title: str, contexts: Sequence[tuple[str, str]]
                      ) -> AsyncIterator[FakeChannel]:
        if self.unreachable:
            raise PeerUnreachable(self.unreachable)
        self.proposed.append(tuple(contexts))
        accepted = {2 * n + 1: AcceptedContext(2 * n + 1, c, t)
                    for n, (c, t) in enumerate(contexts) if self.accept((c, t))}
        channel = FakeChannel(accepted, self.respond, "MINIPACS")
        self.channels.append(channel)
        try:
            yield channel
        except BaseException:
            self.exits.append(True)
            raise
        self.exits.append(False)


def encode(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def ident(level: str | None, **keys: object) -> Dataset:
    ds = Dataset()
    if level is not None:
        ds.QueryRetrieveLevel = level
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


class Stream:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data

    async def read_all(self, limit: int) -> bytes:
        return self.data

    async def drain(self) -> None:
        return None


def service(rows: Sequence[Row], peers: FakePeers | None = None,
            files: dict[str, bytes] | None = None, **kw: Any) -> RetrieveService:
    kw.setdefault("pending_interval", 0.0)
    kw.setdefault("page_size", 2)
    return RetrieveService(FakeIndex(rows), FakeStorage(files),  # type: ignore[arg-type]
                           peers or FakePeers(), ae_title="MINIPACS", **kw)


async def run_get(svc: RetrieveService, channel: FakeChannel, identifier: Dataset,
                  qr: str = PATIENT_ROOT_QR_GET) -> tuple[Any, bytes | None]:
    request = Request(AcceptedContext(1, qr, EXPLICIT),
                      CGetRQ(message_id=5, affected_sop_class_uid=qr),
                      Stream(encode(identifier)))
    outcome = await svc.get(channel, request)  # type: ignore[arg-type]
    return outcome.message, outcome.dataset


async def run_move(svc: RetrieveService, channel: FakeChannel, identifier: Dataset,
                   destination: str = "DEST", qr: str = STUDY_ROOT_QR_MOVE,
                   cancel: asyncio.Event | None = None) -> tuple[Any, bytes | None]:
    request = Request(AcceptedContext(1, qr, EXPLICIT),
                      CMoveRQ(message_id=9, affected_sop_class_uid=qr,
                              move_destination=destination),
                      Stream(encode(identifier)))
    if cancel is not None:
        request.cancelled = cancel
    outcome = await svc.move(channel, request)  # type: ignore[arg-type]
    return outcome.message, outcome.dataset


def failed_list(data: bytes | None) -> list[str]:
    assert data is not None
    fp = DicomBytesIO(data)
    ds = read_dataset(fp, False, True)
    value = ds.FailedSOPInstanceUIDList
    return [value] if isinstance(value, str) else list(value)


def pendings(channel: FakeChannel) -> list[Any]:
    return [m for m, _ in channel.sent if m.status == Status.PENDING]


def counts(rsp: Any) -> tuple[int | None, int, int, int]:
    return (rsp.number_of_remaining_suboperations, rsp.number_of_completed_suboperations,
            rsp.number_of_failed_suboperations, rsp.number_of_warning_suboperations)


# --- identifiers ------------------------------------------------------------------------------


def test_study_level_selects_by_uid_list_and_ignores_other_keys() -> None:
    sel = parse_retrieve_identifier(
        ident("STUDY", PatientID="X", StudyInstanceUID=["1.2", "1.3"], PatientName="A^B"),
        Model.PATIENT_ROOT)
    assert sel.level is QueryLevel.STUDY
    assert sel.query.conditions == (Condition(0x0020000D, "UI", MatchKind.LIST,
                                              ("1.2", "1.3")),)
    assert set(sel.ignored) == {0x00100010, 0x00100020}
    assert sel.entities == 2


def test_uids_above_narrow_and_patient_issuer_is_kept() -> None:
    sel = parse_retrieve_identifier(
        ident("IMAGE", StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3",
              SOPInstanceUID=["1.2.3.4", "1.2.3.5"]), Model.STUDY_ROOT)
    assert [c.tag for c in sel.query.conditions] == [0x0020000D, 0x0020000E, 0x00080018]
    patient = parse_retrieve_identifier(ident("PATIENT", PatientID="P1", IssuerOfPatientID="H"),
                                        Model.PATIENT_ROOT)
    assert [(c.tag, c.values) for c in patient.query.conditions] == [
        (0x00100020, ("P1",)), (0x00100021, ("H",))]


@pytest.mark.parametrize(("model", "keys", "words"), [
    (Model.PATIENT_ROOT, {}, "QueryRetrieveLevel"),
    (Model.STUDY_ROOT, {"QueryRetrieveLevel": "PATIENT", "PatientID": "P"}, "not in Study"),
    (Model.PATIENT_ROOT, {"QueryRetrieveLevel": "STUDY", "PatientID": "P"}, "StudyInstanceUID"),
    (Model.STUDY_ROOT, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "1.2",
                        "SeriesInstanceUID": ""}, "SeriesInstanceUID"),
    (Model.PATIENT_ROOT, {"QueryRetrieveLevel": "PATIENT", "PatientID": ["A", "B"]},
     "one value"),
    (Model.PATIENT_ROOT, {"QueryRetrieveLevel": "PATIENT", "PatientID": "P*"}, "wildcard"),
    (Model.STUDY_ROOT, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": ["1.2", "1.3"],
                        "SeriesInstanceUID": "1.2.3"}, "one value above"),
    (Model.STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.*"},
     "not a UID"),
])
def test_bad_identifiers_are_a900(model: Model, keys: dict[str, object], words: str) -> None:
    ds = Dataset()
    for key, value in keys.items():
        setattr(ds, key, value)
    with pytest.raises(IdentifierError) as info:
        parse_retrieve_identifier(ds, model)
    assert info.value.status == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert words in info.value.comment


def test_failed_list_is_capped_in_explicit_vr() -> None:
    uids = [f"1.2.840.99999.{n}.{'1' * 40}" for n in range(2000)]
    implicit = encode_failed_list(uids, IMPLICIT)
    explicit = encode_failed_list(uids, EXPLICIT)
    assert len(implicit) > 65536 > len(explicit)
    assert failed_list(explicit) == uids[: len(failed_list(explicit))]


# --- C-GET ------------------------------------------------------------------------------------


async def test_get_success_counts_pendings_and_bytes() -> None:
    rows = [row(n) for n in range(5)]
    channel = FakeChannel(storage_contexts((CT, EXPLICIT)))
    final, data = await run_get(service(rows), channel, ident("STUDY", StudyInstanceUID="1.1"))
    assert final.status == Status.SUCCESS and data is None
    assert counts(final) == (None, 5, 0, 0)
    assert [counts(p) for p in pendings(channel)] == [(5 - n, n, 0, 0) for n in range(5)]
    assert [rq.affected_sop_instance_uid for rq, _ in channel.stores] == [r.uid for r in rows]
    for (rq, sent), r in zip(channel.stores, rows, strict=True):
        assert sent == r.loc.storage_key.encode() * 3  # the file's bytes, as they are
        assert rq.move_originator_ae_title is None


async def test_get_without_matches_is_success_with_zero_counts() -> None:
    channel = FakeChannel(storage_contexts((CT, EXPLICIT)))
    final, data = await run_get(service([row(1)]), channel,
                                ident("STUDY", StudyInstanceUID="9.9"))
    assert final.status == Status.SUCCESS and counts(final) == (None, 0, 0, 0)
    assert channel.sent == [] and data is None


async def test_get_statuses_warning_failure_and_missing_context(
        caplog: pytest.LogCaptureFixture) -> None:
    rows = [row(0), row(1), row(2), row(3, ts=MPEG2_MPML), row(4, ts=MPEG2_MPML),
            row(5, sop_class=MR)]
    outcomes = {rows[1].uid: 0xB000, rows[2].uid: 0xA700}
    channel = FakeChannel(storage_contexts((CT, EXPLICIT), (MR, EXPLICIT)),
                          lambda rq: outcomes.get(rq.affected_sop_instance_uid, 0))
    channel.contexts[5] = AcceptedContext(5, MR, EXPLICIT, True, False)  # no SCP role
    with caplog.at_level(logging.WARNING, "minipacs.retrieve"):
        final, data = await run_get(service(rows), channel,
                                    ident("STUDY", StudyInstanceUID="1.1"))
    assert final.status == Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES
    assert counts(final) == (None, 1, 4, 1)
    assert failed_list(data) == [rows[2].uid, rows[3].uid, rows[4].uid, rows[5].uid]
    missing = [r.getMessage() for r in caplog.records if "cannot send" in r.getMessage()]
    assert len(missing) == 2  # one line per (class, syntax), not per instance
    assert "MPEG2 Main Profile" in missing[0] and "Explicit VR Little Endian" in missing[0]
    assert "no pixel data decoder exists" in missing[0]  # nothing converts it
    assert "without the SCP role" in missing[1]


async def test_get_all_failed_is_a702_and_warnings_only_is_b000() -> None:
    rows = [row(n) for n in range(3)]
    channel = FakeChannel(storage_contexts((CT, EXPLICIT)), lambda rq: 0xA700)
    final, data = await run_get(service(rows), channel, ident("STUDY", StudyInstanceUID="1.1"))
    assert final.status == Status.OUT_OF_RESOURCES_SUBOPERATIONS
    assert counts(final) == (None, 0, 3, 0) and len(failed_list(data)) == 3
    assert "0xA700" in final.error_comment
    channel = FakeChannel(storage_contexts((CT, EXPLICIT)), lambda rq: 0xB007)
    final, data = await run_get(service(rows), channel, ident("STUDY", StudyInstanceUID="1.1"))
    assert final.status == Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES
    assert counts(final) == (None, 0, 0, 3) and data is None


async def test_unreadable_file_fails_that_instance_only() -> None:
    bad = Row("P1", "", "1.1", "1.1.1",
              InstanceLocation(CT, "1.1.1.77", EXPLICIT, "key.missing", 10, 40))
    channel = FakeChannel(storage_contexts((CT, EXPLICIT)))
    final, data = await run_get(service([row(0), bad, row(2)]), channel,
                                ident("STUDY", StudyInstanceUID="1.1"))
    assert counts(final) == (None, 2, 1, 0) and failed_list(data) == ["1.1.1.77"]


async def test_cancel_stops_and_reports_remaining() -> None:
    rows = [row(n) for n in range(10)]
    cancel = asyncio.Event()
    channel = FakeChannel(storage_contexts((CT, EXPLICIT)),
                          on_store=lambda n: cancel.set() if n == 3 else None)
    request = Request(AcceptedContext(1, STUDY_ROOT_QR_GET, EXPLICIT),
                      CGetRQ(message_id=5, affected_sop_class_uid=STUDY_ROOT_QR_GET),
                      Stream(encode(ident("STUDY", StudyInstanceUID="1.1"))), cancel)
    outcome = await service(rows).get(channel, request)  # type: ignore[arg-type]
    assert outcome.message.status == Status.CANCEL  # type: ignore[union-attr]
    assert counts(outcome.message) == (7, 3, 0, 0)
    assert len(channel.stores) == 3


async def test_pending_rate_is_bounded() -> None:
    now = [0.0]
    rows = [row(n) for n in range(10)]

    def tick(n: int) -> None:
        now[0] += 0.04  # each sub-operation takes 40 ms

    channel = FakeChannel(storage_contexts((CT, EXPLICIT)), on_store=tick)
    svc = service(rows, pending_interval=0.1, clock=lambda: now[0])
    final, _ = await run_get(svc, channel, ident("STUDY", StudyInstanceUID="1.1"))
    sent = pendings(channel)
    assert counts(sent[0]) == (10, 0, 0, 0)  # one before the first sub-operation
    assert 3 <= len(sent) <= 5  # 400 ms of work: about one per 100 ms, not one per instance
    assert final.status == Status.SUCCESS


async def test_patient_level_on_study_root_retrieves_the_patient_unless_strict(
        caplog: pytest.LogCaptureFixture) -> None:
    rows = [row(0, patient="P1"), row(1, patient="P1", study="2.1", series="2.1.1"),
            row(2, patient="P2", study="3.1", series="3.1.1")]
    identifier = ident("PATIENT", PatientID="P1")
    channel = FakeChannel(storage_contexts((CT, EXPLICIT)))
    with caplog.at_level(logging.INFO, logger="minipacs.retrieve"):
        final, _ = await run_get(service(rows), channel, identifier, STUDY_ROOT_QR_GET)
    assert counts(final) == (None, 2, 0, 0)
    assert "non-standard level PATIENT served on Study Root" in caplog.text
    peers = FakePeers()
    final, _ = await run_move(service(rows, peers), channel, identifier)
    assert counts(final) == (None, 2, 0, 0)
    strict = service(rows, strict_hierarchy=True)
    final, _ = await run_get(strict, channel, identifier, STUDY_ROOT_QR_GET)
    assert final.status == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert "not in Study Root" in final.error_comment
    sel = parse_retrieve_identifier(identifier, Model.PATIENT_ROOT, strict_hierarchy=False)
    assert not sel.nonstandard  # a level of the model


async def test_patient_issuers_rule() -> None:
    rows = [row(0, patient="P1", issuer="A"), row(1, patient="P1", issuer="B",
                                                    study="2.1", series="2.1.1")]
    identifier = ident("PATIENT", PatientID="P1")
    channel = FakeChannel(storage_contexts((CT, EXPLICIT)))
    final, _ = await run_get(service(rows), channel, identifier)
    assert counts(final) == (None, 2, 0, 0)
    final, _ = await run_get(service(rows, patient_issuers="refuse"), channel, identifier)
    assert final.status == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert "several issuers" in final.error_comment
    final, _ = await run_get(service(rows, patient_issuers="refuse"), channel,
                             ident("PATIENT", PatientID="P1", IssuerOfPatientID="B"))
    assert counts(final) == (None, 1, 0, 0)


# --- C-MOVE -----------------------------------------------------------------------------------


async def test_move_unknown_destination_is_a801() -> None:
    channel = FakeChannel(storage_contexts(qr=STUDY_ROOT_QR_MOVE))
    final, _ = await run_move(service([row(0)]), channel, ident("STUDY", StudyInstanceUID="1.1"),
                              destination="NOBODY")
    assert final.status == Status.MOVE_DESTINATION_UNKNOWN
    assert "NOBODY" in final.error_comment


async def test_move_sends_with_originator_and_counts() -> None:
    rows = [row(n) for n in range(3)] + [row(9, ts=MPEG2_MPML)]
    peers = FakePeers(accept=lambda key: key[1] == EXPLICIT)
    channel = FakeChannel(storage_contexts(qr=STUDY_ROOT_QR_MOVE))
    final, data = await run_move(service(rows, peers), channel,
                                 ident("STUDY", StudyInstanceUID="1.1"))
    # One pair per context: the stored ones, then the fallback Implicit VR LE.
    assert peers.proposed == [((CT, EXPLICIT), (CT, MPEG2_MPML), (CT, IMPLICIT))]
    (sub,) = peers.channels
    assert [(rq.move_originator_ae_title, rq.move_originator_message_id)
            for rq, _ in sub.stores] == [("CALLER", 9)] * 3
    assert final.status == Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES
    assert counts(final) == (None, 3, 1, 0) and failed_list(data) == [rows[3].uid]
    assert peers.exits == [False]  # released
    assert all(p.number_of_remaining_suboperations + sum(counts(p)[1:]) == 4
               for p in pendings(channel))


async def test_move_to_unreachable_destination_fails_everything() -> None:
    rows = [row(n) for n in range(3)]
    peers = FakePeers(unreachable="cannot connect to 127.0.0.1:104: Connection refused")
    channel = FakeChannel(storage_contexts(qr=STUDY_ROOT_QR_MOVE))
    final, data = await run_move(service(rows, peers), channel,
                                 ident("STUDY", StudyInstanceUID="1.1"))
    assert final.status == Status.OUT_OF_RESOURCES_SUBOPERATIONS
    assert counts(final) == (None, 0, 3, 0) and len(failed_list(data)) == 3
    assert final.error_comment.startswith("DEST: cannot connect")


async def test_move_lost_destination_fails_the_rest_and_aborts() -> None:
    rows = [row(n) for n in range(5)]
    peers = FakePeers(respond=lambda rq: -1 if rq.affected_sop_instance_uid.endswith(".2")
                      else 0)
    channel = FakeChannel(storage_contexts(qr=STUDY_ROOT_QR_MOVE))
    final, data = await run_move(service(rows, peers), channel,
                                 ident("STUDY", StudyInstanceUID="1.1"))
    assert counts(final) == (None, 2, 3, 0)
    assert final.status == Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES
    assert failed_list(data) == [r.uid for r in rows[2:]]
    assert len(peers.channels[0].stores) == 3 and peers.exits == [True]


async def test_move_splits_more_than_128_pairs_over_associations() -> None:
    classes = sorted(STORAGE_SOP_CLASSES)[:70]
    rows = [row(n, sop_class=c, ts=ts) for n, (c, ts) in
            enumerate((c, ts) for c in classes for ts in (EXPLICIT, IMPLICIT))]
    peers = FakePeers()
    channel = FakeChannel(storage_contexts(qr=STUDY_ROOT_QR_MOVE))
    svc = service(rows, peers, page_size=50)
    final, _ = await run_move(svc, channel, ident("STUDY", StudyInstanceUID="1.1"))
    assert [len(p) for p in peers.proposed] == [128, 12]
    assert sum(len(c.stores) for c in peers.channels) == 140
    assert counts(final) == (None, 140, 0, 0) and final.status == Status.SUCCESS
    assert svc.index.read == 140  # type: ignore[attr-defined]  # once, not once per plan


async def test_move_to_unreachable_destination_reads_the_selection_once() -> None:
    classes = sorted(STORAGE_SOP_CLASSES)[:70]
    rows = [row(n, sop_class=c, ts=ts) for n, (c, ts) in
            enumerate((c, ts) for c in classes for ts in (EXPLICIT, IMPLICIT))]
    peers = FakePeers(unreachable="cannot connect to 127.0.0.1:104: Connection refused")
    svc = service(rows, peers, page_size=50)
    final, data = await run_move(svc, FakeChannel(storage_contexts(qr=STUDY_ROOT_QR_MOVE)),
                                 ident("STUDY", StudyInstanceUID="1.1"))
    assert counts(final) == (None, 0, 140, 0) and len(failed_list(data)) == 140
    assert svc.index.read == 140  # type: ignore[attr-defined]


async def test_move_cancel_releases_and_answers_cancel() -> None:
    rows = [row(n) for n in range(6)]
    cancel = asyncio.Event()
    peers = FakePeers(respond=lambda rq: (cancel.set(), 0)[1])
    channel = FakeChannel(storage_contexts(qr=PATIENT_ROOT_QR_MOVE))
    final, _ = await run_move(service(rows, peers), channel,
                              ident("STUDY", StudyInstanceUID="1.1"),
                              qr=PATIENT_ROOT_QR_MOVE, cancel=cancel)
    assert final.status == Status.CANCEL and counts(final) == (5, 1, 0, 0)
    assert peers.exits == [False]
