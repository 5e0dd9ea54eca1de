"""The dispatcher on its own, over a fake channel: routing, failures, window, drain first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Final

import pytest

from minipacs.ports import (
    AssociationClosed,
    AssociationInfo,
    AssociationUsage,
    Channel,
    Operation,
    Principal,
    Reply,
    Request,
)
from minipacs.proto.dimse import (
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CFindRSP,
    CommandField,
    CStoreRQ,
    CStoreRSP,
    DimseMessage,
    NGetRQ,
    NGetRSP,
)
from minipacs.proto.negotiation import AcceptedContext, Negotiated
from minipacs.proto.sop import VERIFICATION
from minipacs.proto.status import Status
from minipacs.services.dispatcher import Dispatcher, Outcome, response_for

CT: Final = "1.2.840.10008.5.1.4.1.1.2"
MR: Final = "1.2.840.10008.5.1.4.1.1.4"
FIND: Final = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve - FIND
EXPLICIT: Final = "1.2.840.10008.1.2.1"
CONTEXTS: Final = {1: AcceptedContext(1, VERIFICATION, EXPLICIT),
                   3: AcceptedContext(3, CT, EXPLICIT),
                   5: AcceptedContext(5, MR, EXPLICIT),
                   7: AcceptedContext(7, FIND, EXPLICIT)}
WAIT: Final = 5.0


class Fragments:
    """A request's data set, handed out piece by piece; records how far it was read."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = list(pieces)
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.taken < len(self.pieces):
            self.taken += 1
            await asyncio.sleep(0)  # a reader task hands each fragment over
            yield self.pieces[self.taken - 1]

    async def read_all(self, limit: int) -> bytes:
        return b"".join([piece async for piece in self])

    async def drain(self) -> None:
        async for _ in self:
            pass

    @property
    def drained(self) -> bool:
        return self.taken == len(self.pieces)


@dataclass
class FakeChannel:
    """Feeds queued requests to the dispatcher and records what it sends."""

    window: int = 1
    incoming: asyncio.Queue[Request | None] = field(default_factory=asyncio.Queue)
    sent: list[tuple[DimseMessage, bytes | None]] = field(default_factory=list)
    drained_when_sent: list[bool] = field(default_factory=list)
    closed: bool = False
    usage: AssociationUsage = field(default_factory=AssociationUsage)

    @property
    def info(self) -> AssociationInfo:
        return AssociationInfo("PEER", "MINIPACS", "127.0.0.1", 40000,
                               Negotiated(CONTEXTS, 16384, async_invoked=self.window))

    async def requests(self) -> AsyncIterator[Request]:
        while (request := await self.incoming.get()) is not None:
            yield request

    def next_message_id(self) -> int:
        return 1

    def abort(self, detail: str = "aborted") -> None:
        self.closed = True

    async def send(self, context_id: int, message: DimseMessage,
                   dataset: bytes | AsyncIterable[bytes] | None = None) -> None:
        if self.closed:
            raise AssociationClosed("gone")
        assert dataset is None or isinstance(dataset, bytes)
        self.sent.append((message, dataset))

    def request(self, context_id: int, message: DimseMessage,
                dataset: bytes | AsyncIterable[bytes] | None = None) -> AsyncIterator[Reply]:
        raise NotImplementedError

    def feed(self, context_id: int, message: DimseMessage,
             data: Fragments | None = None) -> Request:
        request = Request(CONTEXTS[context_id], message, data)
        self.incoming.put_nowait(request)
        return request

    def end(self) -> None:
        self.incoming.put_nowait(None)

    def status_of(self, message_id: int) -> int:
        (status,) = [m.status for m, _ in self.sent  # type: ignore[union-attr]
                     if m.message_id_being_responded_to == message_id]  # type: ignore[union-attr]
        return int(status)


def echo_rq(message_id: int) -> CEchoRQ:
    return CEchoRQ(message_id=message_id, affected_sop_class_uid=VERIFICATION)


def store_rq(message_id: int, sop_class: str = CT) -> CStoreRQ:
    return CStoreRQ(message_id=message_id, affected_sop_class_uid=sop_class,
                    affected_sop_instance_uid=f"1.2.3.{message_id}")


async def succeed(channel: Channel, request: Request) -> Outcome:
    return Outcome(response_for(request.message, Status.SUCCESS))


async def dispatch(dispatcher: Dispatcher, channel: FakeChannel) -> None:
    async with asyncio.timeout(WAIT):
        await dispatcher(channel)  # type: ignore[arg-type]


