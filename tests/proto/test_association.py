"""The sans-I/O association driven with bytes and timer events only (PS3.8 §9, PS3.7 §8 / Annex E
of PS3.8 for DIMSE message framing)."""

from __future__ import annotations

import math
import random
from typing import Final

import pytest
from pydicom.uid import CTImageStorage

from minipacs.proto.association import (
    MAX_COMMAND_SET,
    Aborted,
    Association,
    AssociationAccepted,
    AssociationEvent,
    AssociationRejected,
    AssociationRequested,
    CommandReceived,
    DataReceived,
    LocalProtocolError,
    ReleaseConfirmed,
    ReleaseRequested,
)
from minipacs.proto.command_codec import encode_command
from minipacs.proto.dimse import CEchoRQ, CEchoRSP, CStoreRQ
from minipacs.proto.fsm import State
from minipacs.proto.negotiation import AcceptorPolicy, default_supported
from minipacs.proto.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AbortReason,
    AbortSource,
    AReleaseRP,
    AReleaseRQ,
    ContextResult,
    PDataTF,
    PduType,
    PresentationDataValue,
    RejectReason,
    RejectResult,
    RejectSource,
)
from minipacs.proto.pdu_codec import PDU_HEADER_LENGTH, encode_pdata, encode_pdu
from minipacs.proto.sop import VERIFICATION
from minipacs.proto.status import Status

from .pair import (
    ECHO_CONTEXT,
    NATIVE,
    STORE_CONTEXT,
    AssociationPair,
    decode_all,
    drain_events,
    split_pdus,
)

CT: Final = str(CTImageStorage)
ECHO: Final = CEchoRQ(message_id=1, affected_sop_class_uid=VERIFICATION)
STORE: Final = CStoreRQ(message_id=2, affected_sop_class_uid=CT,
                        affected_sop_instance_uid="1.2.826.0.1.3680043.2.1143.1")
ONE_MB: Final = 1_000_000
# A-RELEASE-RQ on the wire (PS3.8 §9.3.6): type 05H, reserved, length 4, 4 reserved bytes.
RELEASE_RQ_BYTES: Final = bytes.fromhex("05 00 00000004 00000000")
# An unknown PDU type (PS3.8 §9.3.1 defines 01H-07H only) and an A-ABORT of the wrong length.
GARBAGE: Final = {
    "unknown type": (bytes.fromhex("ff00 00000004 deadbeef"), AbortReason.UNRECOGNIZED_PDU),
    "bad length": (bytes.fromhex("0700 00000005 0000000000"),
                   AbortReason.INVALID_PDU_PARAMETER_VALUE),
}


def _command_pdata(context_id: int, message: CEchoRQ | CStoreRQ | CEchoRSP) -> bytes:
    return encode_pdata(context_id, encode_command(message), is_command=True, is_last=True)


def _provider_abort(assoc: Association, reason: int) -> list[AssociationEvent]:
    """Check the association sent one provider A-ABORT with `reason`; return its events."""
    assert decode_all(assoc.data_to_send()) == [AAbort(AbortSource.SERVICE_PROVIDER, reason)]
    events = drain_events(assoc)
    assert len(events) >= 1
    aborted = events[-1]
    assert isinstance(aborted, Aborted)
    assert (aborted.source, aborted.reason, aborted.local) == (
        AbortSource.SERVICE_PROVIDER, reason, True)
    assert aborted.detail
    assert assoc.state is State.STA13
    assert assoc.artim_running
    return events


def _established() -> AssociationPair:
    pair = AssociationPair()
    pair.establish()
    pair.clear_events()
    return pair


# --- establishment, release, rejection --------------------------------------------------------


