"""Association negotiation as pure functions: RQ + local policy -> AC/RJ, and back again.

PS3.8 §7.1 (A-ASSOCIATE parameters, presentation contexts) and PS3.7 Annex D (user
information sub-items: maximum length, implementation identity, asynchronous operations
window, SCP/SCU role selection, SOP class extended negotiation, user identity).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from .pdu import (
    ACSE_PROTOCOL_VERSION_NOT_SUPPORTED,
    PRESENTATION_LOCAL_LIMIT_EXCEEDED,
    PRESENTATION_TEMPORARY_CONGESTION,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AsyncOpsWindow,
    ContextResult,
    PresentationContextAC,
    PresentationContextRQ,
    RejectReason,
    RejectResult,
    RejectSource,
    RoleSelection,
    SopClassExtended,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
)
from .sop import (
    APPLICATION_CONTEXT,
    EXPLICIT_VR_BIG_ENDIAN,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    NORMALIZED_SOP_CLASSES,
    QR_FIND_SOP_CLASSES,
    QR_GET_SOP_CLASSES,
    QR_MOVE_SOP_CLASSES,
    STORAGE_SOP_CLASSES,
    STORAGE_TRANSFER_SYNTAXES,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION,
)

DEFAULT_MAX_PDU_LENGTH: Final = 262_144
DEFAULT_ASYNC_OPS_LIMIT: Final = 16
UNLIMITED: Final = 0  # PS3.8 D.1 (max length) and PS3.7 D.3.3.3 (window): 0 means no limit
MAX_PRESENTATION_CONTEXTS: Final = 128  # odd IDs 1..255, PS3.8 §9.3.2.2
MAX_AE_TITLE_LENGTH: Final = 16  # PS3.5 Table 6.2-1, VR AE
MAX_UINT16: Final = 0xFFFF  # width of the window fields, PS3.7 D.3.3.3.1
MAX_UINT32: Final = 0xFFFF_FFFF  # width of the maximum length field, PS3.8 D.1
PROTOCOL_VERSION_1: Final = 0x0001  # bit 0 (the standard's "bit 1"), PS3.8 §9.3.2

ExtendedHandler = Callable[[bytes], bytes | None]
"""Answers a SOP class extended negotiation request; None means "not supported"."""


class NegotiationError(ValueError):
    """The peer's A-ASSOCIATE-AC contradicts our A-ASSOCIATE-RQ (PS3.8 §7.1.1.14)."""


def _clean(uid: str) -> str:
    """A UID as compared: without the single trailing NUL or space pad (PS3.5 §9.1)."""
    return uid.rstrip("\0 ")


def _ae(title: str) -> str:
    """An AE title as compared: leading and trailing spaces are not significant (PS3.5 6.2)."""
    return title.strip(" ")


_AE_FORBIDDEN: Final = frozenset(chr(c) for c in (*range(0x20), 0x7F)) | {"\\"}


def valid_ae_title(title: str) -> bool:
    """PS3.5 §6.2 AE: default repertoire without backslash and control characters, at most
    16 characters, not only spaces."""
    significant = _ae(title)
    return (0 < len(significant) <= MAX_AE_TITLE_LENGTH and title.isascii()
            and _AE_FORBIDDEN.isdisjoint(title))


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptorPolicy:
    """What we accept on associations that peers open (PS3.8 §7.1, PS3.7 Annex D)."""

    ae_title: str
    check_called_ae: bool = False
    supported: Mapping[str, frozenset[str]]  # abstract syntax -> acceptable transfer syntaxes
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH  # the largest PDU we receive; 0 = no limit
    async_ops_limit: int = DEFAULT_ASYNC_OPS_LIMIT  # 0 = unlimited
    implementation_class_uid: str = IMPLEMENTATION_CLASS_UID
    implementation_version_name: str = IMPLEMENTATION_VERSION_NAME
    # SOP classes for which we act as SCU on a peer's association (C-STORE for C-GET).
    scu_role_classes: frozenset[str] = frozenset()
    extended: Mapping[str, ExtendedHandler] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not 0 <= self.max_pdu_length <= MAX_UINT32:
            raise ValueError(f"max_pdu_length out of range: {self.max_pdu_length}")
        if not 0 <= self.async_ops_limit <= MAX_UINT16:
            raise ValueError(f"async_ops_limit out of range: {self.async_ops_limit}")
        # Freeze the mappings so a shared policy cannot change under a live association.
        frozen = {uid: frozenset(ts) for uid, ts in self.supported.items()}
        object.__setattr__(self, "supported", MappingProxyType(frozen))
        object.__setattr__(self, "extended", MappingProxyType(dict(self.extended)))
        object.__setattr__(self, "scu_role_classes", frozenset(self.scu_role_classes))


