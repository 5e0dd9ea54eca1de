"""MPPS SCP over real sockets: pynetdicom as the modality against the whole in-process server.

N-CREATE → N-SET → N-SET COMPLETED (or DISCONTINUED), N-GET through MPPS Retrieve, every
refusal with the status PS3.4 F.7.2 names, and the link from a stored study to its MPPS in
the SQL index (a real SQLite file).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from minipacs.app.daemon import open_server
from minipacs.index.engine import make_engine
from minipacs.index.mpps import SqlMppsIndex
from minipacs.proto.sop import MPPS, MPPS_RETRIEVE
from minipacs.proto.status import Status
from minipacs.services.mpps import ERROR_ID_MAY_NO_LONGER_BE_UPDATED
from tests.mpps_data import mpps_create, mpps_final, scheduled_step
from tests.support import (
    LOOPBACK,
    TEST_LIMITS,
    UID_ROOT,
    WAIT,
    make_config,
    make_ct,
    pynetdicom_ae,
)

SERVER_AE: Final = "MINIPACS"
STUDY: Final = f"{UID_ROOT}.1"  # the study make_ct's instances belong to
PPS: Final = f"{UID_ROOT}.70"
_T = TypeVar("_T")


@dataclass
class Pacs:
    port: int
    db_url: str


@contextlib.asynccontextmanager
async def running(tmp_path: Path, db_url: str) -> AsyncIterator[Pacs]:
    config = make_config(tmp_path, ae_title=SERVER_AE, limits=TEST_LIMITS,
                         storage={"min_free_mb": 0}, database={"url": db_url})
    async with asyncio.timeout(WAIT):
        server_cm = open_server(config)
        server = await server_cm.__aenter__()
    try:
        yield Pacs(server.port, config.database.url)
    finally:
        async with asyncio.timeout(WAIT):
            await server_cm.__aexit__(None, None, None)


@pytest.fixture
async def pacs(tmp_path: Path, db_url: str) -> AsyncIterator[Pacs]:
    async with running(tmp_path, db_url) as found:
        yield found


@dataclass
class Modality:
    """A pynetdicom association with the MPPS contexts; the command sets it received."""

    assoc: Any
    commands: list[Dataset] = field(default_factory=list)
    datasets: list[bytes] = field(default_factory=list)

    def create(self, ds: Dataset | None, uid: str | None = PPS) -> Dataset:
        status, _ = self.assoc.send_n_create(ds, MPPS, uid)
        return status

    def set(self, ds: Dataset, uid: str = PPS) -> Dataset:
        status, _ = self.assoc.send_n_set(ds, MPPS, uid)
        return status

    def get(self, tags: list[int] | None, uid: str = PPS,
            sop_class: str = MPPS_RETRIEVE) -> tuple[Dataset, Dataset | None]:
        return self.assoc.send_n_get(tags, sop_class, uid)  # type: ignore[no-any-return]


@contextlib.contextmanager
def modality(port: int, *contexts: str) -> Iterator[Modality]:
    from pynetdicom import evt

    ae = pynetdicom_ae("CT01")
    for sop_class in contexts or (MPPS, MPPS_RETRIEVE):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    received = Modality(None)

    def on_dimse(event: Any) -> None:
        received.commands.append(event.message.command_set)
        data = getattr(event.message, "data_set", None)
        received.datasets.append(data.getvalue() if data is not None else b"")

    assoc = ae.associate(LOOPBACK, port, ae_title=SERVER_AE,
                         evt_handlers=[(evt.EVT_DIMSE_RECV, on_dimse)])
    assert assoc.is_established
    received.assoc = assoc
    try:
        yield received
    finally:
        assoc.release()


async def as_modality(port: int, work: Callable[[Modality], _T]) -> _T:
    """Run `work` on a fresh association in a thread (never block the server's loop)."""
    def run() -> _T:
        with modality(port) as peer:
            return work(peer)
    return await asyncio.to_thread(run)


def tag_list(value: Any) -> list[int]:
    """An AT element's value as a list (pydicom gives one tag bare)."""
    return [int(value)] if isinstance(value, int) else [int(tag) for tag in value]


def create_ds(status: str = "IN PROGRESS") -> Dataset:
    steps = (scheduled_step(STUDY, "SPS-70", "ACC-70"),
             scheduled_step(f"{UID_ROOT}.71", "SPS-71"))
    return mpps_create(steps, patient=("Test^Loopback", "LOOP-1"), pps_id="PPS-70",
                       start=("20240101", "090000"), status=status)


def final_ds(status: str = "COMPLETED") -> Dataset:
    image = Dataset()
    image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    image.ReferencedSOPInstanceUID = f"{UID_ROOT}.3.1"
    return mpps_final(status, end=("20240101", "093000"), series_uid=f"{UID_ROOT}.2",
                      images=[image])


def store_ct(port: int) -> None:
    ae = pynetdicom_ae("CT01")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, port, ae_title=SERVER_AE)
    assert assoc.is_established
    try:
        ds = make_ct(pixel_bytes=1024)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        status = assoc.send_c_store(ds)
        assert status.Status == Status.SUCCESS
    finally:
        assoc.release()


