"""Property-based fuzzing of the sans-I/O core (hypothesis): the PDU codec, `PduFramer`, the
command codec and `Association` in every state.

The contract under test: valid values round-trip; hostile bytes raise only the documented
protocol errors (`PduError`, `DimseError`) or, inside an `Association`, become an A-ABORT
and an `Aborted` event — never another exception; a user request the state does not allow
raises only `LocalProtocolError`; every byte an association emits is a well-formed PDU.
`tests/strategies.FUZZ` bounds the cases (300 per property; MINIPACS_FUZZ_EXAMPLES raises
it); scripts/fuzz runs the same targets a million times.
"""

from __future__ import annotations

import contextlib
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from minipacs.proto.association import NEED_DATA, Association, LocalProtocolError
from minipacs.proto.command_codec import decode_command, encode_command
from minipacs.proto.dimse import CEchoRQ, DimseError, DimseMessage
from minipacs.proto.framer import decode_pdu
from minipacs.proto.fsm import State
from minipacs.proto.negotiation import negotiate_as_acceptor
from minipacs.proto.pdu import AAbort, AAssociateRJ, AReleaseRP, AReleaseRQ, Pdu
from minipacs.proto.pdu_codec import PDU_HEADER_LENGTH, PduError, encode_pdata, encode_pdu
from minipacs.proto.sop import VERIFICATION
from tests.proto.pair import ACCEPTOR_STATES, REQUESTOR_STATES, reach_state
from tests.reliability import corpus
from tests.reliability.core import frame
from tests.reliability.mutate import fix_pdu_length
from tests.strategies import EXAMPLES, FUZZ, MESSAGES, PDUS, mutated

MAX_PDU: Final = 1 << 20
STEPS: Final = 10  # per association case: its start state is where hostile input matters


# --- PDU codec ------------------------------------------------------------------------------


@FUZZ
@given(PDUS)
def test_every_valid_pdu_round_trips(pdu: Pdu) -> None:
    assert decode_pdu(encode_pdu(pdu)) == pdu


def _decodes_or_pdu_error(data: bytes) -> Pdu | None:
    try:
        return decode_pdu(data)
    except PduError:
        return None


@FUZZ
@given(st.data())
def test_mutated_pdus_decode_or_raise_pdu_error(data: st.DataObject) -> None:
    wire = encode_pdu(data.draw(PDUS))
    hostile = data.draw(mutated(wire))
    if data.draw(st.booleans()):  # the header's length fixed: the body's decoder is reached
        hostile = fix_pdu_length(hostile)
    pdu = _decodes_or_pdu_error(hostile)
    if pdu is not None:  # what we decode we can encode, to the same value
        assert decode_pdu(encode_pdu(pdu)) == pdu


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_decode_or_raise_pdu_error(data: bytes) -> None:
    _decodes_or_pdu_error(data)


# --- framer ---------------------------------------------------------------------------------


@FUZZ
@given(st.lists(PDUS, min_size=1, max_size=3), st.data())
def test_framer_cuts_the_same_pdus_however_the_bytes_arrive(pdus: list[Pdu],
                                                            data: st.DataObject) -> None:
    stream = b"".join(encode_pdu(p) for p in pdus)
    hostile = data.draw(st.booleans())
    if hostile:
        stream = data.draw(mutated(stream))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    whole = frame([stream], MAX_PDU)
    assert frame(pieces, MAX_PDU) == whole
    if not hostile:
        assert whole == pdus


# --- DIMSE command sets ---------------------------------------------------------------------


@FUZZ
@given(MESSAGES)
def test_every_valid_command_round_trips(message: DimseMessage) -> None:
    assert decode_command(encode_command(message)) == message


@FUZZ
@given(st.data())
def test_mutated_commands_decode_or_raise_dimse_error(data: st.DataObject) -> None:
    hostile = data.draw(mutated(encode_command(data.draw(MESSAGES))))
    try:
        message = decode_command(hostile)
    except DimseError:
        return
    try:
        encoded = encode_command(message)
    except ValueError:
        return  # e.g. a UID over 64 bytes: the dispatcher answers without it
    assert decode_command(encoded) == message


@FUZZ
@given(st.binary(max_size=256))
def test_arbitrary_bytes_decode_or_raise_dimse_error(data: bytes) -> None:
    with contextlib.suppress(DimseError):
        decode_command(data)


# --- the association, every state -----------------------------------------------------------

# (state, role) pairs a real association can be in (PS3.8 Table 9-1), each a starting point.
STARTS: Final = [(state, requestor) for state in State for requestor in (True, False)
                 if not (requestor and state in ACCEPTOR_STATES)
                 and not (not requestor and state in REQUESTOR_STATES)]
