"""SqlWorklist on a real, migrated database (both backends): items in, steps out, marked."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from minipacs.index.worklist import SqlWorklist

SPS_SEQUENCE = "00400100"


def item(accession: str, *steps: tuple[str, str]) -> dict[str, Any]:
    return {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Ñúñez^Zoë"}]},
        "00100020": {"vr": "LO", "Value": ["PID-7"]},
        "00080050": {"vr": "SH", "Value": [accession]},
        "0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.8.498.4242.95"]},
        SPS_SEQUENCE: {"vr": "SQ", "Value": [
            {"00080060": {"vr": "CS", "Value": [modality]},
             "00400009": {"vr": "SH", "Value": [sps_id]},
             "00400002": {"vr": "DA", "Value": ["20260110"]},
             "00400003": {"vr": "TM", "Value": ["0800"]}} for modality, sps_id in steps]},
    }


async def test_steps_stored_listed_and_marked(engine: Engine) -> None:
    worklist = SqlWorklist(engine)
    long_accession = "ACC-" + "9" * 30  # SH holds 16: found in the field all the same
    ids = worklist.add_items([item(long_accession, ("CT", "SPS1"), ("MR", "SPS2"))])
    assert len(ids) == 1 and len(ids[0]) == 2
    steps = worklist.list_steps()
    assert [(s.modality, s.sps_id, s.accession_number, s.patient_name) for s in steps] == [
        ("CT", "SPS1", long_accession[:16], "Ñúñez^Zoë"),
        ("MR", "SPS2", long_accession[:16], "Ñúñez^Zoë")]
    assert await worklist.mark_steps("COMPLETED", [("", "SPS2")]) == 1
    assert [s.status for s in worklist.list_steps()] == ["", "COMPLETED"]
    assert worklist.remove_steps([ids[0][0], 999]) == [999]  # all or nothing
    assert len(worklist.list_steps()) == 2
    assert worklist.remove_steps([ids[0][0]]) == []
    assert [s.sps_id for s in worklist.list_steps()] == ["SPS2"]
