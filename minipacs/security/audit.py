"""The audit trail: one JSON line per event, in the DICOM audit message vocabulary.

Each line mirrors the structure of a PS3.15 A.5.1 audit message — EventIdentification,
ActiveParticipant, AuditSourceIdentification, ParticipantObjectIdentification — with the
coded values of A.5.3 (EV (110112, DCM, "Query") and so on). Deviations, for a readable log:
ParticipantObjectQuery holds the matching keys by keyword instead of a base64 data set;
ParticipantObjectDetail is a mapping; an association event carries "TLS" (true/false).

`JsonAuditLog.record` only queues the event; a writer thread formats, writes and flushes the
lines (the event loop never waits for the disk). `close` writes what is queued before it
returns, so a clean shutdown loses nothing. Passcodes and tokens never reach an event.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ..ports import (
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
from ..proto.sop import name_of
from ..proto.status import StatusCategory, category

__all__ = ["JsonAuditLog", "audit_message"]

log = logging.getLogger("minipacs.security")

Coded = dict[str, str]


def _code(code: str, system: str, display: str) -> Coded:
    return {"code": code, "codeSystemName": system, "displayName": display}


# PS3.15 A.5.3 event IDs, PS3.16 CID 400-405 codes; "99MINIPACS" is our private scheme.
APPLICATION_ACTIVITY: Final = _code("110100", "DCM", "Application Activity")
INSTANCES_TRANSFERRED: Final = _code("110104", "DCM", "DICOM Instances Transferred")
STUDY_DELETED: Final = _code("110105", "DCM", "DICOM Study Deleted")
QUERY: Final = _code("110112", "DCM", "Query")
USER_AUTHENTICATION: Final = _code("110114", "DCM", "User Authentication")
LOGIN: Final = _code("110122", "DCM", "Login")
SOURCE_ROLE: Final = _code("110153", "DCM", "Source Role ID")
DESTINATION_ROLE: Final = _code("110152", "DCM", "Destination Role ID")
APPLICATION_LAUNCHER: Final = _code("110151", "DCM", "Application Launcher")
STUDY_UID: Final = _code("110180", "DCM", "Study Instance UID")
URI: Final = _code("12", "RFC-3881", "URI")
PATIENT_NUMBER: Final = _code("2", "RFC-3881", "Patient Number")
_LEVEL_ID_TYPES: Final = {
    "PATIENT": PATIENT_NUMBER,
    "STUDY": STUDY_UID,
    "SERIES": _code("SeriesInstanceUID", "99MINIPACS", "Series Instance UID"),
    "IMAGE": _code("SOPInstanceUID", "99MINIPACS", "SOP Instance UID"),
}
# EventOutcomeIndicator (PS3.15 A.5.1): 0 success, 4 minor failure, 8 serious failure.
SUCCESS: Final = 0
MINOR_FAILURE: Final = 4
SERIOUS_FAILURE: Final = 8
NETWORK_ADDRESS: Final = "2"  # NetworkAccessPointTypeCode: IP address
SYSTEM_OBJECT: Final = "2"  # ParticipantObjectTypeCode
ROLE_PATIENT: Final = "1"  # ParticipantObjectTypeCodeRole
ROLE_REPORT: Final = "3"
ROLE_QUERY: Final = "24"
PERSON: Final = "1"
_WEB_EVENTS: Final = {"find": (QUERY, "E"), "get": (INSTANCES_TRANSFERRED, "R"),
                      "store": (INSTANCES_TRANSFERRED, "C")}


def _requestor(who: Participant, role: Coded | None = SOURCE_ROLE) -> dict[str, Any]:
    """The ActiveParticipant that asked (PS3.15 A.5.2): user if known, else its AE."""
    entry: dict[str, Any] = {"UserID": who.user or who.ae_title or who.host or "-",
                             "UserIsRequestor": True}
    if who.ae_title:
        entry["AlternativeUserID"] = f"AETITLES={who.ae_title}"
    if who.user:
        entry["UserName"] = who.user
    if who.host:
        entry["NetworkAccessPointID"] = who.host
        entry["NetworkAccessPointTypeCode"] = NETWORK_ADDRESS
    if role is not None:
        entry["RoleIDCode"] = role
    return entry


def _ae(title: str, role: Coded | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"UserID": title, "AlternativeUserID": f"AETITLES={title}",
                             "UserIsRequestor": False}
    if role is not None:
        entry["RoleIDCode"] = role
    return entry


def _operator(name: str) -> dict[str, Any]:
    return {"UserID": name, "UserIsRequestor": True, "RoleIDCode": APPLICATION_LAUNCHER}


def _objects(level: str, uids: tuple[str, ...], **detail: Any) -> list[dict[str, Any]]:
    role = ROLE_PATIENT if level == "PATIENT" else ROLE_REPORT
    kind = PERSON if level == "PATIENT" else SYSTEM_OBJECT
    objects = [{"ParticipantObjectID": uid, "ParticipantObjectTypeCode": kind,
                "ParticipantObjectTypeCodeRole": role,
                "ParticipantObjectIDTypeCode": _LEVEL_ID_TYPES.get(level, STUDY_UID)}
               for uid in uids]
    if objects and detail:
        objects[0]["ParticipantObjectDetail"] = detail
    return objects


def _outcome(status: int) -> int:
    """A DIMSE final status as an EventOutcomeIndicator: warnings are successes."""
    if category(status) in (StatusCategory.SUCCESS, StatusCategory.WARNING):
        return SUCCESS
    return MINOR_FAILURE


def audit_message(event: AuditEvent, source: str, when: datetime) -> dict[str, Any]:
    """`event` as a PS3.15 A.5 audit message (a JSON-ready mapping); `source` is our AE."""
    action, outcome, description = "E", SUCCESS, ""
    types: list[Coded] = []
    participants: list[dict[str, Any]] = []
    objects: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    match event:
        case AssociationDecided():
            event_id, types = USER_AUTHENTICATION, [LOGIN]
            outcome = SUCCESS if event.accepted else MINOR_FAILURE
            description = event.reason
            participants = [_requestor(event.requestor), _ae(event.called_ae, DESTINATION_ROLE)]
            extra["TLS"] = event.tls
        case InstancesStored():
            event_id, action = INSTANCES_TRANSFERRED, "C"
            outcome = MINOR_FAILURE if event.failed else SUCCESS
            description = f"{event.failed} instance(s) refused" if event.failed else ""
            participants = [_requestor(event.requestor), _ae(source, DESTINATION_ROLE)]
            objects = [{"ParticipantObjectID": uid, "ParticipantObjectTypeCode": SYSTEM_OBJECT,
                        "ParticipantObjectTypeCodeRole": ROLE_REPORT,
                        "ParticipantObjectIDTypeCode": STUDY_UID,
                        "ParticipantObjectDescription": {"NumberOfInstances": count}}
                       for uid, count in sorted(event.studies.items())]
            extra["Transport"] = event.transport
        case QueryPerformed():
            event_id, outcome = QUERY, _outcome(event.status)
            participants = [_requestor(event.requestor), _ae(source, DESTINATION_ROLE)]
            objects = [{"ParticipantObjectID": event.sop_class,
                        "ParticipantObjectTypeCode": SYSTEM_OBJECT,
                        "ParticipantObjectTypeCodeRole": ROLE_QUERY,
                        "ParticipantObjectIDTypeCode": _code(event.sop_class, "DCM",
                                                             name_of(event.sop_class)),
                        "ParticipantObjectQuery": dict(event.keys),
                        "ParticipantObjectDetail": {"QueryRetrieveLevel": event.level,
                                                    "NumberOfMatches": event.matches,
                                                    "Status": f"0x{event.status:04X}"}}]
        case InstancesRetrieved():
            event_id, action, outcome = INSTANCES_TRANSFERRED, "R", _outcome(event.status)
            participants = [_requestor(event.requestor, role=None), _ae(source, SOURCE_ROLE),
                            _ae(event.destination, DESTINATION_ROLE)]
            objects = _objects(event.level, event.uids, Operation=event.operation,
                               Completed=event.completed, Failed=event.failed,
                               Warning=event.warning, Status=f"0x{event.status:04X}")
        case WebRequest():
            event_id, action = _WEB_EVENTS.get(event.operation, (QUERY, "E"))
            if event.status == 401:
                event_id, action, types = USER_AUTHENTICATION, "E", [LOGIN]
            outcome = SUCCESS if event.status == 0 else MINOR_FAILURE
            description = event.reason
            participants = [_requestor(event.requestor), _ae(source, DESTINATION_ROLE)]
            objects = [{"ParticipantObjectID": event.target,
                        "ParticipantObjectTypeCode": SYSTEM_OBJECT,
                        "ParticipantObjectTypeCodeRole": ROLE_REPORT,
                        "ParticipantObjectIDTypeCode": URI,
                        "ParticipantObjectDetail": {"Method": event.method,
                                                    "Operation": event.operation,
                                                    "HTTPStatus": event.status or None}}]
        case DataDeleted():
            event_id, action = STUDY_DELETED, "D"
            outcome = SUCCESS if event.succeeded else SERIOUS_FAILURE
            description = event.detail
            participants = [_operator(event.operator)]
            objects = _objects(event.level, event.uids, NumberOfInstances=event.instances)
        case MaintenanceRun():
            event_id = APPLICATION_ACTIVITY
            types = [_code(event.command.replace(" ", "-"), "99MINIPACS", event.command)]
            outcome = SUCCESS if event.succeeded else SERIOUS_FAILURE
            description = event.detail
            participants = [_operator(event.operator)]
    identification: dict[str, Any] = {
        "EventID": event_id, "EventActionCode": action,
        "EventDateTime": when.astimezone(UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "EventOutcomeIndicator": outcome,
    }
    if types:
        identification["EventTypeCode"] = types
    if description:
        identification["EventOutcomeDescription"] = description
    message: dict[str, Any] = {"EventIdentification": identification,
                               "ActiveParticipant": participants,
                               "AuditSourceIdentification": {"AuditSourceID": source}}
    if objects:
        message["ParticipantObjectIdentification"] = objects
    return message | extra


class JsonAuditLog:
    """`ports.Audit` writing JSON lines to `path` from its own thread (append, mode 0600)."""

    def __init__(self, path: Path, *, source: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        """Opens (creates) the file at once: an unwritable path fails here, at start."""
        self.path = path
        self.source = source
        self.clock = clock
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._queue: queue.SimpleQueue[tuple[AuditEvent, datetime] | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._write, name="minipacs-audit")
        self._thread.start()

    def record(self, event: AuditEvent) -> None:
        with self._lock:
            if self._closed:
                log.error("audit event after the audit log was closed: %s", type(event).__name__)
                return
            self._queue.put((event, self.clock()))

    def close(self) -> None:
        """Write every queued event, then close the file (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()
        self._file.close()

    def _write(self) -> None:
        failed = False
        while True:
            item = self._queue.get()
            batch = []
            while item is not None:
                batch.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    self._file.write("".join(
                        json.dumps(audit_message(event, self.source, when),
                                   ensure_ascii=False, separators=(",", ":")) + "\n"
                        for event, when in batch))
                    self._file.flush()
                except Exception:
                    if not failed:  # once: a full disk must not flood the operational log
                        log.exception("cannot write the audit log %s", self.path)
                    failed = True
            if item is None:
                return