# --- routing ----------------------------------------------------------------------------------


async def test_routing_errors_have_their_statuses_and_the_association_goes_on() -> None:
    dispatcher = Dispatcher()
    dispatcher.register(CommandField.C_ECHO_RQ, [VERIFICATION], succeed)
    dispatcher.register(CommandField.C_STORE_RQ, [CT], succeed)
    channel = FakeChannel()
    channel.feed(5, store_rq(1, MR))  # C-STORE registered, MR not: PS3.7 C.5.19 0122H
    channel.feed(3, store_rq(2, MR))  # names MR on the CT context: 0122H too
    channel.feed(7, CFindRQ(message_id=3, affected_sop_class_uid=FIND))  # no C-FIND: 0211H
    channel.feed(1, echo_rq(4))  # still served afterwards
    channel.end()
    await dispatch(dispatcher, channel)
    assert channel.status_of(1) == Status.SOP_CLASS_NOT_SUPPORTED
    assert channel.status_of(2) == Status.SOP_CLASS_NOT_SUPPORTED
    assert channel.status_of(3) == Status.UNRECOGNIZED_OPERATION
    assert channel.status_of(4) == Status.SUCCESS
    responses = {m.message_id_being_responded_to: m for m, _ in channel.sent}  # type: ignore[union-attr]
    assert isinstance(responses[1], CStoreRSP) and isinstance(responses[3], CFindRSP)
    assert responses[1].affected_sop_instance_uid == "1.2.3.1"  # type: ignore[union-attr]
    assert "C_FIND_RQ not supported" in responses[3].error_comment  # type: ignore[union-attr]
    assert isinstance(responses[4], CEchoRSP)


class OnlyEchoAndFind:
    """A policy: this association may echo and find, nothing else (records who asked)."""

    def __init__(self) -> None:
        self.asked: list[tuple[Principal, Operation, str | None]] = []

    def allowed(self, who: Principal, operation: Operation, sop_class: str | None = None
                ) -> bool:
        self.asked.append((who, operation, sop_class))
        return operation in (Operation.ECHO, Operation.FIND)


async def test_a_request_not_permitted_is_0124_and_the_association_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """PS3.7 Annex C 0124H Refused: Not Authorized, one log line naming AE and address."""
    handled: list[int] = []

    async def record(channel: Channel, request: Request) -> Outcome:
        handled.append(request.message.message_id)  # type: ignore[union-attr]
        return Outcome(response_for(request.message, Status.SUCCESS))

    policy = OnlyEchoAndFind()
    dispatcher = Dispatcher(permissions=policy)
    dispatcher.register(CommandField.C_ECHO_RQ, [VERIFICATION], record)
    dispatcher.register(CommandField.C_STORE_RQ, [CT], record)
    dispatcher.register(CommandField.C_FIND_RQ, [FIND], record)
    channel = FakeChannel()
    stream = Fragments(b"a" * 10, b"b" * 10)
    channel.feed(3, store_rq(1), stream)  # store: not permitted
    channel.feed(7, CFindRQ(message_id=2, affected_sop_class_uid=FIND))
    channel.feed(1, echo_rq(3))
    channel.end()
    with caplog.at_level("WARNING", logger="minipacs.services"):
        await dispatch(dispatcher, channel)
    assert channel.status_of(1) == Status.NOT_AUTHORIZED
    assert (channel.status_of(2), channel.status_of(3)) == (Status.SUCCESS, Status.SUCCESS)
    assert sorted(handled) == [2, 3]  # the refused C-STORE never reached its service
    assert stream.drained  # PS3.4 B.2.3: the whole message is taken before the answer
    (line,) = [r.getMessage() for r in caplog.records if "0x0124" in r.getMessage()]
    assert line.startswith("C-STORE '1.2.3.1' from 'PEER' at 127.0.0.1:40000: 0x0124")
    assert "'store' is not permitted" in line
    who, operation, sop_class = policy.asked[0]
    assert (who, operation, sop_class) == (Principal("127.0.0.1", None, "PEER", False),
                                           Operation.STORE, CT)


async def test_an_n_request_is_routed_by_its_requested_sop_class() -> None:
    seen: list[str] = []

    async def handler(channel: Channel, request: Request) -> Outcome:
        seen.append(request.message.requested_sop_class_uid)  # type: ignore[union-attr]
        return Outcome(response_for(request.message, Status.SUCCESS))

    dispatcher = Dispatcher()
    dispatcher.register(CommandField.N_GET_RQ, [CT], handler)
    channel = FakeChannel()
    channel.feed(3, NGetRQ(message_id=1, requested_sop_class_uid=CT,
                           requested_sop_instance_uid="1.2.3"))
    channel.end()
    await dispatch(dispatcher, channel)
    assert seen == [CT]
    (message, _), = channel.sent
    assert isinstance(message, NGetRSP) and message.status == Status.SUCCESS


