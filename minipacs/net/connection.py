"""The asyncio adapter around one sans-I/O `Association`: it reads, feeds, writes and times.

A `Connection` is the `Channel` the services see. Its reader task turns received bytes into
association events: requests go to `requests()` (with their data set streamed through a small
bounded queue, so a slow disk slows the peer instead of growing memory), responses go to the
`request()` call waiting for them, C-CANCEL sets the matching request's `cancelled` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterable, AsyncIterator
from typing import Final

from ..ports import AssociationClosed, AssociationInfo, Reply, Request
from ..proto.association import (
    NEED_DATA,
    PDV_OVERHEAD,
    UNLIMITED_PDV,
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
from ..proto.dimse import CCancelRQ, DimseMessage, is_response
from ..proto.negotiation import Negotiated
from ..proto.pdu import AAssociateAC, AAssociateRJ, AReleaseRP, AReleaseRQ
from ..proto.status import StatusCategory, category

log = logging.getLogger("minipacs.net")

READ_SIZE: Final = 256 * 1024
# Data-set fragments buffered per request before the reader stops reading the socket.
STREAM_QUEUE: Final = 8
# Largest data set accepted inside a response (C-FIND identifiers, N-GET attribute lists).
MAX_REPLY_DATASET: Final = 16 << 20

_END: Final = object()


class PeerAborted(AssociationClosed):
    """The peer aborted the association (A-ABORT, or it closed the connection).

    `early` when it did so before sending us any DIMSE message: right after accepting the
    association or on our first request, which is how some peers refuse a calling AE title
    they do not know (instead of an A-ASSOCIATE-RJ).
    """

    def __init__(self, detail: str, *, early: bool) -> None:
        super().__init__(detail)
        self.early = early


class _Stream:
    """The `DataStream` of one request: fragments handed over by the reader task."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | object | BaseException] = asyncio.Queue(STREAM_QUEUE)
        self._done = False

    async def put(self, data: bytes, last: bool) -> None:
        await self._queue.put(data)
        if last:
            await self._queue.put(_END)

    def fail(self, exc: BaseException) -> None:
        """Wake the consumer with an error (the association died); never blocks."""
        with contextlib.suppress(asyncio.QueueFull):
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(exc)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self._done:
            item = await self._queue.get()
            if item is _END:
                self._done = True
                return
            if isinstance(item, BaseException):
                self._done = True
                raise item
            assert isinstance(item, bytes)
            yield item

    async def read_all(self, limit: int) -> bytes:
        out = bytearray()
        async for chunk in self:
            out += chunk
            if len(out) > limit:
                await self.drain()
                raise ValueError(f"data set larger than {limit} bytes")
        return bytes(out)

    async def drain(self) -> None:
        async for _ in self:
            pass