async def test_create_set_complete_is_stored_and_linked_to_the_study(pacs: Pacs) -> None:
    await asyncio.to_thread(store_ct, pacs.port)

    def procedure(peer: Modality) -> list[Any]:
        created = peer.create(create_ds())
        description = Dataset()
        description.PerformedProcedureStepDescription = "CT chest"
        updated = peer.set(description)
        done = peer.set(final_ds())
        frozen = peer.set(description)
        return [created, updated, done, frozen, peer.get([0x00400252, 0x00400254]),
                peer.get(None)]

    created, updated, done, frozen, (got, some), (_, whole) = \
        await as_modality(pacs.port, procedure)
    assert [s.Status for s in (created, updated, done)] == [Status.SUCCESS] * 3
    assert frozen.Status == Status.PROCESSING_FAILURE
    assert frozen.ErrorID == ERROR_ID_MAY_NO_LONGER_BE_UPDATED
    assert got.Status == Status.SUCCESS
    assert (some.PerformedProcedureStepStatus, some.PerformedProcedureStepDescription) == \
        ("COMPLETED", "CT chest")
    assert "PatientID" not in some
    assert whole.PatientID == "LOOP-1"
    assert whole.PerformedSeriesSequence[0].ReferencedImageSequence[0] \
        .ReferencedSOPInstanceUID == f"{UID_ROOT}.3.1"
    engine = make_engine(pacs.db_url)
    try:
        index = SqlMppsIndex(engine)
        (record,) = await index.mpps_for_study(STUDY)
        assert (record.sop_instance_uid, record.status, record.calling_ae) == \
            (PPS, "COMPLETED", "CT01")
        assert (record.end_date, record.end_time, record.station_ae) == \
            ("20240101", "093000", "CT01")
        assert record.steps == ((STUDY, "SPS-70"), (f"{UID_ROOT}.71", "SPS-71"))
        # Linked where the Study Instance UID matches a stored study, and only there.
        assert await index.linked_studies(PPS) == (STUDY,)
        assert await index.mpps_for_study(f"{UID_ROOT}.99") == ()
    finally:
        engine.dispose()


