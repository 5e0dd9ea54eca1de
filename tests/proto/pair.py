"""Two sans-I/O associations, requestor and acceptor, wired together in memory (no sockets).

`pump()` plays the transport: whatever one side has to send is fed to the other, until
neither has anything left. When a side is `finished` its transport is closed the way an
adapter would close it: its last bytes still go out, then the peer receives `b""` (Evt17),
and nothing crosses the connection afterwards (PS3.8 §9.1.4).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from pydicom.uid import CTImageStorage

from minipacs.proto.association import (
    NEED_DATA,
    Association,
    AssociationEvent,
    AssociationRequested,
)
from minipacs.proto.framer import decode_pdu
from minipacs.proto.fsm import State
from minipacs.proto.negotiation import (
    DEFAULT_MAX_PDU_LENGTH,
    AcceptorPolicy,
    build_associate_rq,
    default_supported,
    negotiate_as_acceptor,
)
from minipacs.proto.pdu import (
    AAssociateAC,
    AAssociateRJ,
    AReleaseRP,
    AReleaseRQ,
    Pdu,
    RejectReason,
    RejectResult,
    RejectSource,
)
from minipacs.proto.pdu_codec import PDU_HEADER_LENGTH
from minipacs.proto.sop import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION

CALLING_AE: Final = "TEST_SCU"
CALLED_AE: Final = "MINIPACS"
NATIVE: Final = (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)
# Context IDs 1 (Verification) and 3 (CT Image Storage): build_associate_rq numbers 1, 3, ...
DEFAULT_CONTEXTS: Final = ((VERIFICATION, NATIVE), (str(CTImageStorage), NATIVE))
ECHO_CONTEXT: Final = 1
STORE_CONTEXT: Final = 3

_HEADER = struct.Struct(">BBI")  # PDU type, reserved, PDU length (PS3.8 §9.3.1)


def drain_events(assoc: Association) -> list[AssociationEvent]:
    """Every event the association has for its user, in order."""
    events: list[AssociationEvent] = []
    while (event := assoc.next_event()) is not NEED_DATA:
        assert not isinstance(event, type(NEED_DATA))
        events.append(event)
    return events


def split_pdus(data: bytes) -> list[tuple[int, int, bytes]]:
    """Cut wire bytes into (PDU type, PDU length, whole PDU), checking they tile exactly."""
    pdus: list[tuple[int, int, bytes]] = []
    offset = 0
    while offset < len(data):
        pdu_type, _, length = _HEADER.unpack_from(data, offset)
        end = offset + PDU_HEADER_LENGTH + length
        assert end <= len(data), "a PDU overruns the bytes produced"
        pdus.append((pdu_type, length, data[offset:end]))
        offset = end
    return pdus


def decode_all(data: bytes) -> list[Pdu]:
    """Decode every PDU in the bytes one side produced."""
    return [decode_pdu(whole) for _, _, whole in split_pdus(data)]


class AssociationPair:
    """A requestor and an acceptor `Association` joined by an in-memory transport."""

    def __init__(
        self,
        *,
        contexts: Sequence[tuple[str, Sequence[str]]] = DEFAULT_CONTEXTS,
        requestor_max_pdu: int = DEFAULT_MAX_PDU_LENGTH,
        acceptor_max_pdu: int = DEFAULT_MAX_PDU_LENGTH,
        policy: AcceptorPolicy | None = None,
    ) -> None:
        self.policy = policy or AcceptorPolicy(
            ae_title=CALLED_AE, supported=default_supported(), max_pdu_length=acceptor_max_pdu
        )
        self.request = build_associate_rq(
            CALLING_AE, CALLED_AE, contexts, max_pdu_length=requestor_max_pdu
        )
        self.requestor = Association(requestor=True, max_pdu_length=requestor_max_pdu)
        self.acceptor = Association(requestor=False, max_pdu_length=self.policy.max_pdu_length)
        self.requestor_events: list[AssociationEvent] = []
        self.acceptor_events: list[AssociationEvent] = []
        # Every chunk written, as (sender, bytes); `dropped` holds what was written after close.
        self.wire: list[tuple[str, bytes]] = []
        self.dropped: list[tuple[str, bytes]] = []
        self.transport_open = False

    # --- transport ----------------------------------------------------------------------

    def connect(self) -> None:
        """A-ASSOCIATE request, then the transport opens on both ends (Evt1, Evt2, Evt5)."""
        self.requestor.send(self.request)
        self.transport_open = True
        self.requestor.connection_made()
        self.acceptor.connection_made()

    def _sides(self) -> tuple[tuple[str, Association, Association, list[AssociationEvent]], ...]:
        return (
            ("requestor", self.requestor, self.acceptor, self.requestor_events),
            ("acceptor", self.acceptor, self.requestor, self.acceptor_events),
        )

    def pump(self, *, close: bool = True) -> None:
        """Move bytes both ways until quiet; with close, a finished side closes the transport."""
        while True:
            moved = False
            for name, src, dst, _ in self._sides():
                data = src.data_to_send()
                if not data:
                    continue
                if self.transport_open:
                    self.wire.append((name, data))
                    dst.receive_data(data)
                    moved = True
                else:
                    self.dropped.append((name, data))
            if close and self.transport_open:
                for _name, src, dst, _ in self._sides():
                    if src.finished:
                        self.transport_open = False
                        dst.receive_data(b"")
                        moved = True
                        break
            for _, src, _, events in self._sides():
                events.extend(drain_events(src))
            if not moved:
                return

    def sent_by(self, name: str) -> list[Pdu]:
        """The PDUs one side ("requestor" or "acceptor") put on the wire so far."""
        return [pdu for sender, data in self.wire if sender == name for pdu in decode_all(data)]

    # --- association life cycle -----------------------------------------------------------

    def respond(self) -> AAssociateAC | AAssociateRJ:
        """Answer the pending A-ASSOCIATE indication with the policy's verdict and pump."""
        requested = [e for e in self.acceptor_events if isinstance(e, AssociationRequested)]
        assert len(requested) == 1, f"expected one A-ASSOCIATE indication: {requested}"
        answer = negotiate_as_acceptor(requested[0].request, self.policy)
        self.acceptor.send(answer)
        self.pump()
        return answer

    def establish(self) -> AAssociateAC:
        """Connect and accept: both sides end in Sta6."""
        self.connect()
        self.pump()
        answer = self.respond()
        assert isinstance(answer, AAssociateAC), f"association rejected: {answer}"
        return answer

    def release(self) -> None:
        """Normal release requested by the requestor and answered by the acceptor."""
        self.requestor.send(AReleaseRQ())
        self.pump()
        self.acceptor.send(AReleaseRP())
        self.pump()

    def clear_events(self) -> None:
        """Forget the events collected so far."""
        self.requestor_events.clear()
        self.acceptor_events.clear()


