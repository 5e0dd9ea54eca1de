"""The live fuzzer: many connections to a real `minipacs serve`, each a hostile case.

A case opens a socket and plays one scenario: garbage before any association, a mutated
A-ASSOCIATE-RQ, a hostile AE title, a slow client, or a session of valid and mutated DIMSE
messages (stores with hostile UIDs, deflate bombs, mutated identifiers, retrieves, MPPS,
commitment, cancels) that ends with a release, an abort, an abrupt close or half a message.
Meanwhile a clean client C-ECHOes every few seconds: the server must keep answering.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from pydicom.dataset import Dataset

from minipacs.app.scu import _echo
from minipacs.proto.command_codec import encode_command
from minipacs.proto.dimse import (
    CCancelRQ,
    CEchoRQ,
    CFindRQ,
    CGetRQ,
    CMoveRQ,
    CStoreRQ,
    DimseMessage,
    NActionRQ,
    NCreateRQ,
    NSetRQ,
)
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.pdu import AAbort, AAssociateAC, AReleaseRQ, ContextResult, RoleSelection
from minipacs.proto.pdu_codec import encode_pdu
from minipacs.proto.sop import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    MPPS,
    STORAGE_COMMITMENT_PUSH,
    STORAGE_COMMITMENT_PUSH_INSTANCE,
    STUDY_ROOT_QR_FIND,
    STUDY_ROOT_QR_GET,
    STUDY_ROOT_QR_MOVE,
    VERIFICATION,
)
from tests.mpps_data import mpps_create, mpps_final, scheduled_step

from . import corpus
from .mutate import HOSTILE_STRINGS, chunks, mutate_associate, mutate_bytes, mutate_pdu
from .peer import RawPeer, Tally

LOOPBACK: Final = "127.0.0.1"
SERVER_AE: Final = corpus.CALLED_AE
DESTINATION_AE: Final = "FUZZDEST"
GONE_AE: Final = "GONE"  # a peer whose port nobody listens on
READ_TIMEOUT: Final = 3.0  # for one answer; the server's own timers are shorter (config)
CASE_TIMEOUT: Final = 15.0
ECHO_INTERVAL: Final = 2.0
ECHO_TIMEOUT: Final = 10.0
STUDIES: Final = 6  # stored instances spread over this many studies and patients


def server_sections(destination_port: int, gone_port: int) -> dict[str, object]:
    """The fuzzed server's configuration: short timers, a small deflate cap, two peers."""
    return {
        "ae_title": SERVER_AE,
        "storage": {"fsync": False, "min_free_mb": 0},
        "limits": {"artim_timeout": 5, "handshake_timeout": 5, "idle_timeout": 10,
                   "max_inflated_mb": 2, "shutdown_grace": 5},
        "retrieve": {"timeout": 5, "connect_timeout": 2},
        "commitment": {"retry_delay": 1, "max_attempts": 2, "timeout": 5},
        "peers": {DESTINATION_AE: {"host": LOOPBACK, "port": destination_port},
                  GONE_AE: {"host": LOOPBACK, "port": gone_port}},
        "logging": {"level": "INFO"},
    }


@dataclass
class Counts:
    """What a campaign did and saw."""

    cases: Counter[str] = field(default_factory=Counter)  # by scenario
    messages: int = 0
    echoes: int = 0
    echo_failures: list[str] = field(default_factory=list)
    echo_worst: float = 0.0
    client_errors: list[str] = field(default_factory=list)  # findings on our side of a case
    tally: Tally = field(default_factory=Tally)


# --- one session --------------------------------------------------------------------------


@dataclass
class Session:
    """An accepted association: which contexts the server took, in which syntax."""

    peer: RawPeer
    rng: random.Random
    accepted: dict[str, tuple[int, str]]  # abstract syntax -> (context ID, transfer syntax)
    counts: Counts
    next_id: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def message_id(self) -> int:
        return next(self.next_id) & 0xFFFF or 1

    async def request(self, abstract: str, message: DimseMessage, data: bytes | None) -> None:
        """Send one request (its command or data set mutated now and then), await its end."""
        if abstract not in self.accepted or self.peer.closed:
            return
        context_id, _ = self.accepted[abstract]
        command = encode_command(message)
        rng = self.rng
        label = type(message).__name__
        if rng.random() < 0.1:
            command = mutate_bytes(rng, command)
            label += " (command mutated)"
        elif data is not None and rng.random() < 0.1:
            data = mutate_bytes(rng, data)
            label += " (data set mutated)"
        self.counts.messages += 1
        await self.peer.send_message(context_id, command, data)
        await self.peer.responses(READ_TIMEOUT, label)

    def syntax(self, abstract: str) -> str:
        return self.accepted.get(abstract, (0, IMPLICIT_VR_LITTLE_ENDIAN))[1]