def default_supported(extra_storage: Iterable[str] = ()) -> dict[str, frozenset[str]]:
    """Verification and Q/R with native syntaxes; storage classes with every storage syntax."""
    native = frozenset(UNCOMPRESSED_TRANSFER_SYNTAXES)
    storage = frozenset(STORAGE_TRANSFER_SYNTAXES)
    supported = {VERIFICATION: native}
    for uid in (*QR_FIND_SOP_CLASSES, *QR_MOVE_SOP_CLASSES, *QR_GET_SOP_CLASSES,
                *NORMALIZED_SOP_CLASSES):
        supported[uid] = native
    for uid in (*STORAGE_SOP_CLASSES, *extra_storage):
        supported[uid] = storage
    return supported


def association_limit_rejection(*, per_peer: bool = False) -> AAssociateRJ:
    """The answer when we already serve our maximum number of associations (PS3.8 §9.3.4):
    temporary congestion, or "local limit exceeded" when the limit is the peer's own share."""
    return AAssociateRJ(
        result=RejectResult.TRANSIENT,
        source=RejectSource.SERVICE_PROVIDER_PRESENTATION,
        reason=PRESENTATION_LOCAL_LIMIT_EXCEEDED if per_peer else PRESENTATION_TEMPORARY_CONGESTION,
    )


def check_association(rq: AAssociateRQ, policy: AcceptorPolicy) -> AAssociateRJ | None:
    """Association-level checks, ACSE provider first, then the service user (PS3.8 §9.3.4).

    Who may associate beyond these (calling AE titles, user identity) is the access
    policy's decision, taken between this check and `negotiate_as_acceptor`.
    """
    if not rq.protocol_version & PROTOCOL_VERSION_1:  # PS3.8 §9.3.2: only test bit 0
        return AAssociateRJ(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_PROVIDER_ACSE,
            ACSE_PROTOCOL_VERSION_NOT_SUPPORTED,
        )
    if _clean(rq.application_context) != APPLICATION_CONTEXT:  # PS3.7 A.2.1
        return AAssociateRJ(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            RejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED,
        )
    # PS3.5 §6.2: a title with a control character (or a backslash) is no AE title at all,
    # whatever the policy; refusing it also keeps it out of every log line.
    if not valid_ae_title(rq.calling_ae_title):
        return AAssociateRJ(RejectResult.PERMANENT, RejectSource.SERVICE_USER,
                            RejectReason.CALLING_AE_NOT_RECOGNIZED)
    if not valid_ae_title(rq.called_ae_title):
        return AAssociateRJ(RejectResult.PERMANENT, RejectSource.SERVICE_USER,
                            RejectReason.CALLED_AE_NOT_RECOGNIZED)
    if policy.check_called_ae and _ae(rq.called_ae_title) != _ae(policy.ae_title):
        return AAssociateRJ(
            RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.CALLED_AE_NOT_RECOGNIZED
        )
    return None


def choose_transfer_syntax(proposed: Sequence[str], acceptable: frozenset[str]) -> str | None:
    """The proposer's first acceptable syntax; Explicit VR Big Endian only as a last resort.

    PS3.8 §7.1.1.14 lets the acceptor pick any one proposed syntax. We honour the proposer's
    order, except that the retired Big Endian syntax (PS3.5 A.3) loses to any other choice.
    """
    big_endian_offered = False
    for ts in map(_clean, proposed):
        if ts not in acceptable:
            continue
        if ts == EXPLICIT_VR_BIG_ENDIAN:
            big_endian_offered = True
            continue
        return ts
    return EXPLICIT_VR_BIG_ENDIAN if big_endian_offered else None