# --- any state, reached by real traffic -----------------------------------------------------

_REJECT: Final = AAssociateRJ(RejectResult.PERMANENT, RejectSource.SERVICE_USER,
                              RejectReason.CALLING_AE_NOT_RECOGNIZED)
# PS3.8 Table 9-1: the states only one role can be in (the others both can).
REQUESTOR_STATES: Final = frozenset({State.STA4, State.STA5, State.STA9, State.STA11})
ACCEPTOR_STATES: Final = frozenset({State.STA2, State.STA3, State.STA10, State.STA12})


def side(pair: AssociationPair, requestor: bool) -> Association:
    return pair.requestor if requestor else pair.acceptor


def reach_state(state: State, requestor: bool) -> tuple[Association, AssociationPair]:
    """An association of the given role brought into `state` by real traffic."""
    pair = AssociationPair()
    me, peer = side(pair, requestor), side(pair, not requestor)
    if state is State.STA13 and requestor:
        pair.establish()
        me.abort()  # AA-1
    elif state is State.STA13:
        pair.connect()
        pair.pump()
        me.send(_REJECT)  # AE-8
    elif state is State.STA2:
        me.connection_made()
    elif state is State.STA3:
        pair.connect()
        pair.pump()
    elif state is State.STA4:
        me.send(pair.request)
    elif state is State.STA5:
        me.send(pair.request)
        me.connection_made()
    elif state is not State.STA1:
        pair.establish()
        if state is State.STA7:
            me.send(AReleaseRQ())
        elif state is State.STA8:
            peer.send(AReleaseRQ())
            pair.pump()
        elif state in (State.STA9, State.STA10, State.STA11, State.STA12):
            pair.requestor.send(AReleaseRQ())
            pair.acceptor.send(AReleaseRQ())
            pair.pump()  # collision: requestor in Sta9, acceptor in Sta10
            if state in (State.STA11, State.STA12):
                pair.requestor.send(AReleaseRP())
                pair.pump(close=False)
    assert me.state is state, f"reached {me.state} instead of {state}"
    me.data_to_send()
    drain_events(me)
    return me, pair
