"""Audit port: the security-relevant events, typed, that services and transports record.

DESIGN "Audit": `Audit.record(event)` never blocks and never fails the caller; the adapter
(``minipacs.security.audit``) writes one JSON line per event, named after the DICOM audit
message vocabulary (PS3.15 A.5), off the event loop. The operational log is another stream.
No event carries a passcode or a token: only user names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol

_EMPTY: Final[Mapping[str, int]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Participant:
    """Who acted (PS3.15 A.5.2 ActiveParticipant): an AE, a host, a user, each if known."""

    ae_title: str | None = None
    host: str | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True)
class AssociationDecided:
    """An association accepted or refused, and why (a refusal for a bad identity included)."""

    requestor: Participant
    called_ae: str
    tls: bool
    accepted: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class InstancesStored:
    """Instances received on one association or STOW-RS request: count per study."""

    requestor: Participant
    studies: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    failed: int = 0
    transport: str = "DIMSE"  # or "DICOMweb"


@dataclass(frozen=True, slots=True)
class QueryPerformed:
    """One C-FIND: its level, the keys asked with their values, how many answers went out."""

    requestor: Participant
    sop_class: str
    level: str
    keys: Mapping[str, str]
    matches: int
    status: int


@dataclass(frozen=True, slots=True)
class InstancesRetrieved:
    """One C-MOVE or C-GET: what was asked for, where it went, the sub-operation counts."""

    requestor: Participant
    operation: str  # "C-MOVE" or "C-GET"
    destination: str  # the move destination AE, or the requestor's for C-GET
    level: str
    uids: tuple[str, ...]  # the values of the level's unique key
    completed: int
    failed: int
    warning: int
    status: int


@dataclass(frozen=True, slots=True)
class WebRequest:
    """One DICOMweb request as the permission check saw it (401/403 included)."""

    requestor: Participant
    operation: str  # the permission word asked for
    method: str
    target: str  # path and query string
    status: int  # 0 when allowed (the answer follows), else 401 or 403
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DataDeleted:
    """`minipacs delete`: what was removed from the archive."""

    operator: str  # the operating-system user who ran the command
    level: str
    uids: tuple[str, ...]
    instances: int
    succeeded: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MaintenanceRun:
    """A maintenance command (db upgrade, check, rebuild, backup) and how it ended."""

    operator: str
    command: str
    succeeded: bool
    detail: str = ""


AuditEvent = (AssociationDecided | InstancesStored | QueryPerformed | InstancesRetrieved
              | WebRequest | DataDeleted | MaintenanceRun)


class Audit(Protocol):
    """Where audit events go. `record` returns at once and never raises."""

    def record(self, event: AuditEvent) -> None: ...


class NoAudit:
    """No audit trail configured: events are dropped."""

    def record(self, event: AuditEvent) -> None:
        return None


NO_AUDIT: Final = NoAudit()
