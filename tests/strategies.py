"""Hypothesis strategies for the sans-I/O core: valid PDUs and DIMSE messages, and hostile
mutations of their bytes (tests/proto/test_fuzz.py, tests/services/test_identifier_fuzz.py).

Values are drawn so that a valid one survives a round trip: UIDs and AE titles without the
padding (trailing NUL or space) a decoder strips, lengths within their fields.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Final

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from minipacs.proto.dimse import _MESSAGE_CLASSES, DimseMessage, Priority
from minipacs.proto.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    AsyncOpsWindow,
    ContextResult,
    ItemType,
    PDataTF,
    Pdu,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationDataValue,
    RawItem,
    RoleSelection,
    SopClassCommonExtended,
    SopClassExtended,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
)

# CI runs each property this many times (MINIPACS_FUZZ_EXAMPLES raises it for a long run).
EXAMPLES: Final = int(os.environ.get("MINIPACS_FUZZ_EXAMPLES", "300"))
# Shrinking a failure can take hypothesis minutes, past the tests' 60 s timeout: CI prints
# the failing input as found (and a reproduction blob); MINIPACS_FUZZ_SHRINK=1 shrinks it.
_PHASES: Final = tuple(Phase) if os.environ.get("MINIPACS_FUZZ_SHRINK") else tuple(
    phase for phase in Phase if phase is not Phase.shrink)
FUZZ: Final = settings(max_examples=EXAMPLES, deadline=None, print_blob=True, phases=_PHASES,
                       suppress_health_check=[HealthCheck.too_slow,
                                              HealthCheck.data_too_large])

_U16 = st.integers(0, 0xFFFF)
_U32 = st.integers(0, 0xFFFFFFFF)
# PS3.5 §9.1: components of digits without leading zeros, joined by periods.
UIDS = st.from_regex(r"\A[12](\.(0|[1-9][0-9]{0,8})){1,6}\Z", fullmatch=True)
# PS3.5 §6.2 AE: no backslash or controls; no leading or trailing space (not significant).
AE_TITLES = st.from_regex(r"\A[A-Z0-9_\-]([A-Z0-9_\- ]{0,14}[A-Z0-9_\-])?\Z", fullmatch=True)
_LO = st.from_regex(r"\A[A-Za-z0-9]([A-Za-z0-9 .,:'()-]{0,62}[A-Za-z0-9])?\Z", fullmatch=True)
_KNOWN_ITEMS = frozenset(ItemType)


def _user_information(acceptor: bool) -> st.SearchStrategy[UserInformation]:
    identity = st.builds(UserIdentityAC, st.binary(max_size=64)) if acceptor else st.builds(
        UserIdentityRQ, st.integers(0, 255), st.booleans(), st.binary(max_size=64),
        st.binary(max_size=64))
    return st.builds(
        UserInformation,
        max_length=st.none() | _U32,
        implementation_class_uid=st.none() | UIDS,
        implementation_version_name=st.none() | AE_TITLES,
        async_ops_window=st.none() | st.builds(AsyncOpsWindow, _U16, _U16),
        role_selections=st.lists(st.builds(RoleSelection, UIDS, st.booleans(), st.booleans()),
                                 max_size=3).map(tuple),
        sop_class_extended=st.lists(st.builds(SopClassExtended, UIDS, st.binary(max_size=8)),
                                    max_size=2).map(tuple),
        sop_class_common_extended=st.lists(st.builds(
            SopClassCommonExtended, UIDS, UIDS, st.lists(UIDS, max_size=3).map(tuple)),
            max_size=2).map(tuple),
        user_identity=st.none() | identity,
        unknown_items=st.lists(st.builds(
            RawItem, st.integers(0x5A, 0xFF).filter(lambda t: t not in _KNOWN_ITEMS),
            st.binary(max_size=16)), max_size=2).map(tuple),
    )


_CONTEXT_IDS = st.lists(st.integers(0, 127), min_size=1, max_size=8, unique=True).map(
    lambda ids: [2 * i + 1 for i in ids])


@st.composite
def associate_rqs(draw: st.DrawFn) -> AAssociateRQ:
    """A-ASSOCIATE-RQ PDUs (PS3.8 §9.3.2) as a requestor may send them."""
    contexts = tuple(PresentationContextRQ(cid, draw(UIDS), tuple(draw(st.lists(
        UIDS, min_size=1, max_size=3)))) for cid in draw(_CONTEXT_IDS))
    return AAssociateRQ(draw(AE_TITLES), draw(AE_TITLES), contexts,
                        draw(_user_information(acceptor=False)), draw(UIDS),
                        draw(st.integers(0, 0xFFFF)))


@st.composite
def associate_acs(draw: st.DrawFn) -> AAssociateAC:
    """A-ASSOCIATE-AC PDUs (PS3.8 §9.3.3); a rejected context carries no transfer syntax."""
    contexts = []
    for cid in draw(_CONTEXT_IDS):
        result = draw(st.sampled_from(ContextResult))
        syntax = draw(UIDS) if result is ContextResult.ACCEPTANCE else ""
        contexts.append(PresentationContextAC(cid, result, syntax))
    return AAssociateAC(draw(AE_TITLES), draw(AE_TITLES), tuple(contexts),
                        draw(_user_information(acceptor=True)), draw(UIDS),
                        draw(st.integers(0, 0xFFFF)))


PDATA = st.builds(PDataTF, st.lists(st.builds(
    PresentationDataValue, st.integers(0, 255), st.booleans(), st.booleans(),
    st.binary(max_size=300)), min_size=1, max_size=4).map(tuple))
PDUS: Final[st.SearchStrategy[Pdu]] = st.one_of(
    associate_rqs(), associate_acs(), PDATA,
    st.builds(AAssociateRJ, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    st.just(AReleaseRQ()), st.just(AReleaseRP()),
    st.builds(AAbort, st.integers(0, 255), st.integers(0, 255)),
)


# --- DIMSE messages -------------------------------------------------------------------------

_AT = st.lists(_U32, min_size=1, max_size=4).map(tuple)
_FIELDS: Final[dict[str, st.SearchStrategy[Any]]] = {
    "message_id": _U16, "message_id_being_responded_to": _U16, "status": _U16,
    "affected_sop_class_uid": UIDS, "requested_sop_class_uid": UIDS,
    "affected_sop_instance_uid": UIDS, "requested_sop_instance_uid": UIDS,
    "error_comment": _LO, "priority": st.sampled_from(Priority), "has_dataset": st.booleans(),
    "move_originator_ae_title": AE_TITLES, "move_destination": AE_TITLES,
    "move_originator_message_id": _U16, "offending_element": _AT,
    "attribute_identifier_list": _AT, "error_id": _U16, "event_type_id": _U16,
    "action_type_id": _U16, "number_of_remaining_suboperations": _U16,
    "number_of_completed_suboperations": _U16, "number_of_failed_suboperations": _U16,
    "number_of_warning_suboperations": _U16,
}


def _message(cls: type[DimseMessage]) -> st.SearchStrategy[DimseMessage]:
    arguments: dict[str, st.SearchStrategy[Any]] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = _FIELDS[field.name]
        optional = field.default is None
        arguments[field.name] = st.none() | value if optional else value
    return st.builds(cls, **arguments)


MESSAGES: Final[st.SearchStrategy[DimseMessage]] = st.one_of(
    *(_message(cls) for cls in _MESSAGE_CLASSES))


# --- hostile bytes --------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few byte replacements, insertions, deletions or a truncation."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 3))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == 0 and out:
            out[at] = draw(st.sampled_from((0x00, 0x01, 0x7F, 0x80, 0xFF))
                           | st.integers(0, 255))
        elif kind == 1:
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == 2:
            del out[at:at + draw(st.integers(1, 8))]
        else:
            del out[at:]
    return bytes(out)
