"""Security ports: the permission words, the policy every transport asks, the admission of
an association, and the authenticator that gives a verdict on credentials.

DESIGN "Permissions": (calling AE, peer address, user, operation, SOP class) → allowed or
not, one pure policy object built from the configuration. Negotiation refuses the contexts
nothing may use, the dispatcher asks it per request, the HTTP layer asks it per DICOMweb
request (`find` for QIDO-RS, `get` for WADO-RS, `store` for STOW-RS). `AllowAll` is the
policy when none is configured (embedding, unit tests).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

from ..proto.dimse import CommandField
from ..proto.pdu import AAssociateRJ, UserIdentityRQ
from ..proto.sop import (
    MODALITY_WORKLIST_FIND,
    MPPS,
    MPPS_RETRIEVE,
    QR_FIND_SOP_CLASSES,
    QR_GET_SOP_CLASSES,
    QR_MOVE_SOP_CLASSES,
    STORAGE_COMMITMENT_PUSH,
    VERIFICATION,
)


class Operation(enum.StrEnum):
    """The permission words (``peers.<AE>.allow``, ``security.unknown_aes``, user lists)."""

    ECHO = "echo"
    STORE = "store"
    FIND = "find"
    MOVE = "move"
    GET = "get"
    COMMITMENT = "commitment"
    MPPS = "mpps"
    WORKLIST = "worklist"


ALL_OPERATIONS: Final = frozenset(Operation)

# What each non-storage SOP class is used for. Every other class we accept is a Storage SOP
# class: C-STORE from the peer (`store`), or C-STORE sub-operations to it during a C-GET
# (`get`, PS3.4 C.4.3: the storage contexts travel on the requestor's association).
_CLASS_OPERATIONS: Final[Mapping[str, frozenset[Operation]]] = MappingProxyType({
    VERIFICATION: frozenset({Operation.ECHO}),
    **{uid: frozenset({Operation.FIND}) for uid in QR_FIND_SOP_CLASSES},
    **{uid: frozenset({Operation.MOVE}) for uid in QR_MOVE_SOP_CLASSES},
    **{uid: frozenset({Operation.GET}) for uid in QR_GET_SOP_CLASSES},
    MODALITY_WORKLIST_FIND: frozenset({Operation.WORKLIST}),
    MPPS: frozenset({Operation.MPPS}),
    MPPS_RETRIEVE: frozenset({Operation.MPPS}),
    STORAGE_COMMITMENT_PUSH: frozenset({Operation.COMMITMENT}),
})
_STORAGE_USE: Final = frozenset({Operation.STORE, Operation.GET})

_COMMAND_OPERATIONS: Final[Mapping[CommandField, Operation]] = MappingProxyType({
    CommandField.C_ECHO_RQ: Operation.ECHO,
    CommandField.C_STORE_RQ: Operation.STORE,
    CommandField.C_MOVE_RQ: Operation.MOVE,
    CommandField.C_GET_RQ: Operation.GET,
    CommandField.N_ACTION_RQ: Operation.COMMITMENT,
    CommandField.N_CREATE_RQ: Operation.MPPS,
    CommandField.N_SET_RQ: Operation.MPPS,
    CommandField.N_GET_RQ: Operation.MPPS,
})


def describe_operations(operations: frozenset[Operation]) -> str:
    """'[all]', '[]' or '[echo, store]': permission words as the configuration writes them."""
    if operations == ALL_OPERATIONS:
        return "[all]"
    return "[" + ", ".join(op.value for op in Operation if op in operations) + "]"


def class_operations(sop_class: str) -> frozenset[Operation]:
    """The operations a presentation context of `sop_class` may serve (any one suffices)."""
    return _CLASS_OPERATIONS.get(sop_class, _STORAGE_USE)


def request_operation(command: int, sop_class: str) -> Operation | None:
    """The permission word a DIMSE request needs; None for requests we never serve."""
    if command == CommandField.C_FIND_RQ:
        return Operation.WORKLIST if sop_class == MODALITY_WORKLIST_FIND else Operation.FIND
    try:
        return _COMMAND_OPERATIONS.get(CommandField(command))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who asks: the peer address, the authenticated user (None: anonymous), the AE title
    (None over HTTP), and whether the connection is TLS."""

    peer_host: str
    user: str | None = None
    calling_ae: str | None = None
    tls: bool = False


class Permissions(Protocol):
    """The policy: whether `who` may perform `operation` (on `sop_class`, when known)."""

    def allowed(self, who: Principal, operation: Operation, sop_class: str | None = None
                ) -> bool: ...


class AllowAll:
    """Every principal may do everything (no security configured)."""

    def allowed(self, who: Principal, operation: Operation, sop_class: str | None = None
                ) -> bool:
        return True


# --- admission of an association ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """What the listener knows when an A-ASSOCIATE-RQ arrives."""

    calling_ae: str
    called_ae: str
    peer_host: str
    tls: bool
    identity: UserIdentityRQ | None  # PS3.7 D.3.3.7.1, as the requestor sent it


@dataclass(frozen=True, slots=True)
class Admission:
    """The verdict: refused (`rejection` to send, `reason` for the log), or admitted with
    the operations it may perform and the user identity answer (PS3.7 D.3.3.7.2) to send."""

    operations: frozenset[Operation] = frozenset()
    user: str | None = None
    identity_response: bytes | None = None  # None: no User Identity sub-item in the AC
    rejection: AAssociateRJ | None = None
    reason: str = ""

    def permits(self, sop_class: str) -> bool:
        """Whether a presentation context of `sop_class` can be of any use."""
        return not self.operations.isdisjoint(class_operations(sop_class))


class AssociationGate(Protocol):
    """Decides whether an association may be established and what it may do."""

    async def admit(self, request: AdmissionRequest) -> Admission: ...


class OpenGate:
    """Admits every association with every operation (no security configured)."""

    async def admit(self, request: AdmissionRequest) -> Admission:
        return Admission(ALL_OPERATIONS)


# --- credentials ------------------------------------------------------------------------------


class IdentityMode(enum.StrEnum):
    """User Identity Negotiation (PS3.7 D.3.3.7): ignored, checked when sent, or required."""

    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"


class CredentialKind(enum.StrEnum):
    """What a requestor presents (PS3.7 D.3.3.7.1 types 1, 2, 5; HTTP Basic and Bearer)."""

    USERNAME = "username"  # a bare claim: only for users configured without a passcode
    PASSCODE = "passcode"
    TOKEN = "jwt"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user's claim and its proof. repr() never shows the secret."""

    kind: CredentialKind
    user: str  # the user name; "" for a token (the token names its user)
    secret: str = ""  # the passcode or the token

    def __repr__(self) -> str:
        return f"Credentials({self.kind.value}, user={self.user!r})"


@dataclass(frozen=True, slots=True)
class Verdict:
    """An authenticator's answer: the user it proved, or why not (for the log, never for
    the peer)."""

    user: str | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.user is not None


class Authenticator(Protocol):
    """Checks credentials (scrypt-hashed passcodes, JSON Web Tokens)."""

    async def verify(self, credentials: Credentials) -> Verdict: ...


class Throttle(Protocol):
    """Slows down repeated authentication failures from one address."""

    def failed(self, address: str) -> float:
        """Record a failure; the seconds to hold its answer."""
        ...

    def succeeded(self, address: str) -> None: ...


class NoThrottle:
    """Failures are answered at once."""

    def failed(self, address: str) -> float:
        return 0.0

    def succeeded(self, address: str) -> None:
        return None