_RQ: Final = corpus.associate_rq(rich=True)
_ECHO: Final = encode_command(CEchoRQ(message_id=1, affected_sop_class_uid=VERIFICATION))
# What a peer may send at any moment: every PDU type, commands and data on accepted and
# unaccepted contexts, half a command, mutations of those, and bytes that are no PDU.
_VALID: Final = [
    encode_pdu(_RQ), encode_pdu(corpus.associate_ac()), encode_pdu(AAssociateRJ(1, 1, 3)),
    encode_pdu(AReleaseRQ()), encode_pdu(AReleaseRP()), encode_pdu(AAbort(2, 6)),
    encode_pdata(1, _ECHO, is_command=True, is_last=True),
    encode_pdata(1, _ECHO[:20], is_command=True, is_last=False),
    encode_pdata(3, b"\x08\x00\x18\x00", is_command=False, is_last=True),
    encode_pdata(2, _ECHO, is_command=True, is_last=True),
]
PEER_BYTES: Final = (st.sampled_from(_VALID)
                     | st.sampled_from(_VALID).flatmap(mutated)
                     | st.binary(min_size=1, max_size=32))
_USER: Final = ["rq", "ac", "rj", "release-rq", "release-rp", "abort"]


class AssociationMachine(RuleBasedStateMachine):
    """An `Association` brought into a state by real traffic (`start`, set by a subclass),
    then random user requests, peer bytes (cut anywhere), timers and closes."""

    start: tuple[State, bool] = (State.STA1, True)
    assoc: Association | None = None

    @initialize()
    def reach(self) -> None:
        self.assoc, _ = reach_state(*self.start)

    @rule(data=PEER_BYTES, cut=st.integers(0, 64))
    def peer_sends(self, data: bytes, cut: int) -> None:
        assert self.assoc is not None
        for piece in (data[:cut], data[cut:]):
            if piece:
                self.assoc.receive_data(piece)

    @rule(primitive=st.sampled_from(_USER))
    def user_sends(self, primitive: str) -> None:
        assoc = self.assoc
        assert assoc is not None
        answer = negotiate_as_acceptor(assoc.request or _RQ, corpus.policy())
        pdu = {"rq": _RQ, "ac": answer, "rj": AAssociateRJ(1, 1, 3),
               "release-rq": AReleaseRQ(), "release-rp": AReleaseRP(), "abort": AAbort()}
        with contextlib.suppress(LocalProtocolError):
            assoc.send(pdu[primitive])

    @rule()
    def transport_opens(self) -> None:
        assert self.assoc is not None
        self.assoc.connection_made()

    @rule(context_id=st.sampled_from([1, 3, 2]), command=st.booleans(), last=st.booleans())
    def user_sends_data(self, context_id: int, command: bool, last: bool) -> None:
        assert self.assoc is not None
        with contextlib.suppress(LocalProtocolError):
            if command:
                self.assoc.send_command(context_id, CEchoRQ(
                    message_id=2, affected_sop_class_uid=VERIFICATION))
            else:
                self.assoc.send_data(context_id, b"\0" * 40, last=last)

    @rule()
    def timer_expires(self) -> None:
        assert self.assoc is not None
        self.assoc.timer_expired()

    @rule()
    def user_aborts(self) -> None:
        assert self.assoc is not None
        self.assoc.abort()

    @rule()
    def peer_closes(self) -> None:
        assert self.assoc is not None
        self.assoc.receive_data(b"")

    @invariant()
    def emits_only_whole_pdus(self) -> None:
        assoc = self.assoc
        if assoc is None:
            return
        while assoc.next_event() is not NEED_DATA:
            pass
        data = assoc.data_to_send()
        offset = 0
        while offset < len(data):
            length = int.from_bytes(data[offset + 2:offset + PDU_HEADER_LENGTH], "big")
            decode_pdu(data[offset:offset + PDU_HEADER_LENGTH + length])
            offset += PDU_HEADER_LENGTH + length
        assert assoc.finished == (assoc.state is State.STA1 and assoc._started)


@pytest.mark.parametrize("start", STARTS, ids=[
    f"{state.value}-{'requestor' if requestor else 'acceptor'}" for state, requestor in STARTS])
def test_association_takes_anything_in_every_state(start: tuple[State, bool]) -> None:
    machine = type("Machine", (AssociationMachine,), {"start": start})
    run_state_machine_as_test(machine, settings=settings(
        FUZZ, max_examples=max(EXAMPLES // 10, 10), stateful_step_count=STEPS))