def _answer_context(
    pc: PresentationContextRQ, supported: Mapping[str, frozenset[str]],
    permitted: Callable[[str], bool] | None,
) -> PresentationContextAC:
    """One presentation context result (PS3.8 §9.3.3.2): a class we support but that the
    requestor may not use is a user rejection (result 1)."""
    abstract = _clean(pc.abstract_syntax)
    acceptable = supported.get(abstract)
    if acceptable is None:
        return PresentationContextAC(pc.context_id, ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED)
    if permitted is not None and not permitted(abstract):
        return PresentationContextAC(pc.context_id, ContextResult.USER_REJECTION)
    ts = choose_transfer_syntax(pc.transfer_syntaxes, acceptable)
    if ts is None:
        return PresentationContextAC(pc.context_id, ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED)
    return PresentationContextAC(pc.context_id, ContextResult.ACCEPTANCE, ts)


def _min_window(proposed: int, limit: int) -> int:
    """The smaller of two window sizes where 0 means unlimited (PS3.7 D.3.3.3)."""
    if proposed == UNLIMITED:
        return limit
    if limit == UNLIMITED:
        return proposed
    return min(proposed, limit)


def _answer_async(rq_window: AsyncOpsWindow | None, limit: int) -> AsyncOpsWindow | None:
    """Window answer: absent when not proposed, else never above the proposal (PS3.7 D.3.3.3)."""
    if rq_window is None:
        return None
    return AsyncOpsWindow(
        invoked=_min_window(rq_window.invoked, limit),
        performed=_min_window(rq_window.performed, limit),
    )


def _answer_roles(
    rq_roles: Sequence[RoleSelection], accepted: frozenset[str], policy: AcceptorPolicy
) -> tuple[RoleSelection, ...]:
    """One answer per proposed role item of an accepted class (PS3.7 D.3.3.4).

    We are SCP of everything we accept, so the requestor's SCU role is echoed; its SCP role
    (we send it requests, as C-STORE for C-GET) only where we can act as SCU. A role that
    was not proposed (0) is never answered with 1.
    """
    answers: list[RoleSelection] = []
    answered: set[str] = set()
    for item in rq_roles:
        uid = _clean(item.sop_class_uid)
        if uid not in accepted or uid in answered:
            continue
        answered.add(uid)
        scp = item.scp_role and uid in policy.scu_role_classes
        answers.append(RoleSelection(uid, scu_role=item.scu_role, scp_role=scp))
    return tuple(answers)


def _answer_extended(
    rq_items: Sequence[SopClassExtended], accepted: frozenset[str], policy: AcceptorPolicy
) -> tuple[SopClassExtended, ...]:
    """Answer only where a handler answers; omitting the item means "not supported".

    PS3.7 D.3.3.5 and PS3.4 C.5.1.1 (an acceptor that does not support it omits it).
    """
    answers: list[SopClassExtended] = []
    for item in rq_items:
        uid = _clean(item.sop_class_uid)
        handler = policy.extended.get(uid)
        if uid not in accepted or handler is None:
            continue
        info = handler(item.info)
        if info is not None:
            answers.append(SopClassExtended(uid, info))
    return tuple(answers)


def negotiate_as_acceptor(rq: AAssociateRQ, policy: AcceptorPolicy, *,
                          permitted: Callable[[str], bool] | None = None,
                          identity_response: bytes | None = None,
                          ) -> AAssociateAC | AAssociateRJ:
    """Answer an A-ASSOCIATE-RQ under our policy (PS3.8 §7.1, PS3.7 Annex D).

    `permitted(abstract_syntax)` says whether this requestor may use a class at all (None:
    every supported class); `identity_response` is the User Identity server response to
    send (PS3.7 D.3.3.7.2), None for no sub-item. When no context is acceptable we still
    accept the association with every context rejected: PS3.8 §7.1.1.14 asks for one
    result per proposed context and leaves the decision to release to the requestor.
    """
    rejection = check_association(rq, policy)
    if rejection is not None:
        return rejection

    results: list[PresentationContextAC] = []
    seen_ids: set[int] = set()
    accepted: set[str] = set()
    for pc in rq.presentation_contexts:
        if pc.context_id in seen_ids:  # a duplicate ID cannot be answered twice
            continue
        seen_ids.add(pc.context_id)
        result = _answer_context(pc, policy.supported, permitted)
        results.append(result)
        if result.result == ContextResult.ACCEPTANCE:
            accepted.add(_clean(pc.abstract_syntax))

    accepted_classes = frozenset(accepted)
    rq_ui = rq.user_information
    # PS3.7 D.3.3.7: the identity is answered only when it was asked for and verified.
    identity = None
    if identity_response is not None and isinstance(rq_ui.user_identity, UserIdentityRQ):
        identity = UserIdentityAC(identity_response)
    user_information = UserInformation(
        max_length=policy.max_pdu_length,
        implementation_class_uid=policy.implementation_class_uid,
        implementation_version_name=policy.implementation_version_name,
        async_ops_window=_answer_async(rq_ui.async_ops_window, policy.async_ops_limit),
        role_selections=_answer_roles(rq_ui.role_selections, accepted_classes, policy),
        sop_class_extended=_answer_extended(rq_ui.sop_class_extended, accepted_classes, policy),
        user_identity=identity,
    )
    return AAssociateAC(
        called_ae_title=rq.called_ae_title,
        calling_ae_title=rq.calling_ae_title,
        presentation_contexts=tuple(results),
        user_information=user_information,
        application_context=APPLICATION_CONTEXT,
        protocol_version=PROTOCOL_VERSION_1,
    )


