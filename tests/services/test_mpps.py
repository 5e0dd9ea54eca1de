"""MPPS SCP handlers (services/mpps.py) against an in-memory index: the PS3.4 F.7.2 rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, Final

import pytest
from pydicom.dataset import Dataset

from minipacs.ports import AssociationInfo, MppsRecord, Request
from minipacs.proto.dimse import NCreateRQ, NCreateRSP, NGetRQ, NGetRSP, NSetRQ, NSetRSP
from minipacs.proto.negotiation import AcceptedContext, Negotiated
from minipacs.proto.sop import EXPLICIT_VR_LITTLE_ENDIAN, MPPS, MPPS_RETRIEVE
from minipacs.proto.status import Status
from minipacs.services.identifier import decode_identifier
from minipacs.services.mpps import ERROR_ID_MAY_NO_LONGER_BE_UPDATED, MppsService
from tests.mpps_data import mpps_create, mpps_final, scheduled_step
from tests.support import encode_implicit_le

TS: Final = "1.2.840.10008.1.2"  # Implicit VR Little Endian
STUDY: Final = "1.2.826.0.1.3680043.8.498.4242.61"
PPS_UID: Final = "1.2.826.0.1.3680043.8.498.4242.62"


class FakeIndex:
    """`ports.MppsIndex` in a dict."""

    def __init__(self) -> None:
        self.rows: dict[str, MppsRecord] = {}

    async def create_mpps(self, record: MppsRecord) -> bool:
        if record.sop_instance_uid in self.rows:
            return False
        self.rows[record.sop_instance_uid] = record
        return True

    async def get_mpps(self, sop_instance_uid: str) -> MppsRecord | None:
        await asyncio.sleep(0)  # a real index yields here: concurrent N-SETs interleave
        return self.rows.get(sop_instance_uid)

    async def update_mpps(self, record: MppsRecord) -> bool:
        old = self.rows.get(record.sop_instance_uid)
        if old is None or old.status != "IN PROGRESS":
            return False
        self.rows[record.sop_instance_uid] = replace(record, steps=old.steps)
        return True

    async def mpps_for_study(self, study_instance_uid: str) -> tuple[MppsRecord, ...]:
        return tuple(r for r in self.rows.values() if study_instance_uid in r.study_uids)


class Stream:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data

    async def read_all(self, limit: int) -> bytes:
        if len(self.data) > limit:
            raise ValueError("too large")
        return self.data

    async def drain(self) -> None:
        return None


class Channel:
    @property
    def info(self) -> AssociationInfo:
        context = AcceptedContext(1, MPPS, TS)
        return AssociationInfo("MODALITY", "MINIPACS", "192.0.2.9", 1000,
                               Negotiated({1: context}, 16384))


def request(message: Any, ds: Dataset | None, sop_class: str = MPPS,
            transfer_syntax: str = TS) -> Request:
    data = None if ds is None else Stream(encode_implicit_le(ds))
    return Request(AcceptedContext(1, sop_class, transfer_syntax), message, data)


def create_ds(status: str = "IN PROGRESS", steps: tuple[tuple[str, str], ...] = (
        (STUDY, "SPS-1"), (STUDY, "SPS-2"))) -> Dataset:
    ds = mpps_create([scheduled_step(study, sps) for study, sps in steps],
                     patient=("Müller^Jürgen", "PID-61"), pps_id="PPS-61",
                     start=("20240105", "101500"), status=status)
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def completion(status: str = "COMPLETED") -> Dataset:
    return mpps_final(status, end=("20240105", "103000"), series_uid=f"{STUDY}.1")


class Hook:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, tuple[tuple[str, str], ...]]] = []
        self.fail = fail

    async def __call__(self, status: str, steps: tuple[tuple[str, str], ...]) -> None:
        self.calls.append((status, steps))
        if self.fail:
            raise RuntimeError("worklist down")


async def create(service: MppsService, ds: Dataset | None, uid: str | None = PPS_UID
                 ) -> NCreateRSP:
    outcome = await service.create(Channel(), request(
        NCreateRQ(message_id=1, affected_sop_class_uid=MPPS, affected_sop_instance_uid=uid),
        ds))
    assert isinstance(outcome.message, NCreateRSP)
    return outcome.message


async def n_set(service: MppsService, ds: Dataset | None, uid: str = PPS_UID) -> NSetRSP:
    outcome = await service.set(Channel(), request(
        NSetRQ(message_id=2, requested_sop_class_uid=MPPS, requested_sop_instance_uid=uid),
        ds))
    assert isinstance(outcome.message, NSetRSP)
    return outcome.message


async def test_lifecycle_stores_merges_and_calls_the_hook_once() -> None:
    index, hook = FakeIndex(), Hook()
    service = MppsService(index, on_step_ended=hook)
    rsp = await create(service, create_ds())
    assert rsp.status == Status.SUCCESS and rsp.affected_sop_instance_uid == PPS_UID
    stored = index.rows[PPS_UID]
    assert stored.steps == ((STUDY, "SPS-1"), (STUDY, "SPS-2"))
    assert (stored.status, stored.patient_id, stored.station_ae) == ("IN PROGRESS", "PID-61",
                                                                     "CT01")
    comment = Dataset()
    comment.CommentsOnThePerformedProcedureStep = "contrast given"
    assert (await n_set(service, comment)).status == Status.SUCCESS
    assert hook.calls == []
    assert (await n_set(service, completion())).status == Status.SUCCESS
    record = index.rows[PPS_UID]
    assert (record.status, record.end_date) == ("COMPLETED", "20240105")
    assert record.dataset["00400280"]["Value"] == ["contrast given"]  # kept from the 1st set
    assert record.dataset["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]
    series = record.dataset["00400340"]["Value"]
    assert len(series) == 1 and series[0]["00181030"]["Value"] == ["Chest"]
    assert hook.calls == [("COMPLETED", ((STUDY, "SPS-1"), (STUDY, "SPS-2")))]
    again = await n_set(service, completion("DISCONTINUED"))
    assert (again.status, again.error_id) == (Status.PROCESSING_FAILURE,
                                              ERROR_ID_MAY_NO_LONGER_BE_UPDATED)
    assert len(hook.calls) == 1


async def test_concurrent_final_sets_end_the_step_once() -> None:
    index, hook = FakeIndex(), Hook()
    service = MppsService(index, on_step_ended=hook)
    await create(service, create_ds(steps=((STUDY, ""),)))
    answers = await asyncio.gather(n_set(service, completion()),
                                   n_set(service, completion("DISCONTINUED")))
    assert sorted(a.status for a in answers) == [Status.SUCCESS, Status.PROCESSING_FAILURE]
    assert hook.calls == [("COMPLETED", ((STUDY, ""),))]


async def test_a_failing_hook_does_not_fail_the_n_set(caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    index = FakeIndex()
    service = MppsService(index, on_step_ended=Hook(fail=True))
    await create(service, create_ds())
    assert (await n_set(service, completion())).status == Status.SUCCESS
    assert index.rows[PPS_UID].status == "COMPLETED"
    assert "step-ended hook failed" in caplog.text


@pytest.mark.parametrize(("edit", "status", "tags"), [
    (lambda ds: delattr(ds, "Modality"), Status.MISSING_ATTRIBUTE, (0x00080060,)),
    (lambda ds: delattr(ds, "PerformedStationAETitle"), Status.MISSING_ATTRIBUTE,
     (0x00400241,)),
    (lambda ds: setattr(ds, "PerformedProcedureStepStartDate", None),
     Status.MISSING_ATTRIBUTE_VALUE, (0x00400244,)),
    (lambda ds: setattr(ds, "ScheduledStepAttributesSequence", []),
     Status.MISSING_ATTRIBUTE_VALUE, (0x00400270,)),
    (lambda ds: delattr(ds.ScheduledStepAttributesSequence[1], "StudyInstanceUID"),
     Status.MISSING_ATTRIBUTE, (0x0020000D,)),
])
async def test_create_refuses_missing_type_1(edit: Any, status: Status,
                                             tags: tuple[int, ...]) -> None:
    index = FakeIndex()
    ds = create_ds()
    edit(ds)
    rsp = await create(MppsService(index), ds)
    assert (rsp.status, rsp.attribute_identifier_list) == (status, tags)
    assert index.rows == {}


async def test_create_refusals() -> None:
    index = FakeIndex()
    service = MppsService(index)
    outcome = await service.create(Channel(), request(
        NCreateRQ(message_id=1, affected_sop_class_uid=MPPS, affected_sop_instance_uid=PPS_UID),
        create_ds("COMPLETED")))
    assert outcome.message.status == Status.INVALID_ATTRIBUTE_VALUE
    assert outcome.message.has_dataset and outcome.dataset is not None
    assert decode_identifier(outcome.dataset, TS).PerformedProcedureStepStatus == "COMPLETED"
    assert (await create(service, create_ds(), uid="1.2.x")).status == \
        Status.INVALID_OBJECT_INSTANCE
    missing = await create(service, None)
    assert missing.status == Status.MISSING_ATTRIBUTE
    assert 0x00400252 in (missing.attribute_identifier_list or ())
    garbage = await service.create(Channel(), Request(
        AcceptedContext(1, MPPS, TS),
        NCreateRQ(message_id=1, affected_sop_class_uid=MPPS), Stream(b"\x10\x00\x10\x00\xff")))
    assert garbage.message.status == Status.PROCESSING_FAILURE
    assert (await create(MppsService(index, max_dataset_bytes=64), create_ds())).status == \
        Status.RESOURCE_LIMITATION
    assert index.rows == {}
    assert (await create(service, create_ds())).status == Status.SUCCESS
    duplicate = await create(service, create_ds())
    assert duplicate.status == Status.DUPLICATE_SOP_INSTANCE
    # The one UID grammar (proto/uid.py): a leading-zero component is accepted everywhere.
    assert (await create(service, create_ds(), uid="1.2.03")).status == Status.SUCCESS


async def test_scp_assigns_the_uid() -> None:
    index = FakeIndex()
    rsp = await create(MppsService(index), create_ds(), uid=None)
    assert rsp.status == Status.SUCCESS
    assert rsp.affected_sop_instance_uid is not None
    assert rsp.affected_sop_instance_uid.startswith("2.25.")
    assert list(index.rows) == [rsp.affected_sop_instance_uid]


async def test_set_refusals() -> None:
    index, hook = FakeIndex(), Hook()
    service = MppsService(index, on_step_ended=hook)
    assert (await n_set(service, completion(), uid="1.2.3.4")).status == \
        Status.NO_SUCH_SOP_INSTANCE
    await create(service, create_ds())
    before = index.rows[PPS_UID]
    patient = Dataset()
    patient.PatientID = "OTHER"
    patient.Modality = "MR"
    refused = await n_set(service, patient)
    assert refused.status == Status.NO_SUCH_ATTRIBUTE
    assert refused.attribute_identifier_list == (0x00080060, 0x00100020)
    paused = Dataset()
    paused.PerformedProcedureStepStatus = "PAUSED"
    assert (await n_set(service, paused)).status == Status.INVALID_ATTRIBUTE_VALUE
    no_end = completion()
    del no_end.PerformedProcedureStepEndDate
    no_end.PerformedSeriesSequence = []
    early = await n_set(service, no_end)
    assert early.status == Status.MISSING_ATTRIBUTE_VALUE
    assert early.attribute_identifier_list == (0x00400250, 0x00400340)
    bad_series = completion()
    del bad_series.PerformedSeriesSequence[0].SeriesInstanceUID
    assert (await n_set(service, bad_series)).attribute_identifier_list == (0x0020000E,)
    assert index.rows[PPS_UID] == before and hook.calls == []


async def test_n_get_returns_the_listed_attributes_or_all() -> None:
    index = FakeIndex()
    service = MppsService(index)
    await create(service, create_ds())

    async def get(uid: str, tags: tuple[int, ...] | None) -> tuple[NGetRSP, Dataset | None]:
        outcome = await service.get(Channel(), request(
            NGetRQ(message_id=3, requested_sop_class_uid=MPPS_RETRIEVE,
                   requested_sop_instance_uid=uid, attribute_identifier_list=tags),
            None, MPPS_RETRIEVE, EXPLICIT_VR_LITTLE_ENDIAN))
        assert isinstance(outcome.message, NGetRSP)
        ds = None if outcome.dataset is None else decode_identifier(
            outcome.dataset, EXPLICIT_VR_LITTLE_ENDIAN)
        return outcome.message, ds

    rsp, ds = await get(PPS_UID, (0x00400252, 0x00100010))
    assert rsp.status == Status.SUCCESS and rsp.affected_sop_instance_uid == PPS_UID
    assert ds is not None
    assert {elem.keyword for elem in ds} == {"SpecificCharacterSet", "PatientName",
                                             "PerformedProcedureStepStatus"}
    assert (ds.PatientName, ds.SpecificCharacterSet) == ("Müller^Jürgen", "ISO_IR 100")
    rsp, ds = await get(PPS_UID, None)
    assert ds is not None and ds.ScheduledStepAttributesSequence[1].ScheduledProcedureStepID \
        == "SPS-2"
    rsp, ds = await get("1.2.3.4", None)
    assert (rsp.status, ds) == (Status.NO_SUCH_SOP_INSTANCE, None)
