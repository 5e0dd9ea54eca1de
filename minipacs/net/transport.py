"""The asyncio adapter around one sans-I/O `Association`: it reads, feeds, writes and times.

A `Transport` owns one stream pair. Its reader task feeds received bytes to the association
and hands the events over: DIMSE commands and data-set fragments to its `Router` (the
`Channel` services see), association events to the lifecycle calls here (`handshake`,
`respond_association`, `release`, `finish`, `abort`). What to answer is the association's
decision (PS3.8 §9.2); this module only moves bytes, arms the ARTIM and idle timers, and
closes the socket when the association is finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from ..ports import AssociationClosed
from ..proto.association import (
    NEED_DATA,
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
from ..proto.dimse import DimseMessage
from ..proto.negotiation import Negotiated
from ..proto.pdu import AAssociateAC, AAssociateRJ, AReleaseRP, AReleaseRQ
from .router import READ_SIZE, Router
from .tls import TlsLayer, TlsSession, describe_error, session_of

log = logging.getLogger("minipacs.net")


class PeerAborted(AssociationClosed):
    """The peer aborted the association (A-ABORT, or it closed the connection).

    `early` when it did so before sending us any DIMSE message: right after accepting the
    association or on our first request, which is how some peers refuse a calling AE title
    they do not know (instead of an A-ASSOCIATE-RJ).
    """

    def __init__(self, detail: str, *, early: bool) -> None:
        super().__init__(detail)
        self.early = early


class Transport:
    """One association over one asyncio stream pair: bytes, timers and lifecycle."""

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
        self._tls_layer: TlsLayer | None = None  # TLS done here (a server's), not by the stream
        self._early = b""  # plaintext that came with the end of the TLS handshake
        self._artim_timeout = artim_timeout
        self._idle_timeout = idle_timeout
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer_host, self.peer_port = str(peer[0]), int(peer[1])
        self.user: str | None = None  # the user the requestor proved (PS3.7 D.3.3.7)
        self.negotiated: Negotiated | None = None
        # Whether the bytes run over TLS (PS3.15 Annex B), and what it negotiated: set by the
        # stream itself (a client's) or by `start_tls` (a server's). None: plain TCP.
        self.tls: TlsSession | None = session_of(writer.get_extra_info)
        self.outcome = "closed"
        self.detail = ""
        self.read_error = ""  # why reading failed, when the connection said more than EOF
        self.received = 0  # bytes received
        self._loop = asyncio.get_running_loop()
        self._handshake: asyncio.Future[AssociationEvent] = self._loop.create_future()
        self._released: asyncio.Future[None] = self._loop.create_future()
        self._closed = asyncio.Event()
        # Held while one message goes out: fragments of two never interleave (PS3.8 Annex E).
        self.sending = asyncio.Lock()
        self._artim: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.channel = Router(self)

    # --- lifecycle --------------------------------------------------------------------------

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """The TLS handshake as the server, before `start` (PS3.15 B.1); raises OSError
        (ssl.SSLError among them) when it fails or the peer goes. The caller bounds it in time.

        TLS runs in a `TlsLayer` over this very stream: the bytes read so far are the
        handshake's, whatever the event loop, and a refusal reaches the peer as a TLS alert.
        """
        layer = self._tls_layer = TlsLayer(context, server_side=True)
        while not layer.established:
            data = await self._reader.read(READ_SIZE)
            self.received += len(data)
            try:
                self._early = layer.receive(data)  # plaintext sent with the handshake's end
            finally:
                self._write_raw(layer.data_to_send())  # our flight, or the alert
        self.tls = layer.session()

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
                            negotiated: Negotiated | None = None) -> bool:
        """Send our A-ASSOCIATE response (acceptor); False when the peer has gone meanwhile."""
        if not self.assoc.association_response_due:
            return False  # PS3.8 Table 9-10 Sta3: the peer's close or abort was answered
        self.negotiated = negotiated
        self.assoc.send(answer)
        if isinstance(answer, AAssociateRJ):
            self.outcome = "rejected"
        self._flush()
        self._sync_timers()
        return True

    async def closed(self) -> None:
        """Wait until the transport is closed."""
        await self._closed.wait()

    async def finish(self) -> None:
        """After the service is done: answer a pending release, then wait for the close."""
        if self.assoc.awaiting_release_response:
            self._answer_release()
        elif self.assoc.established:
            self.abort("service ended without release")
        await self.closed()

    async def release(self, timeout: float) -> None:
        """A-RELEASE as requestor; aborts when the peer does not confirm in time."""
        if not self.assoc.established:
            return
        async with self.sending:
            with contextlib.suppress(LocalProtocolError):  # ended while we waited our turn
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

    # --- writing (the router's messages) --------------------------------------------------

    def queue_command(self, context_id: int, message: DimseMessage) -> None:
        """Frame a command set; it goes out with the next `send_data` or `flush`.

        Raises ValueError, with nothing queued, when the message cannot be encoded.
        """
        self.assoc.send_command(context_id, message)

    def send_data(self, context_id: int, data: bytes | bytearray | memoryview, *,
                  last: bool) -> None:
        """Frame (part of) a data set and write it, with any command queued before it."""
        self.assoc.send_data(context_id, memoryview(data).cast("B"), last=last)
        self._flush()

    def flush(self) -> None:
        self._flush()

    async def drain(self) -> None:
        """Back-pressure: wait until the socket buffer has room; AssociationClosed if gone."""
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise AssociationClosed(str(exc)) from None

    def _flush(self) -> None:
        self._write(self.assoc.pdus_to_send())
        if self.assoc.finished:
            self._close()

    def _write(self, pdus: list[bytes]) -> None:
        if not pdus or self._writer.is_closing():
            return
        if self._tls_layer is not None:
            try:
                for pdu in pdus:
                    self._tls_layer.send(pdu)
            except (ssl.SSLError, ValueError):
                return  # TLS has failed or ended: the connection is going
            self._write_raw(self._tls_layer.data_to_send())
        elif len(pdus) == 1:
            self._writer.write(pdus[0])
        else:
            self._writer.writelines(pdus)

    def _write_raw(self, data: bytes) -> None:
        if data and not self._writer.is_closing():
            self._writer.write(data)

    # --- reading ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        early, self._early = self._early, b""
        try:
            while not self.assoc.finished:
                data, early = (early, b"") if early else (await self._receive(), b"")
                self.assoc.receive_data(data)
                # Close only after the events are handed over (the loop ends when finished):
                # closing first would fail the handshake before an A-ASSOCIATE-RJ is seen.
                self._write(self.assoc.pdus_to_send())
                await self._dispatch_events()
                self._sync_timers()
                if not data:
                    break
        finally:
            self._close()

    async def _receive(self) -> bytes:
        """The peer's next bytes (decrypted, under TLS); b"" once the connection closed."""
        while True:
            if self._tls_layer is not None and self._tls_layer.closed:
                return b""  # close_notify received: the peer waits for ours, not for data
            try:
                data = await self._reader.read(READ_SIZE)
            except (ConnectionError, OSError) as exc:
                if isinstance(exc, ssl.SSLError):
                    # e.g. a TLS 1.3 server refusing our certificate after its handshake
                    self.read_error = f"TLS: {describe_error(exc)}"
                data = b""
            self._touch()
            self.received += len(data)
            layer = self._tls_layer
            if layer is None:
                return data
            try:
                plain = layer.receive(data)
            except OSError as exc:  # ssl.SSLError: a bad record, an alert from the peer
                self.read_error = f"TLS: {describe_error(exc)}"
                return b""
            finally:
                self._write_raw(layer.data_to_send())
            if plain or not data or layer.closed:
                return plain  # else a record is still incomplete: read on

    def _handle_events(self) -> None:
        """Handle events that need no waiting (used when aborting from outside the reader)."""
        while (event := self.assoc.next_event()) is not NEED_DATA:
            assert not isinstance(event, DataReceived | CommandReceived)
            self._on_control(event)

    async def _dispatch_events(self) -> None:
        while (event := self.assoc.next_event()) is not NEED_DATA:
            if isinstance(event, DataReceived):
                await self.channel.on_data(event)
            elif isinstance(event, CommandReceived):
                await self.channel.on_command(event)
            else:
                self._on_control(event)

    def _on_control(self, event: AssociationEvent) -> None:
        if isinstance(event, AssociationRequested | AssociationAccepted | AssociationRejected):
            if isinstance(event, AssociationAccepted):
                self.outcome = "established"
            elif isinstance(event, AssociationRejected):
                self.outcome = "rejected"
            if not self._handshake.done():
                self._handshake.set_result(event)
        elif isinstance(event, ReleaseRequested):
            self.channel.end_requests()
        elif isinstance(event, ReleaseConfirmed):
            self.outcome = "released"
            if not self._released.done():
                self._released.set_result(None)
        elif isinstance(event, Aborted):
            self.outcome = "aborted"
            if event.local:
                self.detail = f"we: {event.detail}"
                self._fail_all(AssociationClosed(self.detail))
            else:
                self.detail = f"peer: {self.read_error or event.detail}"
                self._fail_all(PeerAborted(self.detail, early=self.channel.messages == 0))
        if self.assoc.release_response_due:  # a release collision (PS3.8 §9.2.2)
            self._answer_release()

    def _answer_release(self) -> None:
        self.assoc.send(AReleaseRP())
        self.outcome = "released"
        self._flush()
        self._sync_timers()

    # --- plumbing ---------------------------------------------------------------------------

    def _fail_all(self, exc: AssociationClosed) -> None:
        if not self._handshake.done():
            self._handshake.set_exception(exc)
            self._handshake.exception()  # mark retrieved: nobody may be waiting
        if not self._released.done():
            self._released.set_exception(exc)
            self._released.exception()
        self.channel.fail_all(exc)

    def _close(self) -> None:
        if self._closed.is_set():
            return
        self._fail_all(AssociationClosed(self.detail or "connection closed"))
        for handle in (self._artim, self._idle):
            if handle is not None:
                handle.cancel()
        self._artim = self._idle = None
        if self._tls_layer is not None and self._tls_layer.established:
            self._tls_layer.close()
            self._write_raw(self._tls_layer.data_to_send())
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
        if self.channel.busy:
            self._touch()  # an operation is still running: silence from the peer is expected
            return
        self.outcome = "timeout"
        self.detail = f"idle for {self._idle_timeout:g} s"
        self.abort(self.detail)

