"""The Upper Layer state machine against PS3.8 §9.2: Table 9-10 cell by cell, Tables 9-6 to 9-9
next states, and every (State, Event) pair driven through a real `Association`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pytest

from minipacs.proto.association import (
    Aborted,
    Association,
    AssociationAccepted,
    AssociationEvent,
    AssociationRejected,
    AssociationRequested,
    CommandReceived,
    LocalProtocolError,
    ReleaseConfirmed,
    ReleaseRequested,
)
from minipacs.proto.command_codec import encode_command
from minipacs.proto.dimse import CEchoRQ
from minipacs.proto.fsm import NEXT_STATE, TRANSITIONS, Action, Event, State, next_state
from minipacs.proto.negotiation import negotiate_as_acceptor
from minipacs.proto.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AbortSource,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    Pdu,
    RejectReason,
    RejectResult,
    RejectSource,
)
from minipacs.proto.pdu_codec import encode_pdata, encode_pdu
from minipacs.proto.sop import VERIFICATION

from .pair import (
    ACCEPTOR_STATES,
    ECHO_CONTEXT,
    REQUESTOR_STATES,
    AssociationPair,
    decode_all,
    drain_events,
    reach_state,
)

# PS3.8 Table 9-10, laid out as the standard prints it: one row per event, one column per
# state, "." for an empty cell.  Written out independently of fsm.py and checked cell by cell
# against two other transcriptions of the table (DCMTK's dcmnet/dulfsm and pynetdicom's fsm),
# which agree with each other on all 123 cells.
TABLE_9_10: Final = """
        Sta1  Sta2  Sta3  Sta4  Sta5  Sta6  Sta7  Sta8  Sta9  Sta10 Sta11 Sta12 Sta13
Evt1    AE-1  .     .     .     .     .     .     .     .     .     .     .     .
Evt2    .     .     .     AE-2  .     .     .     .     .     .     .     .     .
Evt3    .     AA-1  AA-8  .     AE-3  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt4    .     AA-1  AA-8  .     AE-4  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt5    AE-5  .     .     .     .     .     .     .     .     .     .     .     .
Evt6    .     AE-6  AA-8  .     AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-7
Evt7    .     .     AE-7  .     .     .     .     .     .     .     .     .     .
Evt8    .     .     AE-8  .     .     .     .     .     .     .     .     .     .
Evt9    .     .     .     .     .     DT-1  .     AR-7  .     .     .     .     .
Evt10   .     AA-1  AA-8  .     AA-8  DT-2  AR-6  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt11   .     .     .     .     .     AR-1  .     .     .     .     .     .     .
Evt12   .     AA-1  AA-8  .     AA-8  AR-2  AR-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt13   .     AA-1  AA-8  .     AA-8  AA-8  AR-3  AA-8  AA-8  AR-10 AR-3  AA-8  AA-6
Evt14   .     .     .     .     .     .     .     AR-4  AR-9  .     .     AR-4  .
Evt15   .     .     AA-1  AA-2  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  .
Evt16   .     AA-2  AA-3  .     AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-2
Evt17   .     AA-5  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AR-5
Evt18   .     AA-2  .     .     .     .     .     .     .     .     .     .     AA-2
Evt19   .     AA-1  AA-8  .     AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-7
"""

# PS3.8 Tables 9-6 to 9-9, the "next state" of every action ("?" = decided at run time).
NEXT_STATES: Final = """
AE-1 Sta4   AE-2 Sta5   AE-3 Sta6   AE-4 Sta1   AE-5 Sta2   AE-6 ?      AE-7 Sta6   AE-8 Sta13
DT-1 Sta6   DT-2 Sta6
AR-1 Sta7   AR-2 Sta8   AR-3 Sta1   AR-4 Sta13  AR-5 Sta1   AR-6 Sta7   AR-7 Sta8   AR-8 ?
AR-9 Sta11  AR-10 Sta12
AA-1 Sta13  AA-2 Sta1   AA-3 Sta1   AA-4 Sta1   AA-5 Sta1   AA-6 Sta13  AA-7 Sta13  AA-8 Sta13
"""


def _parse_table() -> dict[tuple[str, str], str]:
    header, *rows = TABLE_9_10.strip().splitlines()
    states = header.split()
    cells: dict[tuple[str, str], str] = {}
    for row in rows:
        event, *actions = row.split()
        assert len(actions) == len(states), f"row {event} has {len(actions)} cells"
        for state, action in zip(states, actions, strict=True):
            if action != ".":
                cells[(state, event)] = action
    return cells


def test_table_dimensions() -> None:
    """13 states, 19 events, 28 actions (PS3.8 Tables 9-1 to 9-9), named as in the standard."""
    assert [s.value for s in State] == [f"Sta{i}" for i in range(1, 14)]
    assert [e.value for e in Event] == [f"Evt{i}" for i in range(1, 20)]
    assert len(Action) == 28
    assert all(a.name == a.value.replace("-", "_") for a in Action)
    grid = _parse_table()
    assert len(grid) == 123


def test_every_cell_of_table_9_10_is_transcribed() -> None:
    """Every cell of the standard's table is in TRANSITIONS with the same action."""
    ours = {(s.value, e.value): a.value for (s, e), a in TRANSITIONS.items()}
    missing = {k: v for k, v in _parse_table().items() if ours.get(k) != v}
    assert not missing, f"cells of Table 9-10 missing or different in fsm.py: {missing}"