def test_normal_association_and_release() -> None:
    pair = AssociationPair()
    req, acc = pair.requestor, pair.acceptor
    pair.connect()
    assert (req.state, acc.state) == (State.STA5, State.STA2)
    assert acc.artim_running  # AE-5: waiting for the A-ASSOCIATE-RQ under ARTIM
    pair.pump()
    assert acc.state is State.STA3
    assert not acc.artim_running  # AE-6
    assert pair.acceptor_events == [AssociationRequested(pair.request)]
    ac = pair.respond()
    assert isinstance(ac, AAssociateAC)
    assert (req.state, acc.state) == (State.STA6, State.STA6)
    assert req.established and acc.established
    assert pair.requestor_events == [AssociationAccepted(ac)]
    assert pair.sent_by("requestor") == [pair.request]
    assert pair.sent_by("acceptor") == [ac]
    assert req.accept == acc.accept == ac

    pair.clear_events()
    req.send(AReleaseRQ())
    assert req.state is State.STA7
    assert req.data_to_send() == RELEASE_RQ_BYTES
    acc.receive_data(RELEASE_RQ_BYTES)
    assert drain_events(acc) == [ReleaseRequested(collision=False)]
    assert acc.state is State.STA8
    acc.send(AReleaseRP())
    assert (acc.state, acc.artim_running) == (State.STA13, True)  # AR-4
    pair.pump()
    assert pair.requestor_events == [ReleaseConfirmed()]
    assert (req.state, acc.state) == (State.STA1, State.STA1)
    assert req.finished and acc.finished
    assert not acc.artim_running  # AR-5 on the requestor's close
    assert pair.dropped == []


def test_rejection() -> None:
    policy = AcceptorPolicy(ae_title="SOMEONE_ELSE", supported=default_supported(),
                            check_called_ae=True)
    pair = AssociationPair(policy=policy)
    req, acc = pair.requestor, pair.acceptor
    pair.connect()
    pair.pump()
    rj = AAssociateRJ(RejectResult.PERMANENT, RejectSource.SERVICE_USER,
                      RejectReason.CALLED_AE_NOT_RECOGNIZED)
    acc.send(rj)
    assert (acc.state, acc.artim_running) == (State.STA13, True)  # AE-8
    pair.pump()
    assert pair.requestor_events == [AssociationRejected(rj)]
    assert pair.sent_by("acceptor") == [rj]
    assert req.finished and acc.finished
    assert not acc.artim_running
    assert not req.established and not acc.established


def test_rejection_through_negotiation() -> None:
    """The pair's `respond()` with a refusing policy ends both sides."""
    policy = AcceptorPolicy(ae_title="SOMEONE_ELSE", supported=default_supported(),
                            check_called_ae=True)
    pair = AssociationPair(policy=policy)
    pair.connect()
    pair.pump()
    answer = pair.respond()
    assert isinstance(answer, AAssociateRJ)
    assert [type(e) for e in pair.requestor_events] == [AssociationRejected]
    assert pair.requestor.finished and pair.acceptor.finished


def _collide(first: str) -> AssociationPair:
    """Both sides send A-RELEASE-RQ; each crosses the other on the wire, `first` delivered first."""
    pair = _established()
    req, acc = pair.requestor, pair.acceptor
    req.send(AReleaseRQ())
    acc.send(AReleaseRQ())
    req_rq, acc_rq = req.data_to_send(), acc.data_to_send()
    if first == "requestor":
        acc.receive_data(req_rq)
        req.receive_data(acc_rq)
    else:
        req.receive_data(acc_rq)
        acc.receive_data(req_rq)
    return pair


@pytest.mark.parametrize("first", ["requestor", "acceptor"])
def test_release_collision(first: str) -> None:
    """Both send A-RELEASE-RQ at once (PS3.8 §7.2.2, Table 9-10 release collision rows)."""
    pair = _collide(first)
    req, acc = pair.requestor, pair.acceptor
    req_states, acc_states = [State.STA7, req.state], [State.STA7, acc.state]
    assert drain_events(req) == [ReleaseRequested(collision=True)]
    assert drain_events(acc) == [ReleaseRequested(collision=True)]
    # The acceptor must wait for the requestor's A-RELEASE-RP before answering (Sta10).
    with pytest.raises(LocalProtocolError):
        acc.send(AReleaseRP())
    req.send(AReleaseRP())  # AR-9
    req_states.append(req.state)
    pair.pump()
    acc_states.append(acc.state)
    assert pair.acceptor_events == [ReleaseConfirmed()]  # AR-10
    acc.send(AReleaseRP())  # AR-4
    acc_states.append(acc.state)
    pair.pump()
    req_states.append(req.state)
    acc_states.append(acc.state)
    assert pair.requestor_events == [ReleaseConfirmed()]  # AR-3
    assert [s.value for s in req_states] == ["Sta7", "Sta9", "Sta11", "Sta1"]
    assert [s.value for s in acc_states] == ["Sta7", "Sta10", "Sta12", "Sta13", "Sta1"]
    assert req.finished and acc.finished
    assert pair.dropped == []


