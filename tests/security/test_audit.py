"""The audit trail adapter: one JSON line per event in the PS3.15 A.5 vocabulary, written
off the caller's thread, nothing lost on close."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from minipacs.ports import (
    AssociationDecided,
    AuditEvent,
    DataDeleted,
    InstancesRetrieved,
    InstancesStored,
    MaintenanceRun,
    Participant,
    QueryPerformed,
    WebRequest,
)
from minipacs.proto.sop import STUDY_ROOT_QR_FIND
from minipacs.security.audit import JsonAuditLog, audit_message

WHEN = datetime(2025, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)
WS = Participant("WS1", "10.0.0.9", "alice")


def message(event: AuditEvent) -> dict[str, Any]:
    return audit_message(event, "MINIPACS", WHEN)


def event_id(msg: dict[str, Any]) -> tuple[str, str, int]:
    ident = msg["EventIdentification"]
    return ident["EventID"]["code"], ident["EventActionCode"], ident["EventOutcomeIndicator"]


def test_association_accepted_and_refused() -> None:
    accepted = message(AssociationDecided(WS, "MINIPACS", tls=True, accepted=True))
    assert event_id(accepted) == ("110114", "E", 0)  # User Authentication, success
    assert accepted["EventIdentification"]["EventDateTime"] == "2025-03-01T12:30:15.250Z"
    assert accepted["EventIdentification"]["EventTypeCode"][0]["displayName"] == "Login"
    requestor, us = accepted["ActiveParticipant"]
    assert requestor == {"UserID": "alice", "AlternativeUserID": "AETITLES=WS1",
                         "UserName": "alice", "UserIsRequestor": True,
                         "NetworkAccessPointID": "10.0.0.9", "NetworkAccessPointTypeCode": "2",
                         "RoleIDCode": {"code": "110153", "codeSystemName": "DCM",
                                        "displayName": "Source Role ID"}}
    assert us["AlternativeUserID"] == "AETITLES=MINIPACS" and not us["UserIsRequestor"]
    assert accepted["TLS"] is True
    assert accepted["AuditSourceIdentification"] == {"AuditSourceID": "MINIPACS"}
    refused = message(AssociationDecided(Participant("X", "10.0.0.1"), "MINIPACS", tls=False,
                                         accepted=False, reason="user identity: expired"))
    assert event_id(refused) == ("110114", "E", 4)
    assert refused["EventIdentification"]["EventOutcomeDescription"] == "user identity: expired"
    assert refused["ActiveParticipant"][0]["UserID"] == "X"  # no user: the AE title


def test_instances_stored_per_study() -> None:
    msg = message(InstancesStored(WS, {"1.2.3": 2, "1.2.4": 1}, failed=1))
    assert event_id(msg) == ("110104", "C", 4)
    studies = msg["ParticipantObjectIdentification"]
    assert [(s["ParticipantObjectID"], s["ParticipantObjectDescription"]) for s in studies] == [
        ("1.2.3", {"NumberOfInstances": 2}), ("1.2.4", {"NumberOfInstances": 1})]
    assert studies[0]["ParticipantObjectIDTypeCode"]["code"] == "110180"


def test_query() -> None:
    msg = message(QueryPerformed(WS, STUDY_ROOT_QR_FIND, "STUDY",
                                 {"PatientName": "DOE^*"}, 3, 0x0000))
    assert event_id(msg) == ("110112", "E", 0)
    (query,) = msg["ParticipantObjectIdentification"]
    assert query["ParticipantObjectID"] == STUDY_ROOT_QR_FIND
    assert query["ParticipantObjectTypeCodeRole"] == "24"
    assert query["ParticipantObjectQuery"] == {"PatientName": "DOE^*"}
    assert query["ParticipantObjectDetail"] == {"QueryRetrieveLevel": "STUDY",
                                                "NumberOfMatches": 3, "Status": "0x0000"}


def test_retrieve() -> None:
    msg = message(InstancesRetrieved(WS, "C-MOVE", "WS2", "SERIES", ("1.2.3.4",), 5, 1, 0,
                                     0xB000))
    assert event_id(msg) == ("110104", "R", 0)  # a warning status is a success
    roles = [p.get("RoleIDCode", {}).get("displayName") for p in msg["ActiveParticipant"]]
    assert roles == [None, "Source Role ID", "Destination Role ID"]
    assert msg["ActiveParticipant"][2]["UserID"] == "WS2"
    (series,) = msg["ParticipantObjectIdentification"]
    assert series["ParticipantObjectDetail"] == {
        "Operation": "C-MOVE", "Completed": 5, "Failed": 1, "Warning": 0, "Status": "0xB000"}


def test_web_requests_deletes_and_maintenance() -> None:
    web = message(WebRequest(Participant(None, "10.0.0.7", None), "find", "GET",
                             "/dicom-web/studies?PatientID=1", 401, "credentials required"))
    assert event_id(web) == ("110114", "E", 4)
    assert web["ParticipantObjectIdentification"][0]["ParticipantObjectID"] == \
        "/dicom-web/studies?PatientID=1"
    stow = message(WebRequest(Participant(None, "10.0.0.7", "bob"), "store", "POST",
                              "/dicom-web/studies", 0))
    assert event_id(stow) == ("110104", "C", 0)
    deleted = message(DataDeleted("root", "STUDY", ("1.2.3",), 12, succeeded=True))
    assert event_id(deleted) == ("110105", "D", 0)
    assert deleted["ActiveParticipant"][0]["UserID"] == "root"
    assert deleted["ParticipantObjectIdentification"][0]["ParticipantObjectDetail"] == {
        "NumberOfInstances": 12}
    check = message(MaintenanceRun("root", "db check", succeeded=False, detail="2 problems"))
    assert event_id(check) == ("110100", "E", 8)
    assert check["EventIdentification"]["EventTypeCode"][0]["displayName"] == "db check"


def test_writer_keeps_every_line_and_order(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = JsonAuditLog(path, source="MINIPACS")
    writer = audit._thread  # the one writer thread, not the caller's
    assert writer.name == "minipacs-audit" and writer is not threading.current_thread()
    events = [QueryPerformed(WS, STUDY_ROOT_QR_FIND, "STUDY", {"PatientID": str(n)}, n, 0)
              for n in range(2000)]
    for event in events:
        audit.record(event)
    audit.close()  # returns once every queued event is on disk
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2000
    matches = [json.loads(line)["ParticipantObjectIdentification"][0]
               ["ParticipantObjectDetail"]["NumberOfMatches"] for line in lines]
    assert matches == list(range(2000))
    assert path.stat().st_mode & 0o777 == 0o600  # the trail names patients: owner only
    audit.close()  # idempotent


def test_appends_and_refuses_events_after_close(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"earlier": true}\n')
    audit = JsonAuditLog(path, source="MINIPACS")
    audit.record(MaintenanceRun("root", "db backup", succeeded=True))
    audit.close()
    with caplog.at_level(logging.ERROR, logger="minipacs.security"):
        audit.record(MaintenanceRun("root", "db check", succeeded=True))
    assert "after the audit log was closed" in caplog.text
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and lines[0] == '{"earlier": true}'


def test_unwritable_path_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        JsonAuditLog(tmp_path / "missing" / "audit.jsonl", source="MINIPACS")