def test_no_transition_outside_table_9_10() -> None:
    """TRANSITIONS holds nothing the standard's table does not."""
    grid = _parse_table()
    extra = {
        (s.value, e.value): a.value
        for (s, e), a in TRANSITIONS.items()
        if grid.get((s.value, e.value)) != a.value
    }
    assert not extra, f"fsm.py transitions not in Table 9-10: {extra}"


def test_every_action_is_used() -> None:
    """Each action of Tables 9-6 to 9-9 appears in Table 9-10."""
    assert set(TRANSITIONS.values()) == set(Action)


def test_next_states_of_tables_9_6_to_9_9() -> None:
    words = NEXT_STATES.split()
    expected = dict(zip(words[::2], words[1::2], strict=True))
    assert set(expected) == {a.value for a in Action}
    ours = {a.value: (s.value if s is not None else "?") for a, s in NEXT_STATE.items()}
    assert ours == expected


@pytest.mark.parametrize("is_requestor", [True, False])
def test_fixed_next_state_ignores_role(is_requestor: bool) -> None:
    for action, state in NEXT_STATE.items():
        if state is not None:
            assert next_state(action, is_requestor=is_requestor) is state


def test_ae6_next_state() -> None:
    """AE-6: Sta3 when the service provider accepts the RQ, Sta13 after it rejects it."""
    for role in (True, False):
        assert next_state(Action.AE_6, is_requestor=role) is State.STA3
        assert next_state(Action.AE_6, is_requestor=role, provider_rejected=True) is State.STA13


def test_ar8_next_state() -> None:
    """AR-8: Sta9 for the association-requestor, Sta10 for the acceptor."""
    assert next_state(Action.AR_8, is_requestor=True) is State.STA9
    assert next_state(Action.AR_8, is_requestor=False) is State.STA10


# --- every (State, Event) pair through a real Association ------------------------------------

USER_EVENTS: Final = frozenset(
    {Event.EVT1, Event.EVT7, Event.EVT8, Event.EVT9, Event.EVT11, Event.EVT14, Event.EVT15}
)
PDU_EVENTS: Final = frozenset(
    {Event.EVT3, Event.EVT4, Event.EVT6, Event.EVT10, Event.EVT12, Event.EVT13, Event.EVT16,
     Event.EVT19}
)
# Which side can be in each state (PS3.8 Table 9-1 to 9-5 definitions).

# What each action puts on the wire (Tables 9-6 to 9-9); absent = nothing.
SENDS: Final[dict[Action, type[Pdu]]] = {
    Action.AE_2: AAssociateRQ,
    Action.AE_7: AAssociateAC,
    Action.AE_8: AAssociateRJ,
    Action.DT_1: PDataTF,
    Action.AR_1: AReleaseRQ,
    Action.AR_4: AReleaseRP,
    Action.AR_7: PDataTF,
    Action.AR_9: AReleaseRP,
    Action.AA_1: AAbort,
    Action.AA_7: AAbort,
    Action.AA_8: AAbort,
}
# The indication/confirmation primitive each action issues to the user; absent = none.
EMITS: Final[dict[Action, type[AssociationEvent]]] = {
    Action.AE_3: AssociationAccepted,
    Action.AE_4: AssociationRejected,
    Action.AE_6: AssociationRequested,
    Action.DT_2: CommandReceived,
    Action.AR_2: ReleaseRequested,
    Action.AR_3: ReleaseConfirmed,
    Action.AR_6: CommandReceived,
    Action.AR_8: ReleaseRequested,
    Action.AR_10: ReleaseConfirmed,
    Action.AA_1: Aborted,
    Action.AA_3: Aborted,
    Action.AA_4: Aborted,
    Action.AA_8: Aborted,
}
STARTS_ARTIM: Final = frozenset({Action.AE_5, Action.AE_8, Action.AR_4, Action.AA_1, Action.AA_8})
STOPS_ARTIM: Final = frozenset({Action.AE_6, Action.AR_5, Action.AA_2, Action.AA_5})