def _release_flags(assoc: Association) -> tuple[bool, bool]:
    return assoc.awaiting_release_response, assoc.release_response_due


def test_plain_release_waits_for_the_local_work() -> None:
    """Sta8: the peer awaits our A-RELEASE response, but not *now* (the work may go on)."""
    pair = _established()
    assert _release_flags(pair.acceptor) == (False, False)
    pair.requestor.send(AReleaseRQ())
    pair.pump()
    assert pair.acceptor.state is State.STA8
    assert _release_flags(pair.acceptor) == (True, False)
    assert _release_flags(pair.requestor) == (False, False)  # Sta7: we wait for the peer


@pytest.mark.parametrize("first", ["requestor", "acceptor"])
def test_release_collision_says_when_to_answer(first: str) -> None:
    """PS3.8 §9.2.2: the requestor answers at once (Sta9), the acceptor after the requestor's
    A-RELEASE-RP (Sta12); a driver that answers whenever `release_response_due` ends both."""
    pair = _collide(first)
    req, acc = pair.requestor, pair.acceptor
    assert (req.state, acc.state) == (State.STA9, State.STA10)
    assert _release_flags(req) == (True, True)
    assert _release_flags(acc) == (False, False)  # it must first get the requestor's RP
    answered: list[str] = []
    for _ in range(4):  # bounded: two answers and the closes settle it
        for name, side in (("requestor", req), ("acceptor", acc)):
            if side.release_response_due:
                side.send(AReleaseRP())
                answered.append(f"{name} in {side.state.value}")
        pair.pump()
    assert answered == ["requestor in Sta11", "acceptor in Sta13"]
    assert req.finished and acc.finished
    assert ReleaseConfirmed() in pair.requestor_events
    assert ReleaseConfirmed() in pair.acceptor_events


def test_no_association_response_once_the_peer_has_gone() -> None:
    """Evt17 in Sta3 (AA-4): the peer closed before we answered; nothing is left to send."""
    pair = AssociationPair()
    pair.connect()
    pair.pump()
    acc = pair.acceptor
    assert acc.association_response_due
    acc.receive_data(b"")
    assert not acc.association_response_due
    assert [type(e) for e in drain_events(acc)] == [Aborted]
    assert acc.finished


@pytest.mark.parametrize("aborting", ["requestor", "acceptor"])
def test_abort_from_each_side(aborting: str) -> None:
    pair = _established()
    me = pair.requestor if aborting == "requestor" else pair.acceptor
    peer = pair.acceptor if aborting == "requestor" else pair.requestor
    me.abort("operator cancelled")
    assert (me.state, me.artim_running) == (State.STA13, True)  # AA-1
    assert not me.finished
    assert drain_events(me) == [Aborted(AbortSource.SERVICE_USER, AbortReason.NOT_SPECIFIED,
                                        True, "operator cancelled")]
    pair.pump()
    peer_events = pair.acceptor_events if aborting == "requestor" else pair.requestor_events
    assert len(peer_events) == 1
    aborted = peer_events[0]
    assert isinstance(aborted, Aborted)
    assert (aborted.source, aborted.reason, aborted.local) == (AbortSource.SERVICE_USER, 0, False)
    assert pair.sent_by(aborting)[-1] == AAbort(AbortSource.SERVICE_USER, 0)
    assert me.finished and peer.finished  # AA-3 on the peer, then AR-5 when it closes
    assert not me.artim_running
    me.abort()  # nothing left to abort: a no-op, not an error
    assert me.data_to_send() == b""


