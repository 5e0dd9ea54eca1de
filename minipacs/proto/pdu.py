"""PS3.8 §9.3 PDU structures: one frozen dataclass per PDU and per item, plus their codec.

A dataclass here *is* the PDU (no parallel "primitive" hierarchy). Unknown user-information
sub-items are kept as raw bytes so they round-trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

DICOM_APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"  # PS3.7 A.2.1


class PduType(IntEnum):
    """PS3.8 §9.3.1 PDU types."""

    ASSOCIATE_RQ = 0x01
    ASSOCIATE_AC = 0x02
    ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    RELEASE_RQ = 0x05
    RELEASE_RP = 0x06
    ABORT = 0x07


class ItemType(IntEnum):
    """PS3.8 §9.3.2-9.3.3 and PS3.7 Annex D item types."""

    APPLICATION_CONTEXT = 0x10
    PRESENTATION_CONTEXT_RQ = 0x20
    PRESENTATION_CONTEXT_AC = 0x21
    ABSTRACT_SYNTAX = 0x30
    TRANSFER_SYNTAX = 0x40
    USER_INFORMATION = 0x50
    MAXIMUM_LENGTH = 0x51
    IMPLEMENTATION_CLASS_UID = 0x52
    ASYNCHRONOUS_OPERATIONS_WINDOW = 0x53
    ROLE_SELECTION = 0x54
    IMPLEMENTATION_VERSION_NAME = 0x55
    SOP_CLASS_EXTENDED_NEGOTIATION = 0x56
    SOP_CLASS_COMMON_EXTENDED_NEGOTIATION = 0x57
    USER_IDENTITY_RQ = 0x58
    USER_IDENTITY_AC = 0x59


class UserIdentityType(IntEnum):
    """PS3.7 D.3.3.7.1 User-Identity-Type."""

    USERNAME = 1
    USERNAME_AND_PASSCODE = 2
    KERBEROS = 3
    SAML = 4
    JWT = 5


class ContextResult(IntEnum):
    """PS3.8 §9.3.3.2 presentation context result/reason."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


class RejectResult(IntEnum):
    """PS3.8 §9.3.4 A-ASSOCIATE-RJ result."""

    PERMANENT = 1
    TRANSIENT = 2


class RejectSource(IntEnum):
    """PS3.8 §9.3.4 A-ASSOCIATE-RJ source."""

    SERVICE_USER = 1
    SERVICE_PROVIDER_ACSE = 2
    SERVICE_PROVIDER_PRESENTATION = 3


class RejectReason(IntEnum):
    """PS3.8 §9.3.4 A-ASSOCIATE-RJ reason/diag; its meaning depends on the source."""

    # source 1 (service user)
    NO_REASON = 1
    APPLICATION_CONTEXT_NOT_SUPPORTED = 2
    CALLING_AE_NOT_RECOGNIZED = 3
    CALLED_AE_NOT_RECOGNIZED = 7
    # source 2 (ACSE related): 1 = no reason, 2 = protocol version not supported
    # source 3 (presentation related): 1 = temporary congestion, 2 = local limit exceeded


# Source-specific reason codes that collide numerically with the service-user ones above.
ACSE_PROTOCOL_VERSION_NOT_SUPPORTED = 2
PRESENTATION_TEMPORARY_CONGESTION = 1
PRESENTATION_LOCAL_LIMIT_EXCEEDED = 2


class AbortSource(IntEnum):
    """PS3.8 §9.3.8 A-ABORT source."""

    SERVICE_USER = 0
    SERVICE_PROVIDER = 2


class AbortReason(IntEnum):
    """PS3.8 §9.3.8 A-ABORT reason/diag (meaningful when the source is the provider)."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER_VALUE = 6


@dataclass(frozen=True, slots=True)
class PresentationContextRQ:
    """PS3.8 §9.3.2.2 presentation context item (RQ), with its abstract and transfer syntaxes."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PresentationContextAC:
    """PS3.8 §9.3.3.2 presentation context item (AC); transfer_syntax is "" when not accepted."""

    context_id: int
    result: ContextResult
    transfer_syntax: str = ""


@dataclass(frozen=True, slots=True)
class AsyncOpsWindow:
    """PS3.7 D.3.3.3 asynchronous operations window sub-item; 0 means unlimited."""

    invoked: int
    performed: int