REJECT: Final = AAssociateRJ(RejectResult.PERMANENT, RejectSource.SERVICE_USER,
                             RejectReason.NO_REASON)
ECHO_PDATA: Final = encode_pdata(
    ECHO_CONTEXT, encode_command(CEchoRQ(message_id=7, affected_sop_class_uid=VERIFICATION)),
    is_command=True, is_last=True,
)
UNRECOGNIZED_PDU: Final = bytes((0x99, 0, 0, 0, 0, 0))  # PDU type 99H does not exist (§9.3.1)


def _forced(state: State, requestor: bool) -> Association:
    """A fresh association of a role that cannot reach `state`, with the state set directly."""
    assoc = Association(requestor=requestor, max_pdu_length=16384)
    assoc.connection_made()
    assoc.data_to_send()
    drain_events(assoc)
    assoc.state = state
    assoc.artim_running = False
    return assoc


def _driver(event: Event, pair: AssociationPair) -> Callable[[Association], None]:
    """The real call (user primitive, received bytes, transport or timer) that is `event`."""
    request, accept = pair.request, negotiate_as_acceptor(pair.request, pair.policy)
    assert isinstance(accept, AAssociateAC)
    if event is Event.EVT1:
        return lambda a: a.send(request)
    if event in (Event.EVT2, Event.EVT5):
        return lambda a: a.connection_made()
    if event is Event.EVT3:
        return lambda a: a.receive_data(encode_pdu(accept))
    if event is Event.EVT4:
        return lambda a: a.receive_data(encode_pdu(REJECT))
    if event is Event.EVT6:
        return lambda a: a.receive_data(encode_pdu(request))
    if event is Event.EVT7:
        return lambda a: a.send(accept)
    if event is Event.EVT8:
        return lambda a: a.send(REJECT)
    if event is Event.EVT9:
        return lambda a: a.send_command(
            ECHO_CONTEXT, CEchoRQ(message_id=9, affected_sop_class_uid=VERIFICATION))
    if event is Event.EVT10:
        return lambda a: a.receive_data(ECHO_PDATA)
    if event is Event.EVT11:
        return lambda a: a.send(AReleaseRQ())
    if event is Event.EVT12:
        return lambda a: a.receive_data(encode_pdu(AReleaseRQ()))
    if event is Event.EVT13:
        return lambda a: a.receive_data(encode_pdu(AReleaseRP()))
    if event is Event.EVT14:
        return lambda a: a.send(AReleaseRP())
    if event is Event.EVT15:
        return lambda a: a.send(AAbort(AbortSource.SERVICE_USER, 0))
    if event is Event.EVT16:
        return lambda a: a.receive_data(encode_pdu(AAbort(AbortSource.SERVICE_USER, 0)))
    if event is Event.EVT17:
        return lambda a: a.receive_data(b"")
    if event is Event.EVT18:
        return lambda a: a.timer_expired()
    return lambda a: a.receive_data(UNRECOGNIZED_PDU)


@dataclass(frozen=True, slots=True)
class _Case:
    state: State
    event: Event
    requestor: bool

    def __str__(self) -> str:
        role = "requestor" if self.requestor else "acceptor"
        return f"{self.state.value}+{self.event.value} ({role})"


def _cases() -> list[_Case]:
    cases: list[_Case] = []
    for state in State:
        for event in Event:
            if event is Event.EVT2:
                roles = [True]  # only the requestor has a transport connect confirmation
            elif event is Event.EVT5:
                roles = [False]  # only the acceptor has a transport connection indication
            elif state in REQUESTOR_STATES:
                roles = [True]
            elif state in ACCEPTOR_STATES:
                roles = [False]
            else:
                roles = [True, False]
            cases.extend(_Case(state, event, role) for role in roles)
    return cases


