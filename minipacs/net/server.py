"""The asyncio DICOM listener: one coroutine per association, limits, graceful shutdown.

Every connection negotiates on its own task. A connection that has not yet sent its
A-ASSOCIATE-RQ is a *handshake*: it does not count against the association limits, has
`handshake_timeout` seconds to complete, and at most `max_handshakes` are kept (a new
connection beyond that closes the oldest silent one), so silent sockets or a client dripping
one byte at a time cannot lock real clients out. Established associations are limited in
total and per peer address (A-ASSOCIATE-RJ, transient, PS3.8 §9.3.4).

A TLS listener (PS3.15 B.1) does the TLS handshake inside that same handshake phase, with
the context current when the connection arrived (`TlsContexts`, reloadable): a silent or
slow TLS client holds one handshake slot for at most `handshake_timeout` and delays nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Final

from ..ports import (
    NO_AUDIT,
    NO_METRICS,
    AdmissionRequest,
    AssociationClosed,
    AssociationDecided,
    AssociationGate,
    Audit,
    Channel,
    InstancesStored,
    Metrics,
    OpenGate,
    Participant,
    ServerLimits,
)
from ..proto.association import AssociationRequested
from ..proto.negotiation import (
    AcceptorPolicy,
    association_limit_rejection,
    check_association,
    negotiate_as_acceptor,
    negotiated,
)
from ..proto.pdu import (
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    ContextResult,
    UserIdentityRQ,
    describe_reject,
)
from ..proto.sop import name_of
from .tls import TlsContexts, describe_error
from .transport import Transport

log = logging.getLogger("minipacs.net")
assoc_log = logging.getLogger("minipacs.association")

Service = Callable[[Channel], Awaitable[None]]


# File descriptors kept free beyond the connections (index, spool files, logs, listeners).
SPARE_DESCRIPTORS: Final = 256
# RFC 8446 §5.1: a TLS record of content type 22 (handshake) starts with this byte; on the
# plain port it reads as an unknown PDU type (PS3.8 §9.3.1).
TLS_HANDSHAKE_RECORD: Final = 0x16


class Server:
    """Accepts associations and hands each established one to `service`."""

    def __init__(self, policy: AcceptorPolicy, service: Service, limits: ServerLimits,
                 metrics: Metrics = NO_METRICS, *, gate: AssociationGate | None = None,
                 audit: Audit = NO_AUDIT) -> None:
        self.policy = policy
        self.service = service
        self.limits = limits
        self.metrics = metrics
        self.gate: AssociationGate = gate or OpenGate()  # who may associate, and do what
        self.audit = audit
        self._listeners: list[tuple[asyncio.Server, TlsContexts | None]] = []
        self._connections: set[Transport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._handshakes: dict[Transport, None] = {}  # in arrival order: the oldest first
        self._associations: Counter[str] = Counter()  # established, by peer address

    @property
    def port(self) -> int:
        """The bound port of the first listener (useful when listening on port 0)."""
        assert self._listeners, "not started"
        return _port_of(self._listeners[0][0])

    @property
    def tls_port(self) -> int | None:
        """The bound port of the first TLS listener, if there is one."""
        return next((_port_of(server) for server, tls in self._listeners if tls is not None),
                    None)

    async def start(self, host: str, port: int, *, tls: TlsContexts | None = None) -> None:
        """Listen on host:port (plain, or DICOM TLS with `tls.server`); may be called for
        several addresses, which then share the limits."""
        limits = self.limits
        ensure_descriptors(limits.max_handshakes + limits.max_associations + SPARE_DESCRIPTORS)
        server = await asyncio.start_server(functools.partial(self._on_connect, tls), host,
                                            port, reuse_address=True)
        self._listeners.append((server, tls))

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; let associations finish for `grace` seconds, then abort them."""
        for server, _ in self._listeners:
            server.close()
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
        for server, _ in self._listeners:
            await server.wait_closed()

    async def _on_connect(self, tls: TlsContexts | None, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer, tls)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     tls: TlsContexts | None) -> None:
        limits = self.limits
        conn = Transport(reader, writer, requestor=False,
                         max_pdu_length=self.policy.max_pdu_length,
                         artim_timeout=limits.artim_timeout, idle_timeout=limits.idle_timeout)
        self._connections.add(conn)
        self.metrics.association_started()
        started = time.monotonic()
        try:
            async with asyncio.timeout(limits.association_timeout or None):
                await self._run(conn, tls)
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
            self._log_association(conn, time.monotonic() - started, secure=tls is not None)

    async def _run(self, conn: Transport, tls: TlsContexts | None) -> None:
        event = await self._handshake(conn, tls)
        if event is None:
            return
        rq = event.request
        answer = await self._answer(conn, rq)
        self.audit.record(AssociationDecided(
            Participant(rq.calling_ae_title, conn.peer_host, conn.user), rq.called_ae_title,
            conn.tls is not None, accepted=isinstance(answer, AAssociateAC),
            reason=conn.detail))
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

    async def _answer(self, conn: Transport, rq: AAssociateRQ) -> AAssociateAC | AAssociateRJ:
        """Limits, then the protocol checks, then the gate (AE titles, user identity), then
        the presentation contexts this requestor may use (PS3.8 §7.1, §9.3.4)."""
        refusal = self._over_limit(conn.peer_host)
        if refusal is not None:
            conn.detail, rejection = refusal
            return rejection
        rejection = check_association(rq, self.policy)
        if rejection is None:
            admission = await self.gate.admit(AdmissionRequest(
                rq.calling_ae_title, rq.called_ae_title, conn.peer_host, conn.tls is not None,
                rq.user_information.user_identity if isinstance(
                    rq.user_information.user_identity, UserIdentityRQ) else None))
            if admission.rejection is not None:
                conn.detail = admission.reason
                return admission.rejection
            conn.user = admission.user
            answer = negotiate_as_acceptor(rq, self.policy, permitted=admission.permits,
                                           identity_response=admission.identity_response)
            if isinstance(answer, AAssociateAC):
                self._log_refused_contexts(conn, rq, answer)
                return answer
            rejection = answer
        conn.detail = describe_reject(rejection)
        return rejection

    @staticmethod
    def _log_refused_contexts(conn: Transport, rq: AAssociateRQ, ac: AAssociateAC) -> None:
        """One line naming what this requestor may not use (contexts refused by the policy)."""
        refused = {pc.context_id for pc in ac.presentation_contexts
                   if pc.result == ContextResult.USER_REJECTION}
        if not refused:
            return
        names = sorted({name_of(pc.abstract_syntax) for pc in rq.presentation_contexts
                        if pc.context_id in refused})
        log.warning("%r at %s:%d%s is not permitted to use %s: %d presentation context(s) "
                    "refused", rq.calling_ae_title, conn.peer_host, conn.peer_port,
                    f" (user {conn.user!r})" if conn.user else "", ", ".join(names),
                    len(refused))

    async def _handshake(self, conn: Transport, tls: TlsContexts | None
                         ) -> AssociationRequested | None:
        """TLS (on a TLS listener), then the A-ASSOCIATE-RQ, within the handshake deadline;
        None if none came."""
        limits = self.limits
        if len(self._handshakes) >= limits.max_handshakes:
            oldest = next(iter(self._handshakes))
            del self._handshakes[oldest]
            oldest.outcome = "dropped"
            oldest.detail = (f"{limits.max_handshakes} connections were waiting for their "
                             "A-ASSOCIATE-RQ; the oldest made room")
            oldest.abort(oldest.detail)
        self._handshakes[conn] = None
        try:
            async with asyncio.timeout(limits.handshake_timeout):
                if tls is not None:
                    await conn.start_tls(tls.server)
                conn.start()
                event = await conn.handshake()
        except TimeoutError:
            conn.outcome = "timeout"
            what = "A-ASSOCIATE-RQ" if tls is None or conn.tls else "TLS handshake"
            conn.detail = f"no {what} within {limits.handshake_timeout:g} s"
            conn.abort(conn.detail)
            return None
        except AssociationClosed:
            await conn.closed()  # ARTIM, a bad first PDU, or made room: its outcome says
            return None
        except OSError as exc:  # the TLS handshake failed (ssl.SSLError), or was cut off
            # Not made room for meanwhile, and not a port probe that closed without a byte.
            if conn.outcome == "closed" and conn.received:
                conn.outcome, conn.detail = "tls-failed", describe_error(exc)
            conn.abort(conn.detail)
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

    def _log_association(self, conn: Transport, duration: float, *, secure: bool) -> None:
        """One INFO line per association: who, over what (``tls=no``, the TLS version and
        suite, ``tls=failed``, or ``tls=-`` when nothing came), what it was used for, how it
        ended.

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
        tls = conn.tls
        if tls is not None:
            transport = f"{tls}{f' cert={tls.peer!r}' if tls.peer else ''}"
        elif secure:  # a TLS listener: the handshake failed, or nothing at all came
            transport = "failed" if conn.received else "-"
        else:
            transport = "no"
        detail = conn.detail
        if not secure and detail.endswith(f"PDU type 0x{TLS_HANDSHAKE_RECORD:02x}"):
            detail += " (a TLS client on the plain port?)"
        assoc_log.info(
            "association peer=%s:%d tls=%s calling=%s called=%s contexts=%d/%d used=[%s]%s "
            "duration=%.3fs messages=%d result=%s%s",
            conn.peer_host, conn.peer_port, transport,
            repr(rq.calling_ae_title) if rq else "-", repr(rq.called_ae_title) if rq else "-",
            accepted, proposed, used, counts, duration,
            conn.channel.messages, conn.outcome, f" ({detail})" if detail else "",
        )
        self.metrics.association_ended(rq.calling_ae_title if rq else "-", conn.outcome,
                                       duration)
        if rq is not None and (usage.studies or usage.failed):
            self.audit.record(InstancesStored(
                Participant(rq.calling_ae_title, conn.peer_host, conn.user),
                dict(usage.studies), usage.failed))


def _port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


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