# --- failures -----------------------------------------------------------------------------


async def test_a_handler_exception_is_0110_for_that_operation_only() -> None:
    async def broken(channel: Channel, request: Request) -> Outcome:
        if request.message.message_id == 2:  # type: ignore[union-attr]
            raise RuntimeError("bug")
        return Outcome(response_for(request.message, Status.SUCCESS))

    dispatcher = Dispatcher()
    dispatcher.register(CommandField.C_STORE_RQ, [CT], broken)
    channel = FakeChannel(window=3)
    for message_id in (1, 2, 3):
        channel.feed(3, store_rq(message_id), Fragments(b"data"))
    channel.end()
    await dispatch(dispatcher, channel)
    assert [channel.status_of(i) for i in (1, 2, 3)] == [
        Status.SUCCESS, Status.PROCESSING_FAILURE, Status.SUCCESS]
    (failed,) = [m for m, _ in channel.sent if m.status == Status.PROCESSING_FAILURE]  # type: ignore[union-attr]
    assert failed.error_comment == "internal error: RuntimeError"  # type: ignore[union-attr]


async def test_an_ended_association_stops_the_operation_quietly() -> None:
    async def ends(channel: Channel, request: Request) -> Outcome:
        raise AssociationClosed("peer: A-ABORT")

    dispatcher = Dispatcher()
    dispatcher.register(CommandField.C_ECHO_RQ, [VERIFICATION], ends)
    channel = FakeChannel()
    channel.feed(1, echo_rq(1))
    channel.end()
    await dispatch(dispatcher, channel)
    assert channel.sent == []  # nobody is left to answer


# --- the asynchronous operations window (PS3.7 D.3.3.3) ------------------------------------


@pytest.mark.parametrize("window", [1, 2, 4])
async def test_at_most_window_operations_run_at_once(window: int) -> None:
    running = 0
    most = 0
    gate = asyncio.Event()
    started = asyncio.Condition()

    async def slow(channel: Channel, request: Request) -> Outcome:
        nonlocal running, most
        running += 1
        most = max(most, running)
        async with started:
            started.notify_all()
        await gate.wait()
        running -= 1
        return Outcome(response_for(request.message, Status.SUCCESS))

    dispatcher = Dispatcher()
    dispatcher.register(CommandField.C_ECHO_RQ, [VERIFICATION], slow)
    channel = FakeChannel(window=window)
    for message_id in range(1, 7):
        channel.feed(1, echo_rq(message_id))
    channel.end()
    task = asyncio.create_task(dispatch(dispatcher, channel))
    async with asyncio.timeout(WAIT), started:
        await started.wait_for(lambda: running == window)
    for _ in range(3):
        await asyncio.sleep(0)  # a wrongly free slot would start one more now
    assert running == window
    gate.set()
    await task
    assert most == window
    assert sorted(m.message_id_being_responded_to for m, _ in channel.sent) == [  # type: ignore[union-attr]
        1, 2, 3, 4, 5, 6]


# --- drain, then answer (PS3.4 B.2.3) ------------------------------------------------------


async def test_the_rest_of_the_data_set_is_read_before_the_answer() -> None:
    async def refuse_early(channel: Channel, request: Request) -> Outcome:
        assert request.data is not None
        async for _ in request.data:
            break  # reads one fragment, then refuses
        return Outcome(response_for(request.message, Status.OUT_OF_RESOURCES, "disk full"))

    original_send = FakeChannel.send
    data = Fragments(b"a", b"b", b"c", b"d")

    class Watching(FakeChannel):
        async def send(self, context_id: int, message: DimseMessage,
                       dataset: bytes | AsyncIterable[bytes] | None = None) -> None:
            self.drained_when_sent.append(data.drained)
            await original_send(self, context_id, message, dataset)

    dispatcher = Dispatcher()
    dispatcher.register(CommandField.C_STORE_RQ, [CT], refuse_early)
    channel = Watching()
    channel.feed(3, store_rq(1), data)
    channel.end()
    await dispatch(dispatcher, channel)
    assert channel.drained_when_sent == [True]
    assert channel.status_of(1) == Status.OUT_OF_RESOURCES