def _proposal(rng: random.Random) -> tuple[bytes, list[tuple[str, list[str]]]]:
    """An A-ASSOCIATE-RQ: our contexts, all in one transfer syntax chosen for this case."""
    syntax = rng.choice(corpus.NATIVE)
    contexts = [(abstract, [syntax]) for abstract, _ in corpus.CONTEXTS]
    rq = build_associate_rq(f"FUZZ{rng.randrange(100)}", SERVER_AE, contexts,
                            max_pdu_length=16384,
                            roles=[RoleSelection(corpus.CT, True, True)])
    return encode_pdu(rq), contexts


async def _store(session: Session) -> None:
    rng = session.rng
    syntax = session.syntax(corpus.CT)
    case = rng.randrange(1 << 30)
    ds = corpus.ct(case, study=rng.randrange(STUDIES), patient=rng.randrange(STUDIES))
    uid = ds.SOPInstanceUID
    roll = rng.random()
    if roll < 0.1:  # a hostile UID in the command, the data set, or both
        uid = rng.choice(HOSTILE_STRINGS).decode("latin-1")
        if rng.random() < 0.5:
            ds.SOPInstanceUID = uid
    elif roll < 0.15 and syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        ds.PixelData = bytes(3 << 20)  # inflates past the fuzz server's 2 MiB cap: a bomb
    elif roll < 0.2:
        ds.PatientID = f"FUZZ-{rng.randrange(STUDIES, STUDIES * 2)}"  # a patient conflict
    try:
        data = corpus.encode(ds, syntax)
    except Exception:  # pydicom refuses to write some hostile values: send them raw instead
        data = corpus.encode(corpus.ct(case, study=0, patient=0), syntax)
    if corpus.CT not in session.accepted or session.peer.closed:
        return
    context_id, _ = session.accepted[corpus.CT]
    command = corpus.store_command(session.message_id(), uid.encode("latin-1"))
    session.counts.messages += 1
    await session.peer.send_message(context_id, command, data)
    await session.peer.responses(READ_TIMEOUT, "CStoreRQ (hostile values)")


def _identifier(session: Session, abstract: str) -> bytes:
    rng = session.rng
    syntax = session.syntax(abstract)
    if abstract == STUDY_ROOT_QR_FIND:
        choices = [data for data, ts in corpus.identifiers() if ts == syntax]
        return mutate_bytes(rng, rng.choice(choices)) if rng.random() < 0.3 else \
            rng.choice(choices)
    ds = Dataset()
    level = rng.choice(("STUDY", "SERIES", "IMAGE", "PATIENT"))
    ds.QueryRetrieveLevel = level
    study = rng.randrange(STUDIES)
    ds.StudyInstanceUID = f"{corpus.UID_ROOT}.1.{study}"
    if level == "PATIENT":
        ds.PatientID = f"FUZZ-{study}"
    if level in ("SERIES", "IMAGE"):
        ds.SeriesInstanceUID = f"{corpus.UID_ROOT}.2.{study}.{rng.randrange(3)}"
    if level == "IMAGE":
        ds.SOPInstanceUID = f"{corpus.UID_ROOT}.3.{rng.randrange(1 << 30)}"
    return corpus.encode(ds, syntax)


async def _find(session: Session) -> None:
    message = CFindRQ(message_id=session.message_id(), affected_sop_class_uid=STUDY_ROOT_QR_FIND)
    await session.request(STUDY_ROOT_QR_FIND, message, _identifier(session, STUDY_ROOT_QR_FIND))
    if session.rng.random() < 0.2:  # a late or stray cancel
        cancel = CCancelRQ(message_id_being_responded_to=message.message_id)
        context_id, _ = session.accepted.get(STUDY_ROOT_QR_FIND, (1, ""))
        await session.peer.send_message(context_id, encode_command(cancel), None)


async def _get(session: Session) -> None:
    message = CGetRQ(message_id=session.message_id(), affected_sop_class_uid=STUDY_ROOT_QR_GET)
    await session.request(STUDY_ROOT_QR_GET, message, _identifier(session, STUDY_ROOT_QR_GET))


