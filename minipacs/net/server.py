"""The asyncio DICOM listener: one coroutine per association, limits, graceful shutdown.

Every connection negotiates on its own task. A connection that has not yet sent its
A-ASSOCIATE-RQ is a *handshake*: it does not count against the association limits, has
`handshake_timeout` seconds to complete, and at most `max_handshakes` are kept (a new
connection beyond that closes the oldest silent one), so silent sockets or a client dripping
one byte at a time cannot lock real clients out. Established associations are limited in
total and per peer address (A-ASSOCIATE-RJ, transient, PS3.8 §9.3.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Final

from ..ports import NO_METRICS, AssociationClosed, Channel, Metrics, ServerLimits
from ..proto.association import AssociationRequested
from ..proto.negotiation import (
    AcceptorPolicy,
    association_limit_rejection,
    negotiate_as_acceptor,
    negotiated,
)
from ..proto.pdu import AAssociateRJ, describe_reject
from ..proto.sop import name_of
from .transport import Transport

log = logging.getLogger("minipacs.net")
assoc_log = logging.getLogger("minipacs.association")

Service = Callable[[Channel], Awaitable[None]]


# File descriptors kept free beyond the connections (index, spool files, logs, listeners).
SPARE_DESCRIPTORS: Final = 256


class Server:
    """Accepts associations and hands each established one to `service`."""

    def __init__(self, policy: AcceptorPolicy, service: Service, limits: ServerLimits,
                 metrics: Metrics = NO_METRICS) -> None:
        self.policy = policy
        self.service = service
        self.limits = limits
        self.metrics = metrics
        self._server: asyncio.Server | None = None
        self._connections: set[Transport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._handshakes: dict[Transport, None] = {}  # in arrival order: the oldest first
        self._associations: Counter[str] = Counter()  # established, by peer address

    @property
    def port(self) -> int:
        """The bound port (useful when listening on port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Listen; `reuse_port` (SO_REUSEPORT) lets several processes share the port, the
        kernel spreading new connections over them."""
        limits = self.limits
        ensure_descriptors(limits.max_handshakes + limits.max_associations + SPARE_DESCRIPTORS)
        self._server = await asyncio.start_server(self._on_connect, host, port,
                                                  reuse_address=True, reuse_port=reuse_port)

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; let associations finish for `grace` seconds, then abort them."""
        if self._server is not None:
            self._server.close()
        tasks = set(self._tasks)
        if tasks:
            log.info("waiting up to %g s for %d association(s) to finish", grace, len(tasks))
            _, still = await asyncio.wait(tasks, timeout=grace)
            if still:
                log.warning("aborting %d association(s) still open after %g s", len(still),
                            grace)
                for conn in list(self._connections):
                    conn.abort("server shutting down")
                await asyncio.wait(still, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limits = self.limits
        conn = Transport(reader, writer, requestor=False,
                         max_pdu_length=self.policy.max_pdu_length,
                         artim_timeout=limits.artim_timeout, idle_timeout=limits.idle_timeout)
        self._connections.add(conn)
        self.metrics.association_started()
        started = time.monotonic()
        try:
            async with asyncio.timeout(limits.association_timeout or None):
                await self._run(conn)
        except TimeoutError:
            conn.outcome, conn.detail = "timeout", (
                f"association exceeded {limits.association_timeout:g} s")
            conn.abort(conn.detail)
        except Exception:
            log.exception("association with %s failed", conn.peer_host)
            conn.outcome = "error"
            conn.abort("internal error")
        finally:
            self._connections.discard(conn)
            with contextlib.suppress(Exception):
                conn.abort("closing")
            self._log_association(conn, time.monotonic() - started)

    async def _run(self, conn: Transport) -> None:
        event = await self._handshake(conn)
        if event is None:
            return
        rq = event.request
        refusal = self._over_limit(conn.peer_host)
        if refusal is not None:
            conn.detail, answer = refusal
        else:
            answer = negotiate_as_acceptor(rq, self.policy)
            if isinstance(answer, AAssociateRJ):
                conn.detail = describe_reject(answer)
        if isinstance(answer, AAssociateRJ):
            if conn.respond_association(answer):
                await conn.closed()
            return
        if not conn.respond_association(answer, negotiated(rq, answer, local_is_requestor=False)):
            return  # gone before our answer (PS3.8 Table 9-10, Sta3): AA-4 said it all
        conn.outcome = "established"
        self._associations[conn.peer_host] += 1
        try:
            await self.service(conn.channel)
            await conn.finish()
        finally:
            self._associations[conn.peer_host] -= 1
            if not self._associations[conn.peer_host]:
                del self._associations[conn.peer_host]

    async def _handshake(self, conn: Transport) -> AssociationRequested | None:
        """Wait for the A-ASSOCIATE-RQ, within the handshake deadline; None if none came."""
        limits = self.limits
        if len(self._handshakes) >= limits.max_handshakes:
            oldest = next(iter(self._handshakes))
            del self._handshakes[oldest]
            oldest.outcome = "dropped"
            oldest.detail = (f"{limits.max_handshakes} connections were waiting for their "
                             "A-ASSOCIATE-RQ; the oldest made room")
            oldest.abort(oldest.detail)
        self._handshakes[conn] = None
        conn.start()
        try:
            async with asyncio.timeout(limits.handshake_timeout):
                event = await conn.handshake()
        except TimeoutError:
            conn.outcome = "timeout"
            conn.detail = f"no A-ASSOCIATE-RQ within {limits.handshake_timeout:g} s"
            conn.abort(conn.detail)
            return None
        except AssociationClosed:
            await conn.closed()  # ARTIM, a bad first PDU, or made room: its outcome says
            return None
        finally:
            self._handshakes.pop(conn, None)
        assert isinstance(event, AssociationRequested)
        return event

    def _over_limit(self, address: str) -> tuple[str, AAssociateRJ] | None:
        """Why and how to refuse one more association, if a limit is reached."""
        limits = self.limits
        if sum(self._associations.values()) >= limits.max_associations:
            return (f"over the limit of {limits.max_associations} associations",
                    association_limit_rejection())
        if self._associations[address] >= limits.max_associations_per_address:
            return (f"over the limit of {limits.max_associations_per_address} associations "
                    f"from {address}", association_limit_rejection(per_peer=True))
        return None

    def _log_association(self, conn: Transport, duration: float) -> None:
        """One INFO line per association: who, what it was used for, how it ended.

        Peer-supplied strings (AE titles) are written escaped (repr): a title cannot forge a
        line or drive the operator's terminal.
        """
        rq = conn.assoc.request
        accepted = len(conn.negotiated.contexts) if conn.negotiated else 0
        proposed = len(rq.presentation_contexts) if rq else 0
        usage = conn.channel.usage
        used = ", ".join(f"{name_of(uid)} x{count}"
                         for uid, count in usage.requests.most_common())
        instances = usage.stored + usage.duplicates + usage.failed
        counts = (f" stored={usage.stored} duplicates={usage.duplicates} failed={usage.failed}"
                  if instances else "")
        assoc_log.info(
            "association peer=%s:%d calling=%s called=%s contexts=%d/%d used=[%s]%s "
            "duration=%.3fs messages=%d result=%s%s",
            conn.peer_host, conn.peer_port,
            repr(rq.calling_ae_title) if rq else "-", repr(rq.called_ae_title) if rq else "-",
            accepted, proposed, used, counts, duration,
            conn.channel.messages, conn.outcome, f" ({conn.detail})" if conn.detail else "",
        )
        self.metrics.association_ended(rq.calling_ae_title if rq else "-", conn.outcome,
                                       duration)


def ensure_descriptors(wanted: int) -> None:
    """Raise this process's open-file limit towards `wanted` (up to the hard limit).

    Each connection is a socket: with a soft limit of 1024 (a common default), accept()
    would fail long before the configured limits are reached.
    """
    try:
        import resource
    except ImportError:  # not on this platform: nothing to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("the limits need %d file descriptors; this process may open %d "
                    "(raise its hard limit, e.g. LimitNOFILE= in systemd)", wanted, target)
