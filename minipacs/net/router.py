"""The DIMSE request/response router of one association: the `Channel` services see.

The transport hands it every command and data-set fragment received. Requests go to
`requests()`, with their data set streamed through a small bounded queue (a slow disk slows
the peer instead of growing memory); responses go to the `request()` call waiting for them;
C-CANCEL sets the matching request's `cancelled` event (PS3.7 §9.3.2.3). Messages we send go
out whole, one at a time, through the transport (PS3.8 Annex E).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterable, AsyncIterator
from typing import Final, Protocol

from ..ports import (
    AssociationClosed,
    AssociationInfo,
    AssociationUsage,
    MessageNotEncodable,
    Reply,
    Request,
)
from ..proto.association import (
    Association,
    CommandReceived,
    DataReceived,
    LocalProtocolError,
)
from ..proto.dimse import CCancelRQ, DimseMessage, is_response
from ..proto.negotiation import Negotiated
from ..proto.status import StatusCategory, category

log = logging.getLogger("minipacs.net")

READ_SIZE: Final = 256 * 1024
# Data-set fragments buffered per request before the reader stops reading the socket.
STREAM_QUEUE: Final = 8
# Largest data set accepted inside a response (C-FIND identifiers, N-GET attribute lists).
MAX_REPLY_DATASET: Final = 16 << 20

_END: Final = object()


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


class Link(Protocol):
    """What the router needs of its transport (net/transport.py)."""

    assoc: Association
    negotiated: Negotiated | None
    peer_host: str
    peer_port: int
    sending: asyncio.Lock  # held while one whole message goes out

    def queue_command(self, context_id: int, message: DimseMessage) -> None: ...

    def send_data(self, context_id: int, data: bytes | bytearray | memoryview, *,
                  last: bool) -> None: ...

    def flush(self) -> None: ...

    async def drain(self) -> None: ...

    def abort(self, detail: str = ...) -> None: ...


class Router:
    """Routes one association's DIMSE messages; implements `ports.Channel`."""

    def __init__(self, transport: Link) -> None:
        self.transport = transport
        self.messages = 0  # DIMSE messages received
        self.usage = AssociationUsage()  # what the services did with it, for the summary
        self.ended: AssociationClosed | None = None  # what every waiter was told at the end
        # Unbounded: the peer's window bounds it, and the end marker must always fit.
        self._requests: asyncio.Queue[Request | None] = asyncio.Queue()
        self._streams: dict[int, _Stream] = {}  # context ID → stream being received
        self._incoming: dict[int, Request] = {}  # message ID → request not yet answered
        self._pending: dict[int, _Pending] = {}  # message ID → our request awaiting replies
        self._reply_by_ctx: dict[int, _Pending] = {}
        self._ids = itertools.count(1)

    @property
    def busy(self) -> bool:
        """An operation is under way in either direction (silence is then expected)."""
        return bool(self._incoming or self._pending)

    def abort(self, detail: str = "aborted") -> None:
        """A-ABORT the association (PS3.8 §7.3)."""
        self.transport.abort(detail)

    # --- Channel ----------------------------------------------------------------------------

    @property
    def info(self) -> AssociationInfo:
        transport = self.transport
        rq = transport.assoc.request
        assert rq is not None and transport.negotiated is not None
        return AssociationInfo(rq.calling_ae_title, rq.called_ae_title, transport.peer_host,
                               transport.peer_port, transport.negotiated,
                               user=transport.user, tls=transport.tls is not None)

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
        transport = self.transport
        async with transport.sending:
            try:
                try:
                    transport.queue_command(context_id, message)
                except ValueError as exc:  # nothing was queued: the association goes on
                    raise MessageNotEncodable(str(exc)) from None
                if isinstance(dataset, bytes | bytearray | memoryview):
                    transport.send_data(context_id, dataset, last=True)
                elif dataset is not None:
                    try:
                        await self._send_stream(context_id, dataset)
                    except BaseException:
                        # Half a data set is on the wire: the peer would read the next
                        # message as its continuation, so the association cannot go on.
                        transport.abort("message interrupted while its data set was being sent")
                        raise
                else:
                    transport.flush()
            except LocalProtocolError as exc:
                raise self.ended or AssociationClosed(str(exc)) from None
            if is_response(message) and category(message.status) is not StatusCategory.PENDING:
                # The operation is over: C-CANCEL no longer applies, idleness may count again.
                self._incoming.pop(message.message_id_being_responded_to, None)
            await transport.drain()

    async def _send_stream(self, context_id: int, dataset: AsyncIterable[bytes]) -> None:
        held: bytes | None = None
        async for chunk in dataset:
            if not chunk:
                continue
            if held is not None:
                self.transport.send_data(context_id, held, last=False)
                await self.transport.drain()
            held = chunk
        self.transport.send_data(context_id, held or b"", last=True)

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

    # --- fed by the transport ---------------------------------------------------------------

    async def on_command(self, event: CommandReceived) -> None:
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
                log.warning("%s: response to unknown message ID %d ignored",
                            self.transport.peer_host, message.message_id_being_responded_to)
                pending = _Pending()  # still swallow its data set
            if message.has_dataset:
                pending.message = message
                pending.dataset.clear()
                self._reply_by_ctx[event.context_id] = pending
            else:
                pending.queue.put_nowait(Reply(message))
            return
        negotiated = self.transport.negotiated
        assert negotiated is not None
        stream = _Stream() if message.has_dataset else None
        if stream is not None:
            self._streams[event.context_id] = stream
        request = Request(negotiated.contexts[event.context_id], message, stream)
        self._incoming[message.message_id] = request
        await self._requests.put(request)

    async def on_data(self, event: DataReceived) -> None:
        reply = self._reply_by_ctx.get(event.context_id)
        if reply is not None:
            reply.dataset += event.data
            if len(reply.dataset) > MAX_REPLY_DATASET:
                self.transport.abort(f"response data set larger than {MAX_REPLY_DATASET} bytes")
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

    def end_requests(self) -> None:
        """No more requests will come (A-RELEASE indication, or the end)."""
        self._requests.put_nowait(None)

    def fail_all(self, exc: AssociationClosed) -> None:
        """The association is over: wake every waiter with `exc`."""
        if self.ended is None:
            self.ended = exc
        for stream in self._streams.values():
            stream.fail(exc)
        self._streams.clear()
        for pending in self._pending.values():
            pending.queue.put_nowait(exc)
        for request in self._incoming.values():
            request.cancelled.set()
        while not self._requests.empty():  # requests not yet started will never be answered
            self._requests.get_nowait()
        self.end_requests()