def build_associate_rq(
    calling_ae: str,
    called_ae: str,
    contexts: Sequence[tuple[str, Sequence[str]]],
    *,
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
    implementation_class_uid: str = IMPLEMENTATION_CLASS_UID,
    implementation_version_name: str = IMPLEMENTATION_VERSION_NAME,
    async_ops: AsyncOpsWindow | None = None,
    roles: Sequence[RoleSelection] = (),
    extended: Sequence[SopClassExtended] = (),
) -> AAssociateRQ:
    """An A-ASSOCIATE-RQ proposing contexts with IDs 1, 3, 5, ... (PS3.8 §9.3.2.2)."""
    for title in (calling_ae, called_ae):
        if not 0 < len(_ae(title)) <= MAX_AE_TITLE_LENGTH:
            raise ValueError(f"AE title must be 1 to 16 characters: {title!r}")
    if not contexts:
        raise ValueError("an A-ASSOCIATE-RQ needs at least one presentation context")
    if len(contexts) > MAX_PRESENTATION_CONTEXTS:
        raise ValueError(
            f"{len(contexts)} presentation contexts proposed; at most "
            f"{MAX_PRESENTATION_CONTEXTS} fit in the odd IDs 1..255"
        )
    if not 0 <= max_pdu_length <= MAX_UINT32:
        raise ValueError(f"max_pdu_length out of range: {max_pdu_length}")
    items: list[PresentationContextRQ] = []
    for index, (abstract_syntax, transfer_syntaxes) in enumerate(contexts):
        if not transfer_syntaxes:
            raise ValueError(f"no transfer syntax proposed for {abstract_syntax}")
        items.append(
            PresentationContextRQ(2 * index + 1, abstract_syntax, tuple(transfer_syntaxes))
        )
    proposed = {abstract for abstract, _ in contexts}
    role_classes = [role.sop_class_uid for role in roles]
    if len(set(role_classes)) != len(role_classes):
        raise ValueError("at most one role selection item per SOP class (PS3.7 D.3.3.4)")
    if not proposed.issuperset(role_classes):
        raise ValueError("role selection proposed for a SOP class without a context")
    return AAssociateRQ(
        called_ae_title=called_ae,
        calling_ae_title=calling_ae,
        presentation_contexts=tuple(items),
        user_information=UserInformation(
            max_length=max_pdu_length,
            implementation_class_uid=implementation_class_uid,
            implementation_version_name=implementation_version_name,
            async_ops_window=async_ops,
            role_selections=tuple(roles),
            sop_class_extended=tuple(extended),
        ),
        application_context=APPLICATION_CONTEXT,
        protocol_version=PROTOCOL_VERSION_1,
    )


@dataclass(frozen=True, slots=True)
class AcceptedContext:
    """An accepted presentation context and the requestor's roles on it (PS3.7 D.3.3.4)."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    scu_role: bool = True  # the requestor may send requests (default role, D.3.3.4)
    scp_role: bool = False  # the requestor may receive requests (e.g. C-STORE in C-GET)


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The outcome of negotiation, as seen by either side (PS3.8 §7.1, PS3.7 Annex D)."""

    contexts: Mapping[int, AcceptedContext]  # accepted contexts only, by context ID
    peer_max_pdu: int  # largest PDU the peer receives; 0 = no limit (PS3.8 D.1)
    async_invoked: int = 1  # requests the requestor may have outstanding; 0 = unlimited
    async_performed: int = 1  # requests the requestor may be performing; 0 = unlimited
    extended: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))