class _Pending:
    """Responses to one request we sent, with the data set of the one being received."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Reply | BaseException] = asyncio.Queue()
        self.message: DimseMessage | None = None
        self.dataset = bytearray()


class Connection:
    """One association over one asyncio stream pair; implements `ports.Channel`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        requestor: bool,
        max_pdu_length: int,
        artim_timeout: float,
        idle_timeout: float = 0,
    ) -> None:
        self.assoc = Association(requestor=requestor, max_pdu_length=max_pdu_length)
        self._reader = reader
        self._writer = writer
        self._artim_timeout = artim_timeout
        self._idle_timeout = idle_timeout
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer_host, self.peer_port = str(peer[0]), int(peer[1])
        self.negotiated: Negotiated | None = None
        self.outcome = "closed"
        self.detail = ""
        self.messages = 0
        self._loop = asyncio.get_running_loop()
        self._handshake: asyncio.Future[AssociationEvent] = self._loop.create_future()
        self._released: asyncio.Future[None] = self._loop.create_future()
        self._closed = asyncio.Event()
        # Unbounded: the peer's window bounds it, and the end marker must always fit.
        self._requests: asyncio.Queue[Request | None] = asyncio.Queue()
        self._streams: dict[int, _Stream] = {}  # context ID → stream being received
        self._incoming: dict[int, Request] = {}  # message ID → request not yet answered
        self._pending: dict[int, _Pending] = {}  # message ID → our request awaiting replies
        self._reply_by_ctx: dict[int, _Pending] = {}
        self._send_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._artim: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._release_asked = False
        self.ended: AssociationClosed | None = None  # what every waiter was told at the end
        self._reader_task: asyncio.Task[None] | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Signal the open transport to the state machine and start reading."""
        self.assoc.connection_made()
        self._flush()
        self._sync_timers()
        self._reader_task = asyncio.create_task(self._read_loop(), name="dicom-reader")

    async def handshake(self) -> AssociationEvent:
        """Wait for the A-ASSOCIATE indication or confirmation (or the abort that replaced it)."""
        return await asyncio.shield(self._handshake)

    def respond_association(self, answer: AAssociateAC | AAssociateRJ,
                            negotiated: Negotiated | None = None) -> None:
        """Send our A-ASSOCIATE response (acceptor)."""
        self.negotiated = negotiated
        self.assoc.send(answer)
        if isinstance(answer, AAssociateRJ):
            self.outcome = "rejected"
        self._flush()
        self._sync_timers()

    async def closed(self) -> None:
        """Wait until the transport is closed."""
        await self._closed.wait()

    async def finish(self) -> None:
        """After the service is done: answer a pending release, then wait for the close."""
        if self.assoc.state.value in ("Sta8", "Sta9", "Sta12"):
            self.assoc.send(AReleaseRP())
            self.outcome = "released"
            self._flush()
            self._sync_timers()
        elif self.assoc.established:
            self.abort("service ended without release")
        await self.closed()

    async def release(self, timeout: float) -> None:
        """A-RELEASE as requestor; aborts when the peer does not confirm in time."""
        if not self.assoc.established:
            return
        self._release_asked = True
        async with self._send_lock:
            self.assoc.send(AReleaseRQ())
            self._flush()
            self._sync_timers()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._released)
                await self.closed()
        except TimeoutError:
            self.abort("no A-RELEASE-RP in time")
        except AssociationClosed:
            pass  # aborted or closed meanwhile: nothing left to release

    def abort(self, detail: str = "aborted") -> None:
        """A-ABORT (service-user) if the association is up, then close the transport."""
        with contextlib.suppress(LocalProtocolError):
            self.assoc.abort(detail)
        self._handle_events()
        self._flush()
        self._close()

    # --- Channel ----------------------------------------------------------------------------

    @property
    def info(self) -> AssociationInfo:
        rq = self.assoc.request
        assert rq is not None and self.negotiated is not None
        return AssociationInfo(rq.calling_ae_title, rq.called_ae_title, self.peer_host,
                               self.peer_port, self.negotiated)

    async def requests(self) -> AsyncIterator[Request]:
        while True:
            item = await self._requests.get()
            if item is None:
                self._requests.put_nowait(None)  # later callers see the end too
                return
            yield item

    def next_message_id(self) -> int:
        while not (message_id := next(self._ids) & 0xFFFF):
            pass  # Message ID is a US; 0 is skipped on wrap-around
        return message_id

    async def send(self, context_id: int, message: DimseMessage,
                   dataset: bytes | AsyncIterable[bytes] | None = None) -> None:
        async with self._send_lock:
            try:
                self.assoc.send_command(context_id, message)
                if isinstance(dataset, bytes | bytearray | memoryview):
                    self._send_data(context_id, dataset, last=True)
                elif dataset is not None:
                    try:
                        await self._send_stream(context_id, dataset)
                    except BaseException:
                        # Half a data set is on the wire: the peer would read the next
                        # message as its continuation, so the association cannot go on.
                        self.abort("message interrupted while its data set was being sent")
                        raise
            except LocalProtocolError as exc:
                raise self.ended or AssociationClosed(str(exc)) from None
            self._flush()
            if is_response(message) and category(message.status) is not StatusCategory.PENDING:
                # The operation is over: C-CANCEL no longer applies, idleness may count again.
                self._incoming.pop(message.message_id_being_responded_to, None)
            try:
                await self._writer.drain()
            except (ConnectionError, OSError) as exc:
                raise AssociationClosed(str(exc)) from None

    async def _send_stream(self, context_id: int, dataset: AsyncIterable[bytes]) -> None:
        held: bytes | None = None
        async for chunk in dataset:
            if not chunk:
                continue
            if held is not None:
                self._send_data(context_id, held, last=False)
                await self._writer.drain()
            held = chunk
        self._send_data(context_id, held or b"", last=True)

    def _send_data(self, context_id: int, data: bytes | bytearray | memoryview, *,
                   last: bool) -> None:
        """Frame `data` one PDU at a time and write the PDUs as they are (with any command).

        `data_to_send()` joins what is queued into one object: for a data set that is one
        more copy of every byte (~20 us per 512 KiB, measured). Framing one PDU's worth at
        a time keeps each PDU as it was encoded; `writelines` hands them over together
        (uvloop writes them with one writev).
        """
        peer_max = self.assoc.peer_max_pdu
        step = max(peer_max - PDV_OVERHEAD, 1) if peer_max else UNLIMITED_PDV
        view = memoryview(data).cast("B")
        parts = [self.assoc.data_to_send()]
        for offset in range(0, max(len(view), 1), step):
            final = offset + step >= len(view)
            self.assoc.send_data(context_id, view[offset:offset + step], last=last and final)
            parts.append(self.assoc.data_to_send())
        if not self._writer.is_closing():
            self._writer.writelines([part for part in parts if part])

    async def request(self, context_id: int, message: DimseMessage,
                      dataset: bytes | AsyncIterable[bytes] | None = None
                      ) -> AsyncIterator[Reply]:
        pending = _Pending()
        self._pending[message.message_id] = pending
        try:
            await self.send(context_id, message, dataset)
            while True:
                item = await pending.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if category(item.message.status) is not StatusCategory.PENDING:
                    return
        finally:
            self._pending.pop(message.message_id, None)

    # --- reading ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while not self.assoc.finished:
                try:
                    data = await self._reader.read(READ_SIZE)
                except (ConnectionError, OSError):
                    data = b""
                self._touch()
                self.assoc.receive_data(data)
                # Close only after the events are handed over (the loop ends when finished):
                # closing first would fail the handshake before an A-ASSOCIATE-RJ is seen.
                self._flush(close=False)
                await self._dispatch_events()
                self._sync_timers()
                if not data:
                    break
        finally:
            self._close()

    def _handle_events(self) -> None:
        """Handle events that need no waiting (used when aborting from outside the reader)."""
        while (event := self.assoc.next_event()) is not NEED_DATA:
            assert not isinstance(event, DataReceived | CommandReceived)
            self._on_control(event)

    async def _dispatch_events(self) -> None:
        while (event := self.assoc.next_event()) is not NEED_DATA:
            if isinstance(event, DataReceived):
                await self._on_data(event)
            elif isinstance(event, CommandReceived):
                await self._on_command(event)
            else:
                self._on_control(event)

    async def _on_command(self, event: CommandReceived) -> None:
        message = event.message
        self.messages += 1
        if isinstance(message, CCancelRQ):
            target = self._incoming.get(message.message_id_being_responded_to)
            if target is not None:
                target.cancelled.set()
            return
        if is_response(message):
            pending = self._pending.get(message.message_id_being_responded_to)
            if pending is None:
                log.warning("%s: response to unknown message ID %d ignored", self.peer_host,
                            message.message_id_being_responded_to)
                pending = _Pending()  # still swallow its data set
            if message.has_dataset:
                pending.message = message
                pending.dataset.clear()
                self._reply_by_ctx[event.context_id] = pending
            else:
                pending.queue.put_nowait(Reply(message))
            return
        assert self.negotiated is not None
        stream = _Stream() if message.has_dataset else None
        if stream is not None:
            self._streams[event.context_id] = stream
        request = Request(self.negotiated.contexts[event.context_id], message, stream)
        self._incoming[message.message_id] = request
        await self._requests.put(request)

    async def _on_data(self, event: DataReceived) -> None:
        reply = self._reply_by_ctx.get(event.context_id)
        if reply is not None:
            reply.dataset += event.data
            if len(reply.dataset) > MAX_REPLY_DATASET:
                self.abort(f"response data set larger than {MAX_REPLY_DATASET} bytes")
                return
            if event.last:
                del self._reply_by_ctx[event.context_id]
                if reply.message is not None:
                    reply.queue.put_nowait(Reply(reply.message, bytes(reply.dataset)))
            return
        stream = self._streams[event.context_id]
        if event.last:
            del self._streams[event.context_id]
        await stream.put(event.data, event.last)

    def _on_control(self, event: AssociationEvent) -> None:
        if isinstance(event, AssociationRequested | AssociationAccepted | AssociationRejected):
            if isinstance(event, AssociationAccepted):
                self.outcome = "established"
            elif isinstance(event, AssociationRejected):
                self.outcome = "rejected"
            if not self._handshake.done():
                self._handshake.set_result(event)
        elif isinstance(event, ReleaseRequested):
            self._end_requests()
            if event.collision and self.assoc.is_requestor:
                # PS3.8 §9.2.2 release collision, requestor side (Sta9): answer at once.
                self.assoc.send(AReleaseRP())
                self._flush()
        elif isinstance(event, ReleaseConfirmed):
            self.outcome = "released"
            if self.assoc.state.value == "Sta12":
                self.assoc.send(AReleaseRP())  # collision, acceptor side (AR-10 then AR-4)
                self._flush()
            if not self._released.done():
                self._released.set_result(None)
        elif isinstance(event, Aborted):
            self.outcome = "aborted"
            if event.local:
                self.detail = f"we: {event.detail}"
                self._fail_all(AssociationClosed(self.detail))
            else:
                self.detail = f"peer: {event.detail}"
                self._fail_all(PeerAborted(self.detail, early=self.messages == 0))

    # --- plumbing ---------------------------------------------------------------------------

    def _end_requests(self) -> None:
        self._requests.put_nowait(None)

    def _fail_all(self, exc: AssociationClosed) -> None:
        if self.ended is None:
            self.ended = exc
        if not self._handshake.done():
            self._handshake.set_exception(exc)
            self._handshake.exception()  # mark retrieved: nobody may be waiting
        if not self._released.done():
            self._released.set_exception(exc)
            self._released.exception()
        for stream in self._streams.values():
            stream.fail(exc)
        self._streams.clear()
        for pending in self._pending.values():
            pending.queue.put_nowait(exc)
        for request in self._incoming.values():
            request.cancelled.set()
        while not self._requests.empty():  # requests not yet started will never be answered
            self._requests.get_nowait()
        self._end_requests()

    def _flush(self, *, close: bool = True) -> None:
        data = self.assoc.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)
        if close and self.assoc.finished:
            self._close()

    def _close(self) -> None:
        if self._closed.is_set():
            return
        self._fail_all(AssociationClosed(self.detail or "connection closed"))
        for handle in (self._artim, self._idle):
            if handle is not None:
                handle.cancel()
        self._artim = self._idle = None
        with contextlib.suppress(Exception):
            self._writer.close()
        self._closed.set()
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()

    def _sync_timers(self) -> None:
        """Arm or disarm the ARTIM timer as the state machine asks (PS3.8 §9.1.5)."""
        if self._closed.is_set():
            return
        if self.assoc.artim_running and self._artim is None:
            self._artim = self._loop.call_later(self._artim_timeout, self._artim_fired)
        elif not self.assoc.artim_running and self._artim is not None:
            self._artim.cancel()
            self._artim = None

    def _artim_fired(self) -> None:
        self._artim = None
        if not self.detail:
            self.detail = "ARTIM timer expired"
        if self.outcome in ("closed", "established"):
            self.outcome = "timeout"
        self.assoc.timer_expired()
        self._handle_events()
        self._flush()
        self._close()

    def _touch(self) -> None:
        """Restart the idle timer: an association silent this long is aborted."""
        if not self._idle_timeout or self._closed.is_set():
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self._loop.call_later(self._idle_timeout, self._idle_fired)

    def _idle_fired(self) -> None:
        self._idle = None
        if self._incoming or self._pending:
            self._touch()  # an operation is still running: silence from the peer is expected
            return
        self.outcome = "timeout"
        self.detail = f"idle for {self._idle_timeout:g} s"
        self.abort(self.detail)

