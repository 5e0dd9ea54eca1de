"""SqlMppsIndex on a real, migrated database (both backends): create once, final state once."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import Engine

from minipacs.index.mpps import SqlMppsIndex
from minipacs.ports import MppsRecord

UID = "1.2.826.0.1.3680043.8.498.4242.90"
STUDY = "1.2.826.0.1.3680043.8.498.4242.91"


def record(status: str = "IN PROGRESS") -> MppsRecord:
    return MppsRecord(
        sop_instance_uid=UID, status=status,
        dataset={"00400252": {"vr": "CS", "Value": [status]},
                 "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Ñúñez^Zoë"}]}},
        patient_id="PID-9", modality="CT", station_ae="CT01-WITH-A-LONG-AE-TITLE",
        start_date="20240301", start_time="120000", calling_ae="CT01",
        steps=((STUDY, "SPS-1"), (STUDY, "SPS-2"), ("", "SPS-3")))


async def test_create_get_update_and_link(engine: Engine) -> None:
    index = SqlMppsIndex(engine)
    assert await index.create_mpps(record())
    assert not await index.create_mpps(record())  # duplicate: nothing written
    got = await index.get_mpps(UID)
    assert got is not None and got.created is not None and got.updated == got.created
    assert got.steps == ((STUDY, "SPS-1"), (STUDY, "SPS-2"), ("", "SPS-3"))
    assert got.study_uids == (STUDY,)
    assert got.station_ae == "CT01-WITH-A-LONG"  # the key is cut to AE's 16 characters
    assert got.dataset["00100010"]["Value"] == [{"Alphabetic": "Ñúñez^Zoë"}]
    done = replace(record("COMPLETED"), end_date="20240301", steps=())
    assert await index.update_mpps(done)
    again = await index.get_mpps(UID)
    assert again is not None
    assert (again.status, again.end_date, again.steps) == ("COMPLETED", "20240301", got.steps)
    assert again.updated is not None and again.updated >= got.updated
    assert not await index.update_mpps(replace(done, status="DISCONTINUED"))  # final: frozen
    assert (await index.get_mpps(UID)).status == "COMPLETED"  # type: ignore[union-attr]
    assert [r.sop_instance_uid for r in await index.mpps_for_study(STUDY)] == [UID]
    assert await index.mpps_for_study("1.2.3") == ()
    assert await index.linked_studies(UID) == ()  # no image of that study is stored
    assert await index.get_mpps("1.2.3") is None
    assert not await index.update_mpps(replace(done, sop_instance_uid="1.2.3"))