def test_user_abort_before_acceptance() -> None:
    """A-ABORT request while awaiting the A-ASSOCIATE-AC (Sta5, AA-1)."""
    pair = AssociationPair()
    pair.connect()
    pair.requestor.send(AAbort())
    pair.pump()
    assert [type(e) for e in pair.acceptor_events] == [AssociationRequested, Aborted]
    assert pair.requestor.finished and pair.acceptor.finished


# --- malformed input, timers, P-DATA in the wrong place ------------------------------------


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
@pytest.mark.parametrize("state", ["Sta2", "Sta6"])
def test_malformed_input_is_a_provider_abort(state: str,
                                             garbage: tuple[bytes, AbortReason]) -> None:
    data, reason = garbage
    pair = AssociationPair()
    acc = pair.acceptor
    if state == "Sta2":
        acc.connection_made()
    else:
        pair.establish()
        pair.clear_events()
    acc.receive_data(data)
    _provider_abort(acc, reason)  # A-P-ABORT: AA-1 in Sta2, AA-8 in Sta6
    # The byte stream is no longer framed: nothing that follows is read.
    acc.receive_data(encode_pdu(pair.request) + _command_pdata(ECHO_CONTEXT, ECHO))
    assert acc.data_to_send() == b""
    assert drain_events(acc) == []
    assert acc.state is State.STA13


def test_artim_expiry_before_the_request() -> None:
    acc = Association(requestor=False, max_pdu_length=16384)
    acc.connection_made()
    assert acc.artim_running
    acc.timer_expired()  # Evt18 in Sta2: AA-2
    assert acc.finished
    assert not acc.artim_running
    assert acc.data_to_send() == b""
    assert drain_events(acc) == []


def test_artim_expiry_after_a_rejection() -> None:
    pair = AssociationPair()
    pair.connect()
    pair.pump()
    acc = pair.acceptor
    acc.send(AAssociateRJ(RejectResult.TRANSIENT, RejectSource.SERVICE_USER,
                          RejectReason.NO_REASON))
    assert [type(p) for p in decode_all(acc.data_to_send())] == [AAssociateRJ]
    assert (acc.state, acc.artim_running) == (State.STA13, True)
    acc.timer_expired()  # Evt18 in Sta13: the peer never closed, so we do
    assert acc.finished
    assert acc.data_to_send() == b""
    assert drain_events(acc) == []


def test_timer_expiry_without_artim_is_ignored() -> None:
    pair = _established()
    pair.acceptor.timer_expired()
    assert pair.acceptor.state is State.STA6
    assert pair.acceptor.data_to_send() == b""


def test_pdata_before_the_request() -> None:
    """P-DATA-TF in Sta2 (AA-1, sent with the provider source)."""
    acc = Association(requestor=False, max_pdu_length=16384)
    acc.connection_made()
    acc.receive_data(_command_pdata(ECHO_CONTEXT, ECHO))
    events = _provider_abort(acc, AbortReason.UNEXPECTED_PDU)
    assert not any(isinstance(e, CommandReceived) for e in events)


def test_pdata_while_awaiting_the_accept() -> None:
    """P-DATA-TF in Sta5 on the requestor (AA-8)."""
    pair = AssociationPair()
    req = pair.requestor
    req.send(pair.request)
    req.connection_made()
    assert decode_all(req.data_to_send()) == [pair.request]
    req.receive_data(_command_pdata(ECHO_CONTEXT, ECHO))
    events = _provider_abort(req, AbortReason.UNEXPECTED_PDU)
    assert len(events) == 1


@pytest.mark.parametrize("context_id", [3, 5], ids=["rejected", "never proposed"])
def test_pdata_on_a_context_not_accepted(context_id: int) -> None:
    pair = AssociationPair(contexts=((VERIFICATION, NATIVE), ("1.2.3.4.5.6.7", NATIVE)))
    ac = pair.establish()
    results = {pc.context_id: pc.result for pc in ac.presentation_contexts}
    assert results == {1: ContextResult.ACCEPTANCE,
                       3: ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED}
    pair.clear_events()
    with pytest.raises(LocalProtocolError):
        pair.requestor.send_command(context_id, ECHO)
    assert pair.requestor.data_to_send() == b""
    pair.acceptor.receive_data(_command_pdata(context_id, ECHO))
    events = _provider_abort(pair.acceptor, AbortReason.INVALID_PDU_PARAMETER_VALUE)
    assert len(events) == 1