async def _move(session: Session) -> None:
    destination = session.rng.choice((DESTINATION_AE, DESTINATION_AE, GONE_AE, "NOBODY",
                                      "EVIL\nAE"))
    message = CMoveRQ(message_id=session.message_id(), affected_sop_class_uid=STUDY_ROOT_QR_MOVE,
                      move_destination=destination)
    await session.request(STUDY_ROOT_QR_MOVE, message, _identifier(session, STUDY_ROOT_QR_MOVE))


async def _echo_request(session: Session) -> None:
    await session.request(VERIFICATION, CEchoRQ(message_id=session.message_id(),
                                                affected_sop_class_uid=VERIFICATION), None)


async def _mpps(session: Session) -> None:
    rng = session.rng
    syntax = session.syntax(MPPS)
    uid = f"{corpus.UID_ROOT}.4.{rng.randrange(1 << 20)}"
    study = f"{corpus.UID_ROOT}.1.{rng.randrange(STUDIES)}"
    create = mpps_create([scheduled_step(study, "SPS1")], patient=("Fuzz^MPPS", "FUZZ-0"),
                         pps_id="PPS1", start=("20240101", "120000"))
    await session.request(MPPS, NCreateRQ(message_id=session.message_id(),
                                          affected_sop_class_uid=MPPS,
                                          affected_sop_instance_uid=uid),
                          corpus.encode(create, syntax))
    final = mpps_final(rng.choice(("COMPLETED", "DISCONTINUED", "BOGUS")),
                       end=("20240101", "130000"), series_uid=f"{study}.9")
    await session.request(MPPS, NSetRQ(message_id=session.message_id(),
                                       requested_sop_class_uid=MPPS,
                                       requested_sop_instance_uid=uid),
                          corpus.encode(final, syntax))


async def _commit(session: Session) -> None:
    rng = session.rng
    ds = Dataset()
    ds.TransactionUID = f"{corpus.UID_ROOT}.5.{rng.randrange(1 << 20)}"
    ref = Dataset()
    ref.ReferencedSOPClassUID = corpus.CT
    ref.ReferencedSOPInstanceUID = f"{corpus.UID_ROOT}.3.{rng.randrange(1 << 30)}"
    ds.ReferencedSOPSequence = [ref]
    await session.request(STORAGE_COMMITMENT_PUSH, NActionRQ(
        message_id=session.message_id(), requested_sop_class_uid=STORAGE_COMMITMENT_PUSH,
        requested_sop_instance_uid=STORAGE_COMMITMENT_PUSH_INSTANCE, action_type_id=1,
        has_dataset=True), corpus.encode(ds, session.syntax(STORAGE_COMMITMENT_PUSH)))


async def _garbage_message(session: Session) -> None:
    """A mutated PDU in the middle of the association (most end it with an A-ABORT)."""
    session.counts.messages += 1
    await session.peer.write(mutate_pdu(session.rng, corpus.seeds()))
    await session.peer.responses(1.0, "mutated PDU")


OPERATIONS: Final[tuple[tuple[Callable[[Session], Awaitable[None]], int], ...]] = (
    (_store, 8), (_find, 4), (_get, 2), (_move, 2), (_echo_request, 1), (_mpps, 1),
    (_commit, 1), (_garbage_message, 1),
)


async def _end(session: Session) -> None:
    """Release, abort, close abruptly, or close inside a message."""
    rng = session.rng
    peer = session.peer
    roll = rng.random()
    if roll < 0.5:
        await peer.write(encode_pdu(AReleaseRQ()))
        await peer.read_pdu(READ_TIMEOUT)
    elif roll < 0.7:
        await peer.write(encode_pdu(AAbort()))
    elif roll < 0.85 and corpus.CT in session.accepted:
        context_id, _ = session.accepted[corpus.CT]
        message = CStoreRQ(message_id=session.message_id(), affected_sop_class_uid=corpus.CT,
                           affected_sop_instance_uid=f"{corpus.UID_ROOT}.3.{rng.randrange(99)}")
        await peer.write(mutate_bytes(rng, encode_command(message))[:40])
        await peer.write(bytes(context_id))  # half a PDU, then the close
    # else: just close