@dataclass(frozen=True, slots=True)
class RoleSelection:
    """PS3.7 D.3.3.4 SCP/SCU role selection sub-item."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool


@dataclass(frozen=True, slots=True)
class SopClassExtended:
    """PS3.7 D.3.3.5 SOP class extended negotiation sub-item (service-specific bytes)."""

    sop_class_uid: str
    info: bytes


@dataclass(frozen=True, slots=True)
class SopClassCommonExtended:
    """PS3.7 D.3.3.6 SOP class common extended negotiation sub-item."""

    sop_class_uid: str
    service_class_uid: str
    related_general_sop_classes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UserIdentityRQ:
    """PS3.7 D.3.3.7.1 user identity sub-item (RQ)."""

    identity_type: int
    positive_response_requested: bool
    primary_field: bytes
    secondary_field: bytes = b""


@dataclass(frozen=True, slots=True)
class UserIdentityAC:
    """PS3.7 D.3.3.7.2 user identity sub-item (AC)."""

    server_response: bytes


@dataclass(frozen=True, slots=True)
class RawItem:
    """An item we do not interpret, kept as received so it round-trips."""

    item_type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class UserInformation:
    """PS3.8 §9.3.2.3 / PS3.7 Annex D user information item and its sub-items.

    max_length is None when the sub-item is absent; 0 means "no limit" (PS3.8 D.1).
    """

    max_length: int | None = None
    implementation_class_uid: str | None = None
    implementation_version_name: str | None = None
    async_ops_window: AsyncOpsWindow | None = None
    role_selections: tuple[RoleSelection, ...] = ()
    sop_class_extended: tuple[SopClassExtended, ...] = ()
    sop_class_common_extended: tuple[SopClassCommonExtended, ...] = ()
    user_identity: UserIdentityRQ | UserIdentityAC | None = None
    unknown_items: tuple[RawItem, ...] = ()


@dataclass(frozen=True, slots=True)
class AAssociateRQ:
    """PS3.8 §9.3.2 A-ASSOCIATE-RQ PDU."""

    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: tuple[PresentationContextRQ, ...]
    user_information: UserInformation = field(default_factory=UserInformation)
    application_context: str = DICOM_APPLICATION_CONTEXT_NAME
    protocol_version: int = 1


@dataclass(frozen=True, slots=True)
class AAssociateAC:
    """PS3.8 §9.3.3 A-ASSOCIATE-AC PDU (AE titles echo the request's, PS3.8 §9.3.3)."""

    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: tuple[PresentationContextAC, ...]
    user_information: UserInformation = field(default_factory=UserInformation)
    application_context: str = DICOM_APPLICATION_CONTEXT_NAME
    protocol_version: int = 1


@dataclass(frozen=True, slots=True)
class AAssociateRJ:
    """PS3.8 §9.3.4 A-ASSOCIATE-RJ PDU."""

    result: int
    source: int
    reason: int


@dataclass(frozen=True, slots=True)
class PresentationDataValue:
    """PS3.8 §9.3.5.1 presentation data value item; flags from its message control header."""

    context_id: int
    is_command: bool
    is_last: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class PDataTF:
    """PS3.8 §9.3.5 P-DATA-TF PDU."""

    pdvs: tuple[PresentationDataValue, ...]


@dataclass(frozen=True, slots=True)
class AReleaseRQ:
    """PS3.8 §9.3.6 A-RELEASE-RQ PDU."""


@dataclass(frozen=True, slots=True)
class AReleaseRP:
    """PS3.8 §9.3.7 A-RELEASE-RP PDU."""


@dataclass(frozen=True, slots=True)
class AAbort:
    """PS3.8 §9.3.8 A-ABORT PDU."""

    source: int = AbortSource.SERVICE_USER
    reason: int = AbortReason.NOT_SPECIFIED


Pdu = AAssociateRQ | AAssociateAC | AAssociateRJ | PDataTF | AReleaseRQ | AReleaseRP | AAbort


# --- in words, for log lines and error messages --------------------------------------------

_REJECT_REASONS: dict[int, dict[int, str]] = {  # PS3.8 §9.3.4, per source
    RejectSource.SERVICE_USER: {
        RejectReason.NO_REASON: "no reason given",
        RejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED: "application context not supported",
        RejectReason.CALLING_AE_NOT_RECOGNIZED: "calling AE title not recognized",
        RejectReason.CALLED_AE_NOT_RECOGNIZED: "called AE title not recognized",
    },
    RejectSource.SERVICE_PROVIDER_ACSE: {
        1: "no reason given",
        ACSE_PROTOCOL_VERSION_NOT_SUPPORTED: "protocol version not supported",
    },
    RejectSource.SERVICE_PROVIDER_PRESENTATION: {
        PRESENTATION_TEMPORARY_CONGESTION: "temporary congestion",
        PRESENTATION_LOCAL_LIMIT_EXCEEDED: "local limit exceeded",
    },
}
_REJECT_SOURCES: dict[int, str] = {
    RejectSource.SERVICE_USER: "service user",
    RejectSource.SERVICE_PROVIDER_ACSE: "service provider (ACSE)",
    RejectSource.SERVICE_PROVIDER_PRESENTATION: "service provider (presentation)",
}
_ABORT_REASONS: dict[int, str] = {  # PS3.8 §9.3.8, meaningful for the provider source
    AbortReason.NOT_SPECIFIED: "reason not specified",
    AbortReason.UNRECOGNIZED_PDU: "unrecognized PDU",
    AbortReason.UNEXPECTED_PDU: "unexpected PDU",
    AbortReason.UNRECOGNIZED_PDU_PARAMETER: "unrecognized PDU parameter",
    AbortReason.UNEXPECTED_PDU_PARAMETER: "unexpected PDU parameter",
    AbortReason.INVALID_PDU_PARAMETER_VALUE: "invalid PDU parameter value",
}


def describe_reject(rj: AAssociateRJ) -> str:
    """Result, source and reason of an A-ASSOCIATE-RJ in words (PS3.8 §9.3.4)."""
    result = {RejectResult.PERMANENT: "permanent", RejectResult.TRANSIENT: "transient"}.get(
        rj.result, f"result {rj.result}")
    source = _REJECT_SOURCES.get(rj.source, f"source {rj.source}")
    reason = _REJECT_REASONS.get(rj.source, {}).get(rj.reason, f"reason {rj.reason}")
    return f"{result}, {source}, {reason}"


def describe_abort(source: int, reason: int) -> str:
    """Source and reason of an A-ABORT in words (PS3.8 §9.3.8)."""
    if source == AbortSource.SERVICE_USER:
        return "by the service user"
    if source == AbortSource.SERVICE_PROVIDER:
        return f"by the service provider: {_ABORT_REASONS.get(reason, f'reason {reason}')}"
    return f"source {source}, reason {reason}"