def test_sending_before_establishment_is_refused() -> None:
    pair = AssociationPair()
    pair.connect()
    with pytest.raises(LocalProtocolError):
        pair.requestor.send_command(ECHO_CONTEXT, ECHO)
    with pytest.raises(LocalProtocolError):
        pair.requestor.send_data(ECHO_CONTEXT, b"x", last=True)


@pytest.mark.parametrize("after", ["nothing", "a command without data set"])
def test_data_fragment_without_command(after: str) -> None:
    pair = _established()
    acc = pair.acceptor
    expected: list[type] = []
    if after != "nothing":
        acc.receive_data(_command_pdata(ECHO_CONTEXT, ECHO))
        expected = [CommandReceived]
    acc.receive_data(encode_pdata(ECHO_CONTEXT, b"orphan", is_command=False, is_last=True))
    events = _provider_abort(acc, AbortReason.INVALID_PDU_PARAMETER_VALUE)
    assert [type(e) for e in events] == [*expected, Aborted]


def test_command_fragment_while_a_data_set_was_expected() -> None:
    pair = _established()
    acc = pair.acceptor
    acc.receive_data(_command_pdata(STORE_CONTEXT, STORE))
    acc.receive_data(encode_pdata(STORE_CONTEXT, b"half", is_command=False, is_last=False))
    acc.receive_data(_command_pdata(STORE_CONTEXT, STORE))
    events = _provider_abort(acc, AbortReason.INVALID_PDU_PARAMETER_VALUE)
    assert events[:2] == [CommandReceived(STORE_CONTEXT, STORE),
                          DataReceived(STORE_CONTEXT, b"half", False)]
    assert len(events) == 3


def test_undecodable_command_set() -> None:
    pair = _established()
    pair.acceptor.receive_data(encode_pdata(ECHO_CONTEXT, b"\x00" * 7, is_command=True,
                                            is_last=True))
    events = _provider_abort(pair.acceptor, AbortReason.INVALID_PDU_PARAMETER_VALUE)
    assert len(events) == 1


