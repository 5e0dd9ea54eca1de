"""The in-process fuzz targets: the sans-I/O core fed mutated input, with its oracles.

A target raises `Finding` when the code under test does anything but what it documents:
`decode_pdu` and `PduFramer` raise only `PduError`; `decode_command` only `DimseError`;
`decode_identifier` and `parse_identifier` only `IdentifierError`; an `Association` never
raises on received bytes or timers (only `LocalProtocolError` for a user request its state
does not allow) and never emits a byte that is not a well-formed PDU; whatever we decode we
can encode again, to the same value. Each case is a function of one `random.Random`, so
the seed alone reproduces it.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from minipacs.index.query import matchable_tags
from minipacs.index.worklist import STEP_KEYS, TAG_SPS_SEQUENCE, TOP_KEYS
from minipacs.proto.association import (
    NEED_DATA,
    Aborted,
    Association,
    AssociationRequested,
    LocalProtocolError,
)
from minipacs.proto.command_codec import decode_command, encode_command
from minipacs.proto.dimse import CEchoRQ, DimseError
from minipacs.proto.framer import PduFramer, decode_pdu
from minipacs.proto.negotiation import negotiate_as_acceptor
from minipacs.proto.pdu import AReleaseRP, AReleaseRQ
from minipacs.proto.pdu_codec import PDU_HEADER_LENGTH, PduError, encode_pdu
from minipacs.proto.sop import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    PATIENT_ROOT_QR_FIND,
    STUDY_ROOT_QR_FIND,
    VERIFICATION,
)
from minipacs.services.dataset_codec import deflate, inflate
from minipacs.services.identifier import decode_identifier, model_of, parse_identifier
from minipacs.services.matching import IdentifierError
from minipacs.services.retrieve_keys import parse_retrieve_identifier
from minipacs.services.worklist import parse_worklist_identifier

from . import corpus
from .mutate import chunks, mutate_bytes, mutate_pdu

# What one association case may feed: enough for a few commands and a data set.
MAX_PDUS_PER_CASE: Final = 6
MAX_PDU: Final = 16384


class Finding(Exception):
    """The code under test broke its contract; `target` names it, `data` is the input."""

    def __init__(self, target: str, data: bytes, cause: BaseException | str) -> None:
        where = ""
        if isinstance(cause, BaseException):
            frames = traceback.extract_tb(cause.__traceback__)
            if frames:
                where = f" at {frames[-1].filename.rsplit('/', 2)[-1]}:{frames[-1].lineno}"
            what = f"{type(cause).__name__}{where}: {cause}"
        else:
            what = cause
        super().__init__(f"{target}: {what[:400]}")
        self.target = target
        self.data = data
        # Findings with the same signature are one defect (for the campaign's summary).
        self.signature = f"{target}: {type(cause).__name__}{where}" \
            if isinstance(cause, BaseException) else f"{target}: {cause[:60]}"


def _seeds() -> corpus.Seeds:
    return corpus.seeds()


# --- PDU codec and framer -------------------------------------------------------------------


def pdu_case(rng: random.Random) -> None:
    """decode_pdu raises only PduError; a decoded PDU re-encodes and decodes to itself."""
    seeds = _seeds()
    data = mutate_pdu(rng, seeds)
    try:
        pdu = decode_pdu(data)
    except PduError:
        return
    except Exception as exc:
        raise Finding("pdu-decode", data, exc) from exc
    try:
        again = decode_pdu(encode_pdu(pdu))
    except Exception as exc:
        raise Finding("pdu-roundtrip", data, exc) from exc
    if again != pdu:
        raise Finding("pdu-roundtrip", data, f"{pdu!r} came back as {again!r}")


def framer_case(rng: random.Random) -> None:
    """PduFramer raises only PduError and cuts the same PDUs however the bytes arrive."""
    seeds = _seeds()
    stream = b"".join(mutate_pdu(rng, seeds)
                      if rng.random() < 0.5 else rng.choice(seeds.pdus)
                      for _ in range(rng.randint(1, MAX_PDUS_PER_CASE)))
    whole = frame([stream])
    pieces = frame(chunks(rng, stream))
    if whole != pieces:
        raise Finding("framer-chunking", stream, f"{whole!r} != {pieces!r}")


def frame(pieces: list[bytes], max_pdu: int = MAX_PDU) -> list[object]:
    """What a PduFramer cuts from `pieces` fed in turn: PDUs, then ("error", reason) if a
    PduError ended it; any other exception is a Finding."""
    stream = b"".join(pieces)
    framer = PduFramer(max_pdu)
    out: list[object] = []
    try:
        for piece in pieces:
            framer.feed(piece)
            while (pdu := framer.next_pdu()) is not None:
                out.append(pdu)
            if framer.buffered > len(stream):
                raise Finding("framer-buffer", stream, f"{framer.buffered} bytes buffered")
    except PduError as exc:
        out.append(("error", exc.reason))
    except Finding:
        raise
    except Exception as exc:
        raise Finding("framer", stream, exc) from exc
    return out


# --- DIMSE command sets ---------------------------------------------------------------------


def command_case(rng: random.Random) -> None:
    """decode_command raises only DimseError; a decoded message encodes (or raises the
    documented ValueError) and decodes to itself."""
    data = mutate_bytes(rng, rng.choice(_seeds().command_sets))
    try:
        message = decode_command(data)
    except DimseError:
        return
    except Exception as exc:
        raise Finding("command-decode", data, exc) from exc
    try:
        encoded = encode_command(message)
    except ValueError:
        return  # not encodable (a UID over 64 bytes, a non-ASCII byte): MessageNotEncodable
    except Exception as exc:
        raise Finding("command-encode", data, exc) from exc
    try:
        again = decode_command(encoded)
    except Exception as exc:
        raise Finding("command-roundtrip", data, exc) from exc
    if again != message:
        raise Finding("command-roundtrip", data, f"{message!r} came back as {again!r}")


# --- C-FIND identifiers ---------------------------------------------------------------------

_MODELS: Final = (STUDY_ROOT_QR_FIND, PATIENT_ROOT_QR_FIND)


def _worklist_matchable(sequence: int | None) -> frozenset[int]:
    """What the worklist index matches in SQL (index/worklist.py), without an engine."""
    if sequence is None:
        return frozenset(TOP_KEYS) | {TAG_SPS_SEQUENCE}
    return frozenset(STEP_KEYS) if sequence == TAG_SPS_SEQUENCE else frozenset()


def identifier_case(rng: random.Random) -> None:
    """A mutated identifier seed through `check_identifier`."""
    plain, transfer_syntax = rng.choice(corpus.identifiers())
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN and rng.random() < 0.7:
        data = deflate(mutate_bytes(rng, inflate(plain, 1 << 20)))  # mutate what is inside
    else:
        data = mutate_bytes(rng, plain)
    check_identifier(data, transfer_syntax)


def check_identifier(data: bytes, transfer_syntax: str) -> None:
    """decode_identifier and the C-FIND, C-MOVE/C-GET and worklist parsers raise only
    IdentifierError; anything else is a Finding."""
    try:
        ds = decode_identifier(data, transfer_syntax)
    except IdentifierError:
        return
    except Exception as exc:
        raise Finding("identifier-decode", data + transfer_syntax.encode(), exc) from exc
    parsers: list[tuple[str, Callable[[], object]]] = [
        ("worklist", lambda: parse_worklist_identifier(ds, _worklist_matchable))]
    for model in map(model_of, _MODELS):
        parsers += [
            ("find", lambda m=model: parse_identifier(ds, m, matchable=matchable_tags)),
            ("find-relational", lambda m=model: parse_identifier(
                ds, m, matchable=matchable_tags, relational=True, combined_datetime=True,
                strict_hierarchy=False)),
            ("retrieve", lambda m=model: parse_retrieve_identifier(ds, m)),
            ("retrieve-lenient", lambda m=model: parse_retrieve_identifier(
                ds, m, strict_hierarchy=False)),
        ]
    for name, parse in parsers:
        try:
            parse()
        except IdentifierError:
            continue
        except Exception as exc:
            raise Finding(f"identifier-{name}", data + transfer_syntax.encode(), exc) from exc


# --- the association state machine ---------------------------------------------------------


@dataclass
class _Driven:
    assoc: Association
    name: str
    out: bytearray


def _check_output(driven: _Driven, fed: bytes) -> None:
    """Everything the association emits is a sequence of well-formed PDUs."""
    data = driven.assoc.data_to_send()
    offset = 0
    while offset < len(data):
        if len(data) - offset < PDU_HEADER_LENGTH:
            raise Finding(driven.name, fed, f"emitted a truncated PDU header: {data[offset:]!r}")
        length = int.from_bytes(data[offset + 2:offset + 6], "big")
        end = offset + PDU_HEADER_LENGTH + length
        try:
            decode_pdu(data[offset:end])
        except Exception as exc:
            raise Finding(driven.name, fed, f"emitted an invalid PDU: {exc}") from exc
        offset = end
    driven.out += data


def _drain(driven: _Driven, fed: bytes, answer: bool) -> list[object]:
    """Take every event; answer an A-ASSOCIATE indication as the server does."""
    events: list[object] = []
    assoc = driven.assoc
    while (event := assoc.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, AssociationRequested) and answer:
            try:
                reply = negotiate_as_acceptor(event.request, corpus.policy(MAX_PDU))
            except Exception as exc:
                raise Finding("negotiate", fed, exc) from exc
            if assoc.association_response_due:
                try:
                    assoc.send(reply)
                except Exception as exc:
                    raise Finding("associate-answer", fed, exc) from exc
        if isinstance(event, Aborted) and event.local and not assoc.finished \
                and assoc.state.name not in ("STA13", "STA1"):
            raise Finding(driven.name, fed, f"local abort left it in {assoc.state.value}")
    return events


def _user_action(rng: random.Random, driven: _Driven, fed: bytes) -> None:
    """A random local request: only LocalProtocolError may come of one its state refuses."""
    assoc = driven.assoc
    action = rng.randrange(6)
    try:
        if action == 0:
            assoc.send(AReleaseRQ())
        elif action == 1:
            assoc.send(AReleaseRP())
        elif action == 2:
            assoc.abort()
        elif action == 3:
            assoc.timer_expired()
        elif action == 4:
            assoc.send_command(1, CEchoRQ(message_id=rng.randrange(1, 0x10000),
                                          affected_sop_class_uid=VERIFICATION))
        else:
            assoc.send_data(rng.choice((1, 3)), rng.randbytes(rng.randrange(64)),
                            last=rng.random() < 0.5)
    except LocalProtocolError:
        pass
    except Exception as exc:
        raise Finding(f"{driven.name}-user", fed, exc) from exc


def _stream(rng: random.Random) -> bytes:
    """What a peer sends: valid PDUs of the seed corpus, some mutated, in a random order."""
    seeds = _seeds()
    return b"".join(mutate_pdu(rng, seeds)
                    if rng.random() < 0.4 else rng.choice(seeds.pdus)
                    for _ in range(rng.randint(1, MAX_PDUS_PER_CASE)))


def association_case(rng: random.Random) -> None:
    """An acceptor or requestor, brought to a random state, fed a hostile stream."""
    requestor = rng.random() < 0.3
    name = "requestor" if requestor else "acceptor"
    driven = _Driven(Association(requestor=requestor, max_pdu_length=MAX_PDU), name,
                     bytearray())
    assoc = driven.assoc
    prefix = b""
    if requestor:
        assoc.send(corpus.associate_rq(rich=rng.random() < 0.5))
        assoc.connection_made()
        if rng.random() < 0.7:  # established: the acceptor's AC first
            prefix = encode_pdu(corpus.associate_ac())
    else:
        assoc.connection_made()
        if rng.random() < 0.8:  # a valid RQ first, so most cases reach Sta6
            prefix = encode_pdu(corpus.associate_rq(rich=rng.random() < 0.5))
    stream = prefix + _stream(rng)
    answer = not requestor and rng.random() < 0.9
    try:
        for piece in chunks(rng, stream):
            assoc.receive_data(piece)
            _drain(driven, stream, answer)
            _check_output(driven, stream)
            if rng.random() < 0.2:
                _user_action(rng, driven, stream)
                _drain(driven, stream, answer)
                _check_output(driven, stream)
        if rng.random() < 0.5:
            assoc.timer_expired()
        assoc.receive_data(b"")  # the peer closes
        _drain(driven, stream, answer)
        _check_output(driven, stream)
    except Finding:
        raise
    except Exception as exc:
        raise Finding(name, stream, exc) from exc
    _check_end(driven, stream)


def _check_end(driven: _Driven, stream: bytes) -> None:
    """After the peer closed, the association is over and emits nothing more."""
    assoc = driven.assoc
    if not assoc.finished:
        raise Finding(driven.name, stream, f"not finished after the close ({assoc.state.value})")
    for call in (assoc.abort, assoc.timer_expired):
        call()
    assoc.receive_data(b"more after the close")
    if assoc.data_to_send() or assoc.next_event() is not NEED_DATA:
        raise Finding(driven.name, stream, "spoke after the transport closed")


TARGETS: Final[dict[str, Callable[[random.Random], None]]] = {
    "pdu": pdu_case,
    "framer": framer_case,
    "command": command_case,
    "identifier": identifier_case,
    "association": association_case,
}
# How often each target runs in a mixed campaign (the association target is the costliest
# and the widest: it reaches the codec, the framer, DIMSE framing and negotiation).
WEIGHTS: Final = {"pdu": 3, "framer": 2, "command": 2, "identifier": 1, "association": 2}
