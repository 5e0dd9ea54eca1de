"""The DICOM Upper Layer state machine, transcribed from PS3.8 §9.2 (Tables 9-6 to 9-10).

`TRANSITIONS[(State, Event)]` is Table 9-10 cell by cell; `NEXT_STATE[Action]` is the "next
state" column of the action definitions (Tables 9-6 to 9-9). Two actions choose their next
state at run time, as the standard says: AE-6 (Sta3, or Sta13 after a provider rejection) and
AR-8 (Sta9 for the association-requestor, Sta10 for the acceptor). A (State, Event) pair that
is not in the table is not a valid transition: the association treats it as a protocol error.
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    """PS3.8 Table 9-1."""

    STA1 = "Sta1"  # Idle
    STA2 = "Sta2"  # Transport connection open (awaiting A-ASSOCIATE-RQ PDU)
    STA3 = "Sta3"  # Awaiting local A-ASSOCIATE response primitive
    STA4 = "Sta4"  # Awaiting transport connection opening to complete
    STA5 = "Sta5"  # Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU
    STA6 = "Sta6"  # Association established and ready for data transfer
    STA7 = "Sta7"  # Awaiting A-RELEASE-RP PDU
    STA8 = "Sta8"  # Awaiting local A-RELEASE response primitive
    STA9 = "Sta9"  # Release collision requestor side: awaiting A-RELEASE response
    STA10 = "Sta10"  # Release collision acceptor side: awaiting A-RELEASE-RP PDU
    STA11 = "Sta11"  # Release collision requestor side: awaiting A-RELEASE-RP PDU
    STA12 = "Sta12"  # Release collision acceptor side: awaiting A-RELEASE response
    STA13 = "Sta13"  # Awaiting transport connection close indication


class Event(Enum):
    """PS3.8 Table 9-2."""

    EVT1 = "Evt1"  # A-ASSOCIATE request (local user)
    EVT2 = "Evt2"  # Transport connect confirmation (local transport service)
    EVT3 = "Evt3"  # A-ASSOCIATE-AC PDU (received on transport connection)
    EVT4 = "Evt4"  # A-ASSOCIATE-RJ PDU (received on transport connection)
    EVT5 = "Evt5"  # Transport connection indication (local transport service)
    EVT6 = "Evt6"  # A-ASSOCIATE-RQ PDU (received on transport connection)
    EVT7 = "Evt7"  # A-ASSOCIATE response primitive (accept)
    EVT8 = "Evt8"  # A-ASSOCIATE response primitive (reject)
    EVT9 = "Evt9"  # P-DATA request primitive
    EVT10 = "Evt10"  # P-DATA-TF PDU
    EVT11 = "Evt11"  # A-RELEASE request primitive
    EVT12 = "Evt12"  # A-RELEASE-RQ PDU
    EVT13 = "Evt13"  # A-RELEASE-RP PDU
    EVT14 = "Evt14"  # A-RELEASE response primitive
    EVT15 = "Evt15"  # A-ABORT request primitive
    EVT16 = "Evt16"  # A-ABORT PDU
    EVT17 = "Evt17"  # Transport connection closed indication
    EVT18 = "Evt18"  # ARTIM timer expired
    EVT19 = "Evt19"  # Unrecognized or invalid PDU received


class Action(Enum):
    """PS3.8 Tables 9-6 (AE), 9-7 (DT), 9-8 (AR) and 9-9 (AA)."""

    AE_1 = "AE-1"  # Issue TRANSPORT CONNECT request primitive
    AE_2 = "AE-2"  # Send A-ASSOCIATE-RQ PDU
    AE_3 = "AE-3"  # Issue A-ASSOCIATE confirmation (accept)
    AE_4 = "AE-4"  # Issue A-ASSOCIATE confirmation (reject), close transport
    AE_5 = "AE-5"  # Issue transport connection response, start ARTIM
    AE_6 = "AE-6"  # Stop ARTIM; issue A-ASSOCIATE indication (or reject, start ARTIM)
    AE_7 = "AE-7"  # Send A-ASSOCIATE-AC PDU
    AE_8 = "AE-8"  # Send A-ASSOCIATE-RJ PDU, start ARTIM
    DT_1 = "DT-1"  # Send P-DATA-TF PDU
    DT_2 = "DT-2"  # Issue P-DATA indication
    AR_1 = "AR-1"  # Send A-RELEASE-RQ PDU
    AR_2 = "AR-2"  # Issue A-RELEASE indication
    AR_3 = "AR-3"  # Issue A-RELEASE confirmation, close transport
    AR_4 = "AR-4"  # Send A-RELEASE-RP PDU, start ARTIM
    AR_5 = "AR-5"  # Stop ARTIM
    AR_6 = "AR-6"  # Issue P-DATA indication (while awaiting A-RELEASE-RP)
    AR_7 = "AR-7"  # Send P-DATA-TF PDU (while awaiting local A-RELEASE response)
    AR_8 = "AR-8"  # Issue A-RELEASE indication (release collision)
    AR_9 = "AR-9"  # Send A-RELEASE-RP PDU
    AR_10 = "AR-10"  # Issue A-RELEASE confirmation
    AA_1 = "AA-1"  # Send A-ABORT PDU (service-user source), start ARTIM
    AA_2 = "AA-2"  # Stop ARTIM if running, close transport
    AA_3 = "AA-3"  # Issue A-ABORT or A-P-ABORT indication, close transport
    AA_4 = "AA-4"  # Issue A-P-ABORT indication
    AA_5 = "AA-5"  # Stop ARTIM
    AA_6 = "AA-6"  # Ignore PDU
    AA_7 = "AA-7"  # Send A-ABORT PDU
    AA_8 = "AA-8"  # Send A-ABORT PDU (service-provider source), issue A-P-ABORT, start ARTIM


S = State
E = Event
A = Action

# Next state of each action (Tables 9-6 to 9-9); None = decided at run time (see module doc).
NEXT_STATE: dict[Action, State | None] = {
    A.AE_1: S.STA4,
    A.AE_2: S.STA5,
    A.AE_3: S.STA6,
    A.AE_4: S.STA1,
    A.AE_5: S.STA2,
    A.AE_6: None,
    A.AE_7: S.STA6,
    A.AE_8: S.STA13,
    A.DT_1: S.STA6,
    A.DT_2: S.STA6,
    A.AR_1: S.STA7,
    A.AR_2: S.STA8,
    A.AR_3: S.STA1,
    A.AR_4: S.STA13,
    A.AR_5: S.STA1,
    A.AR_6: S.STA7,
    A.AR_7: S.STA8,
    A.AR_8: None,
    A.AR_9: S.STA11,
    A.AR_10: S.STA12,
    A.AA_1: S.STA13,
    A.AA_2: S.STA1,
    A.AA_3: S.STA1,
    A.AA_4: S.STA1,
    A.AA_5: S.STA1,
    A.AA_6: S.STA13,
    A.AA_7: S.STA13,
    A.AA_8: S.STA13,
}

# The states after association establishment and before close (Sta6 to Sta12).
_ESTABLISHED = (S.STA6, S.STA7, S.STA8, S.STA9, S.STA10, S.STA11, S.STA12)
_RELEASING = (S.STA8, S.STA9, S.STA10, S.STA11, S.STA12)


# Table 9-10, one row per event.  Read against the standard row by row.
_TABLE: dict[Event, dict[State, Action]] = {
    E.EVT1: {S.STA1: A.AE_1},
    E.EVT2: {S.STA4: A.AE_2},
    E.EVT3: {
        S.STA2: A.AA_1,
        S.STA3: A.AA_8,
        S.STA5: A.AE_3,
        **{s: A.AA_8 for s in _ESTABLISHED},
        S.STA13: A.AA_6,
    },
    E.EVT4: {
        S.STA2: A.AA_1,
        S.STA3: A.AA_8,
        S.STA5: A.AE_4,
        **{s: A.AA_8 for s in _ESTABLISHED},
        S.STA13: A.AA_6,
    },
    E.EVT5: {S.STA1: A.AE_5},
    E.EVT6: {
        S.STA2: A.AE_6,
        S.STA3: A.AA_8,
        S.STA5: A.AA_8,
        **{s: A.AA_8 for s in _ESTABLISHED},
        S.STA13: A.AA_7,
    },
    E.EVT7: {S.STA3: A.AE_7},
    E.EVT8: {S.STA3: A.AE_8},
    E.EVT9: {S.STA6: A.DT_1, S.STA8: A.AR_7},
    E.EVT10: {
        S.STA2: A.AA_1,
        S.STA3: A.AA_8,
        S.STA5: A.AA_8,
        S.STA6: A.DT_2,
        S.STA7: A.AR_6,
        **{s: A.AA_8 for s in _RELEASING},
        S.STA13: A.AA_6,
    },
    E.EVT11: {S.STA6: A.AR_1},
    E.EVT12: {
        S.STA2: A.AA_1,
        S.STA3: A.AA_8,
        S.STA5: A.AA_8,
        S.STA6: A.AR_2,
        S.STA7: A.AR_8,
        **{s: A.AA_8 for s in _RELEASING},
        S.STA13: A.AA_6,
    },
    E.EVT13: {
        S.STA2: A.AA_1,
        S.STA3: A.AA_8,
        S.STA5: A.AA_8,
        S.STA6: A.AA_8,
        S.STA7: A.AR_3,
        S.STA8: A.AA_8,
        S.STA9: A.AA_8,
        S.STA10: A.AR_10,
        S.STA11: A.AR_3,
        S.STA12: A.AA_8,
        S.STA13: A.AA_6,
    },
    E.EVT14: {S.STA8: A.AR_4, S.STA9: A.AR_9, S.STA12: A.AR_4},
    E.EVT15: {
        S.STA3: A.AA_1,
        S.STA4: A.AA_2,
        S.STA5: A.AA_1,
        **{s: A.AA_1 for s in _ESTABLISHED},
    },
    E.EVT16: {
        S.STA2: A.AA_2,
        S.STA3: A.AA_3,
        S.STA5: A.AA_3,
        **{s: A.AA_3 for s in _ESTABLISHED},
        S.STA13: A.AA_2,
    },
    E.EVT17: {
        S.STA2: A.AA_5,
        S.STA3: A.AA_4,
        S.STA4: A.AA_4,
        S.STA5: A.AA_4,
        **{s: A.AA_4 for s in _ESTABLISHED},
        S.STA13: A.AR_5,
    },
    E.EVT18: {S.STA2: A.AA_2, S.STA13: A.AA_2},  # AA-2 closes the transport; AR-5 is Evt17's
    E.EVT19: {
        S.STA2: A.AA_1,
        S.STA3: A.AA_8,
        S.STA5: A.AA_8,
        **{s: A.AA_8 for s in _ESTABLISHED},
        S.STA13: A.AA_7,
    },
}

TRANSITIONS: dict[tuple[State, Event], Action] = {
    (state, event): action for event, row in _TABLE.items() for state, action in row.items()
}


def next_state(action: Action, *, is_requestor: bool, provider_rejected: bool = False) -> State:
    """Resolve the next state of an action (PS3.8 Tables 9-6 and 9-8 for AE-6 and AR-8)."""
    fixed = NEXT_STATE[action]
    if fixed is not None:
        return fixed
    if action is A.AE_6:
        return S.STA13 if provider_rejected else S.STA3
    return S.STA9 if is_requestor else S.STA10