def test_command_set_over_one_mib_is_refused() -> None:
    pair = _established()
    acc = pair.acceptor
    chunk = 1 << 16
    fragment = encode_pdata(ECHO_CONTEXT, bytes(chunk), is_command=True, is_last=False)
    for _ in range(MAX_COMMAND_SET // chunk):  # exactly the cap: still accepted
        acc.receive_data(fragment)
    assert acc.state is State.STA6
    assert acc.data_to_send() == b""
    assert drain_events(acc) == []
    acc.receive_data(encode_pdata(ECHO_CONTEXT, b"\x00", is_command=True, is_last=False))
    events = _provider_abort(acc, AbortReason.INVALID_PDU_PARAMETER_VALUE)
    assert len(events) == 1


# --- DIMSE framing ------------------------------------------------------------------------


def test_c_echo_round_trip() -> None:
    pair = _established()
    pair.requestor.send_command(ECHO_CONTEXT, ECHO)
    pair.pump()
    assert pair.acceptor_events == [CommandReceived(ECHO_CONTEXT, ECHO)]
    response = CEchoRSP(message_id_being_responded_to=ECHO.message_id,
                        affected_sop_class_uid=VERIFICATION, status=Status.SUCCESS)
    pair.acceptor.send_command(ECHO_CONTEXT, response)
    pair.pump()
    assert pair.requestor_events == [CommandReceived(ECHO_CONTEXT, response)]
    assert (pair.requestor.state, pair.acceptor.state) == (State.STA6, State.STA6)


def _store(sender: Association, receiver: Association, data: bytes, peer_max: int,
           feed_size: int) -> list[tuple[int, int, bytes]]:
    """Send a C-STORE with `data`, check every PDU against `peer_max`, feed it to the receiver
    `feed_size` bytes at a time and check the data set arrives whole; return the PDUs."""
    sender.send_command(STORE_CONTEXT, STORE)
    sender.send_data(STORE_CONTEXT, data, last=True)
    wire = sender.data_to_send()
    pdus = split_pdus(wire)
    assert {pdu_type for pdu_type, _, _ in pdus} == {PduType.P_DATA_TF}
    if peer_max:  # PS3.8 D.1: the variable field (the PDU length) never exceeds the maximum
        assert max(length for _, length, _ in pdus) <= peer_max
    decoded = decode_all(wire)
    pdvs = [pdv for pdu in decoded if isinstance(pdu, PDataTF) for pdv in pdu.pdvs]
    assert all(len(pdu.pdvs) == 1 for pdu in decoded if isinstance(pdu, PDataTF))
    assert pdvs[0].is_command and pdvs[0].is_last
    assert [pdv.is_last for pdv in pdvs[1:]] == [False] * (len(pdvs) - 2) + [True]
    assert not any(pdv.is_command for pdv in pdvs[1:])

    for offset in range(0, len(wire), feed_size):
        receiver.receive_data(wire[offset:offset + feed_size])
    events = drain_events(receiver)
    assert events[0] == CommandReceived(STORE_CONTEXT, STORE)
    fragments = events[1:]
    assert all(isinstance(e, DataReceived) and e.context_id == STORE_CONTEXT for e in fragments)
    received = b"".join(e.data for e in fragments if isinstance(e, DataReceived))
    assert received == data
    assert [e.last for e in fragments if isinstance(e, DataReceived)][-1]
    assert receiver.data_to_send() == b""
    assert receiver.state is State.STA6
    return pdus


@pytest.mark.parametrize("direction", ["to acceptor", "to requestor"])
def test_c_store_fragmented_to_peer_max_pdu(direction: str) -> None:
    small = 4096
    if direction == "to acceptor":
        pair = AssociationPair(acceptor_max_pdu=small)
        pair.establish()
        sender, receiver = pair.requestor, pair.acceptor
    else:  # e.g. C-STORE sub-operations of a C-GET: the acceptor sends
        pair = AssociationPair(requestor_max_pdu=small)
        pair.establish()
        sender, receiver = pair.acceptor, pair.requestor
    drain_events(receiver)
    assert sender.peer_max_pdu == small
    data = random.Random(1).randbytes(ONE_MB)
    pdus = _store(sender, receiver, data, small, feed_size=1000)
    data_pdus = pdus[1:]
    # Full-size PDUs: one PDV header (6 bytes) per PDU, the rest is data.
    assert len(data_pdus) == math.ceil(ONE_MB / (small - 6))
    assert all(length == small for _, length, _ in data_pdus[:-1])


def test_c_store_with_unlimited_peer_max_pdu() -> None:
    pair = AssociationPair(acceptor_max_pdu=0)
    pair.establish()
    drain_events(pair.acceptor)
    assert pair.requestor.peer_max_pdu == 0
    data = random.Random(2).randbytes(ONE_MB)
    pdus = _store(pair.requestor, pair.acceptor, data, 0, feed_size=65536)
    assert [length for _, length, _ in pdus[1:]] == [ONE_MB + 6]  # one PDV, unfragmented


def test_command_split_over_several_pdvs_and_pdus() -> None:
    pair = _established()
    acc = pair.acceptor
    command = encode_command(STORE)
    a, b, c = command[:10], command[10:31], command[31:]
    first = PDataTF((PresentationDataValue(STORE_CONTEXT, True, False, a),
                     PresentationDataValue(STORE_CONTEXT, True, False, b)))
    acc.receive_data(encode_pdu(first))
    assert drain_events(acc) == []
    last = PDataTF((PresentationDataValue(STORE_CONTEXT, True, True, c),))
    acc.receive_data(encode_pdu(last))
    assert drain_events(acc) == [CommandReceived(STORE_CONTEXT, STORE)]
    acc.receive_data(encode_pdata(STORE_CONTEXT, b"dataset", is_command=False, is_last=True))
    assert drain_events(acc) == [DataReceived(STORE_CONTEXT, b"dataset", True)]
    assert acc.state is State.STA6


def test_command_and_data_set_in_one_pdata() -> None:
    pair = _established()
    acc = pair.acceptor
    both = PDataTF((
        PresentationDataValue(STORE_CONTEXT, True, True, encode_command(STORE)),
        PresentationDataValue(STORE_CONTEXT, False, False, b"abc"),
        PresentationDataValue(STORE_CONTEXT, False, True, b"def"),
        PresentationDataValue(ECHO_CONTEXT, True, True, encode_command(ECHO)),
    ))
    acc.receive_data(encode_pdu(both))
    assert drain_events(acc) == [
        CommandReceived(STORE_CONTEXT, STORE),
        DataReceived(STORE_CONTEXT, b"abc", False),
        DataReceived(STORE_CONTEXT, b"def", True),
        CommandReceived(ECHO_CONTEXT, ECHO),
    ]
    assert acc.data_to_send() == b""


def test_pdata_larger_than_our_maximum_is_refused() -> None:
    ours = 4096
    pair = AssociationPair(acceptor_max_pdu=ours)
    pair.establish()
    acc = pair.acceptor
    drain_events(acc)
    # Exactly our maximum (variable field = 6-byte PDV header + data) is fine.
    fitting = encode_pdata(ECHO_CONTEXT, bytes(ours - 6), is_command=True, is_last=False)
    assert split_pdus(fitting)[0][1] == ours
    acc.receive_data(fitting)
    assert acc.data_to_send() == b"" and acc.state is State.STA6
    # One byte more is refused as soon as its header arrives, before any body is buffered.
    too_big = encode_pdata(ECHO_CONTEXT, bytes(ours - 5), is_command=True, is_last=False)
    acc.receive_data(too_big[:PDU_HEADER_LENGTH])
    events = _provider_abort(acc, AbortReason.INVALID_PDU_PARAMETER_VALUE)
    assert len(events) == 1


def test_peer_max_pdu_comes_from_rq_and_ac() -> None:
    pair = AssociationPair(requestor_max_pdu=12_000, acceptor_max_pdu=34_000)
    pair.establish()
    assert pair.acceptor.peer_max_pdu == 12_000  # from the A-ASSOCIATE-RQ (AE-6)
    assert pair.requestor.peer_max_pdu == 34_000  # from the A-ASSOCIATE-AC (AE-3)
    for sender, limit in ((pair.requestor, 34_000), (pair.acceptor, 12_000)):
        sender.send_command(STORE_CONTEXT, STORE)
        sender.send_data(STORE_CONTEXT, bytes(100_000), last=True)
        lengths = [length for _, length, _ in split_pdus(sender.data_to_send())]
        assert max(lengths) == limit


def test_absent_maximum_length_means_unlimited() -> None:
    """An RQ without a maximum length sub-item (PS3.8 D.1): peer_max_pdu is 0 (no limit)."""
    pair = AssociationPair()
    request = pair.request
    bare = AAssociateRQ(request.called_ae_title, request.calling_ae_title,
                        request.presentation_contexts)
    assert bare.user_information.max_length is None
    acc = pair.acceptor
    acc.connection_made()
    acc.receive_data(encode_pdu(bare))
    assert drain_events(acc) == [AssociationRequested(bare)]
    assert acc.peer_max_pdu == 0


# --- robustness -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_never_raise(seed: int) -> None:
    """Mutated and random input in every reachable receiving state: no exception escapes,
    and whatever the association answers is well-formed PDUs."""
    rng = random.Random(seed)
    valid = [
        RELEASE_RQ_BYTES,
        _command_pdata(ECHO_CONTEXT, ECHO),
        encode_pdu(AssociationPair().request),
        encode_pdu(AAbort()),
    ]
    for _ in range(150):
        pair = AssociationPair()
        if rng.random() < 0.5:
            pair.establish()
        else:
            pair.connect()
        target = rng.choice((pair.requestor, pair.acceptor))
        blob = bytearray(rng.choice(valid))
        for _ in range(rng.randint(0, 4)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        blob += rng.randbytes(rng.randint(0, 20))
        target.receive_data(bytes(blob))
        decode_all(target.data_to_send())
        drain_events(target)
        target.receive_data(b"")
        assert target.finished