def _requestor_roles(
    rq: AAssociateRQ, ac: AAssociateAC, *, validate: bool
) -> dict[str, tuple[bool, bool]]:
    """The requestor's (SCU, SCP) roles per SOP class that has a role item in both PDUs.

    PS3.7 D.3.3.4: a role holds only when proposed (1) and accepted (1); an answer for a
    role that was not proposed is ignored; with no answer the defaults (SCU only) apply.
    """
    proposed = {_clean(item.sop_class_uid): item for item in rq.user_information.role_selections}
    roles: dict[str, tuple[bool, bool]] = {}
    for answer in ac.user_information.role_selections:
        uid = _clean(answer.sop_class_uid)
        offer = proposed.get(uid)
        if offer is None:
            if validate:
                raise NegotiationError(f"A-ASSOCIATE-AC answers a role item never proposed: {uid}")
            continue
        roles[uid] = (offer.scu_role and answer.scu_role, offer.scp_role and answer.scp_role)
    return roles


def negotiated(rq: AAssociateRQ, ac: AAssociateAC, *, local_is_requestor: bool) -> Negotiated:
    """Combine an RQ and its AC into the association's working parameters.

    On the requestor side the AC is validated against the RQ (PS3.8 §7.1.1.14): accepting
    a context ID or a transfer syntax we never proposed raises NegotiationError.
    """
    proposed = {pc.context_id: pc for pc in rq.presentation_contexts}
    roles = _requestor_roles(rq, ac, validate=local_is_requestor)
    contexts: dict[int, AcceptedContext] = {}
    for result in ac.presentation_contexts:
        if result.result != ContextResult.ACCEPTANCE:
            continue  # a rejected context's transfer syntax is not significant (§9.3.3.2)
        pc = proposed.get(result.context_id)
        if pc is None:
            if local_is_requestor:
                raise NegotiationError(f"context {result.context_id} accepted but not proposed")
            continue
        ts = _clean(result.transfer_syntax)
        if local_is_requestor and ts not in map(_clean, pc.transfer_syntaxes):
            raise NegotiationError(
                f"context {result.context_id} accepted with transfer syntax {ts!r}, "
                "which was not proposed for it"
            )
        abstract = _clean(pc.abstract_syntax)
        scu, scp = roles.get(abstract, (True, False))
        contexts[result.context_id] = AcceptedContext(result.context_id, abstract, ts, scu, scp)

    peer = ac if local_is_requestor else rq
    rq_window = rq.user_information.async_ops_window
    ac_window = ac.user_information.async_ops_window
    # PS3.7 D.3.3.3: without an item on both sides the window is 1/1 (synchronous).
    invoked, performed = (1, 1)
    if rq_window is not None and ac_window is not None:
        invoked, performed = ac_window.invoked, ac_window.performed
    return Negotiated(
        contexts=MappingProxyType(contexts),
        peer_max_pdu=peer.user_information.max_length or UNLIMITED,
        async_invoked=invoked,
        async_performed=performed,
        extended=MappingProxyType(
            {_clean(i.sop_class_uid): i.info for i in ac.user_information.sop_class_extended}
        ),
    )


def find_context(
    negotiated: Negotiated,
    abstract_syntax: str,
    transfer_syntax: str | None = None,
    *,
    we_are_scu: bool,
    local_is_requestor: bool,
) -> AcceptedContext | None:
    """The lowest-ID accepted context on which we may send a request in the given role.

    The roles of a context are the requestor's (PS3.7 D.3.3.4): a requestor sending
    requests needs its SCU role; an acceptor sending requests (C-STORE sub-operations of a
    C-GET) needs the requestor's SCP role.
    """
    needs_requestor_scu = we_are_scu == local_is_requestor
    for context_id in sorted(negotiated.contexts):
        ctx = negotiated.contexts[context_id]
        if ctx.abstract_syntax != abstract_syntax:
            continue
        if transfer_syntax is not None and ctx.transfer_syntax != transfer_syntax:
            continue
        if ctx.scu_role if needs_requestor_scu else ctx.scp_role:
            return ctx
    return None