async def test_discontinue_and_scp_assigned_uid(pacs: Pacs) -> None:
    def procedure(peer: Modality) -> tuple[Any, ...]:
        created = peer.create(create_ds(), uid=None)
        uid = peer.commands[-1].AffectedSOPInstanceUID
        stopped = peer.set(final_ds("DISCONTINUED"), uid=uid)
        again = peer.set(final_ds("COMPLETED"), uid=uid)
        return created, uid, stopped, again, peer.get([0x00400252], uid=uid)

    created, uid, stopped, again, (got, attributes) = await as_modality(pacs.port, procedure)
    assert created.Status == Status.SUCCESS and uid.startswith("2.25.")
    assert stopped.Status == Status.SUCCESS
    assert (again.Status, again.ErrorID) == (Status.PROCESSING_FAILURE,
                                            ERROR_ID_MAY_NO_LONGER_BE_UPDATED)
    assert got.Status == Status.SUCCESS
    assert attributes.PerformedProcedureStepStatus == "DISCONTINUED"


async def test_refusals_carry_the_status_the_standard_names(pacs: Pacs) -> None:
    def refusals(peer: Modality) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["not in progress"] = peer.create(create_ds("COMPLETED")).Status
        out["not in progress data"] = peer.datasets[-1]
        no_modality = create_ds()
        del no_modality.Modality
        out["missing"] = peer.create(no_modality).Status
        out["missing list"] = tag_list(peer.commands[-1].AttributeIdentifierList)
        empty_station = create_ds()
        empty_station.PerformedStationAETitle = None
        out["empty"] = peer.create(empty_station).Status
        out["created"] = peer.create(create_ds()).Status
        out["duplicate"] = peer.create(create_ds()).Status
        out["unknown"] = peer.set(final_ds(), uid=f"{UID_ROOT}.404").Status
        patient = Dataset()
        patient.PatientName = "Other^Name"
        refused = peer.set(patient)
        out["not allowed"] = (refused.Status, tag_list(refused.AttributeIdentifierList))
        paused = Dataset()
        paused.PerformedProcedureStepStatus = "PAUSED"
        out["bad status"] = peer.set(paused).Status
        early = final_ds()
        del early.PerformedProcedureStepEndTime
        early.PerformedSeriesSequence = []
        incomplete = peer.set(early)
        out["incomplete"] = (incomplete.Status, tag_list(incomplete.AttributeIdentifierList))
        out["still in progress"] = peer.get([0x00400252])[1].PerformedProcedureStepStatus
        out["get unknown"] = peer.get(None, uid=f"{UID_ROOT}.404")[0].Status
        out["get on MPPS"] = peer.get(None, sop_class=MPPS)[0].Status
        status, _ = peer.assoc.send_n_create(create_ds(), MPPS_RETRIEVE, f"{UID_ROOT}.72")
        out["create on Retrieve"] = status.Status
        return out

    out = await as_modality(pacs.port, refusals)
    assert out["not in progress"] == Status.INVALID_ATTRIBUTE_VALUE  # F.7.2.1.3
    assert b"COMPLETED" in out["not in progress data"]  # the Attribute List comes back
    assert out["missing"] == Status.MISSING_ATTRIBUTE
    assert out["missing list"] == [0x00080060]
    assert out["empty"] == Status.MISSING_ATTRIBUTE_VALUE
    assert out["created"] == Status.SUCCESS
    assert out["duplicate"] == Status.DUPLICATE_SOP_INSTANCE
    assert out["unknown"] == Status.NO_SUCH_SOP_INSTANCE
    assert out["not allowed"] == (Status.NO_SUCH_ATTRIBUTE, [0x00100010])
    assert out["bad status"] == Status.INVALID_ATTRIBUTE_VALUE
    assert out["incomplete"] == (Status.MISSING_ATTRIBUTE_VALUE, [0x00400251, 0x00400340])
    assert out["still in progress"] == "IN PROGRESS"  # no refused N-SET changed it
    assert out["get unknown"] == Status.NO_SUCH_SOP_INSTANCE
    # The MPPS class has no N-GET and MPPS Retrieve no N-CREATE (PS3.4 F.7.1, F.8.1).
    assert out["get on MPPS"] == Status.SOP_CLASS_NOT_SUPPORTED
    assert out["create on Retrieve"] == Status.SOP_CLASS_NOT_SUPPORTED