def _check(case: _Case) -> list[str]:
    """Drive one (State, Event) pair and list everything that is not as PS3.8 says."""
    natural = not (
        (case.requestor and case.state in ACCEPTOR_STATES)
        or (not case.requestor and case.state in REQUESTOR_STATES)
    )
    if natural:
        assoc, pair = reach_state(case.state, case.requestor)
    else:  # only Evt2 (requestor) and Evt5 (acceptor) are driven on the other role's states
        assert case.event in (Event.EVT2, Event.EVT5), case
        assoc, pair = _forced(case.state, case.requestor), AssociationPair()
    artim_before = assoc.artim_running
    # A refused primitive must leave the association's parameters as they were.
    params_before = (assoc.request, assoc.accept, assoc.peer_max_pdu)
    action = TRANSITIONS.get((case.state, case.event))
    problems: list[str] = []
    try:
        _driver(case.event, pair)(assoc)
    except LocalProtocolError:
        if action is not None or case.event not in USER_EVENTS:
            return [f"LocalProtocolError for {action or 'a received event'}"]
        raised = True
    else:
        raised = False
    sent = decode_all(assoc.data_to_send())
    events = drain_events(assoc)

    if action is None:
        if case.event in USER_EVENTS and not raised:
            problems.append("user primitive outside the table did not raise")
        if case.event in PDU_EVENTS and case.state not in (State.STA1, State.STA4):
            problems.append("a received PDU without a table entry outside Sta1/Sta4")
        if assoc.state is not case.state:
            problems.append(f"state moved to {assoc.state.value}")
        if sent or events:
            problems.append(f"side effects {sent} {events}")
        if assoc.artim_running is not artim_before:
            problems.append("ARTIM changed")
        if (assoc.request, assoc.accept, assoc.peer_max_pdu) != params_before:
            problems.append("association parameters changed")
        return problems

    expected = next_state(action, is_requestor=case.requestor)
    if assoc.state is not expected:
        problems.append(f"{action.value}: state {assoc.state.value}, expected {expected.value}")
    want_pdu = SENDS.get(action)
    if [type(p) for p in sent] != ([want_pdu] if want_pdu else []):
        problems.append(f"{action.value}: sent {sent}")
    want_event = EMITS.get(action)
    if [type(e) for e in events] != ([want_event] if want_event else []):
        problems.append(f"{action.value}: events {events}")
    want_artim = (True if action in STARTS_ARTIM else False if action in STOPS_ARTIM
                  else artim_before)
    if assoc.artim_running is not want_artim:
        problems.append(f"{action.value}: ARTIM running={assoc.artim_running}")
    if assoc.finished is not (expected is State.STA1):
        problems.append(f"{action.value}: finished={assoc.finished} in {assoc.state.value}")
    problems.extend(_check_details(case, action, sent, events))
    return problems


def _check_details(case: _Case, action: Action, sent: list[Pdu],
                   events: list[AssociationEvent]) -> list[str]:
    """Who is named as the abort source, which release indication, whose abort it was."""
    problems: list[str] = []
    if action in (Action.AA_1, Action.AA_7, Action.AA_8) and sent:
        abort = sent[0]
        assert isinstance(abort, AAbort)
        # AA-1 on the user's A-ABORT request carries the service-user source; every abort the
        # provider sends on its own (AA-1 in Sta2, AA-7, AA-8) names the provider.
        user = action is Action.AA_1 and case.event is Event.EVT15
        want = AbortSource.SERVICE_USER if user else AbortSource.SERVICE_PROVIDER
        if abort.source != want:
            problems.append(f"{action.value}: abort source {abort.source}")
    if events and isinstance(events[0], Aborted):
        local = action in (Action.AA_1, Action.AA_8)
        if events[0].local is not local:
            problems.append(f"{action.value}: Aborted.local={events[0].local}")
    if (events and isinstance(events[0], ReleaseRequested)
            and events[0].collision is not (action is Action.AR_8)):
        problems.append(f"{action.value}: collision={events[0].collision}")
    return problems


def test_every_state_event_pair_through_a_real_association() -> None:
    """All 13 x 19 pairs: table cells do what their action says, the rest are refused or
    ignored, and nothing but LocalProtocolError (for a user primitive) ever escapes."""
    cases = _cases()
    assert {(c.state, c.event) for c in cases} == {(s, e) for s in State for e in Event}
    failures = {str(case): problems for case in cases if (problems := _check(case))}
    assert not failures, "\n".join(f"{k}: {v}" for k, v in failures.items())