async def _session(rng: random.Random, peer: RawPeer, counts: Counts) -> None:
    rq, contexts = _proposal(rng)
    ac = await peer.associate(rq, READ_TIMEOUT)
    if ac is None:
        return
    accepted = _accepted(ac, contexts)
    session = Session(peer, rng, accepted, counts)
    operations, weights = zip(*OPERATIONS, strict=True)
    for _ in range(rng.randint(1, 6)):
        if peer.closed:
            return
        await rng.choices(operations, weights)[0](session)
    if not peer.closed:
        await _end(session)


def _accepted(ac: AAssociateAC, contexts: list[tuple[str, list[str]]]
              ) -> dict[str, tuple[int, str]]:
    ids = {2 * n + 1: abstract for n, (abstract, _) in enumerate(contexts)}
    return {ids[pc.context_id]: (pc.context_id, pc.transfer_syntax)
            for pc in ac.presentation_contexts
            if pc.result == ContextResult.ACCEPTANCE and pc.context_id in ids}


# --- cases before or around the association -----------------------------------------------


async def _garbage(rng: random.Random, peer: RawPeer, counts: Counts) -> None:
    seeds = corpus.seeds()
    stream = b"".join(mutate_pdu(rng, seeds) for _ in range(rng.randint(1, 4)))
    for piece in chunks(rng, stream):
        await peer.write(piece)
    await peer.read_pdu(READ_TIMEOUT)


async def _bad_associate(rng: random.Random, peer: RawPeer, counts: Counts) -> None:
    rq, _ = _proposal(rng)
    await peer.write(mutate_associate(rng, rq))
    await peer.read_pdu(READ_TIMEOUT)


async def _hostile_ae(rng: random.Random, peer: RawPeer, counts: Counts) -> None:
    rq, _ = _proposal(rng)
    title = rng.choice([t for t in HOSTILE_STRINGS if 0 < len(t) <= 16])
    hostile = rq[:26] + title.ljust(16, b" ") + rq[42:]  # the calling AE title field
    await peer.write(hostile)
    await peer.read_pdu(READ_TIMEOUT)


async def _slow(rng: random.Random, peer: RawPeer, counts: Counts) -> None:
    rq, _ = _proposal(rng)
    stop = rng.randrange(len(rq) + 1)
    for at in range(0, stop, 16):
        await peer.write(rq[at:min(at + 16, stop)])
        await asyncio.sleep(0.05)  # pacing, not synchronisation: a slow client
    await peer.read_pdu(1.0)


SCENARIOS: Final[tuple[tuple[Callable[[random.Random, RawPeer, Counts], Awaitable[None]],
                             int], ...]] = (
    (_session, 10), (_garbage, 3), (_bad_associate, 3), (_hostile_ae, 1), (_slow, 1),
)


async def run_case(rng: random.Random, port: int, counts: Counts) -> None:
    """One connection, one scenario, bounded by CASE_TIMEOUT."""
    scenarios, weights = zip(*SCENARIOS, strict=True)
    scenario = rng.choices(scenarios, weights)[0]
    counts.cases[scenario.__name__.lstrip("_")] += 1
    async with asyncio.timeout(CASE_TIMEOUT), RawPeer.connect(LOOPBACK, port,
                                                              counts.tally) as peer:
        await scenario(rng, peer, counts)


async def campaign(port: int, *, seconds: float, workers: int, seed: str,
                   counts: Counts) -> None:
    """`workers` concurrent connections, one case after another, for `seconds`."""
    deadline = time.monotonic() + seconds
    numbers = itertools.count()

    async def worker() -> None:
        while time.monotonic() < deadline:
            number = next(numbers)
            try:
                await run_case(random.Random(f"{seed}-{number}"), port, counts)
            except TimeoutError:
                counts.tally.silent["case over its time limit"] += 1
            except (ConnectionError, OSError) as exc:
                counts.client_errors.append(f"case {number}: cannot connect: {exc}")
            except Exception as exc:  # ServerMisbehaved, or a bug of ours: a finding
                counts.client_errors.append(f"case {number}: {type(exc).__name__}: {exc}")

    async def health() -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            ok, text = await _echo(LOOPBACK, port, "HEALTH", SERVER_AE, ECHO_TIMEOUT, 16384)
            elapsed = time.perf_counter() - started
            counts.echoes += 1
            counts.echo_worst = max(counts.echo_worst, elapsed)
            if not ok:
                counts.echo_failures.append(text)
            await asyncio.sleep(ECHO_INTERVAL)  # pacing of the probe

    await asyncio.gather(health(), *(worker() for _ in range(workers)))
