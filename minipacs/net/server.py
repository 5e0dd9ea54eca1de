"""The asyncio DICOM listener: one coroutine per association, limits, graceful shutdown.

Every connection negotiates on its own task, so a peer that connects and says nothing costs
one socket for at most the ARTIM timeout while every other association proceeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..ports import Channel
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


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Per-server limits (see the `limits:` configuration section)."""

    max_associations: int = 64
    artim_timeout: float = 30.0
    idle_timeout: float = 300.0
    association_timeout: float = 0.0


class Server:
    """Accepts associations and hands each established one to `service`."""

    def __init__(self, policy: AcceptorPolicy, service: Service, limits: ServerLimits) -> None:
        self.policy = policy
        self.service = service
        self.limits = limits
        self._server: asyncio.Server | None = None
        self._connections: set[Transport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (useful when listening on port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._on_connect, host, port,
                                                  reuse_address=True)

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
        over_limit = len(self._connections) >= limits.max_associations
        self._connections.add(conn)
        started = time.monotonic()
        try:
            async with asyncio.timeout(limits.association_timeout or None):
                await self._run(conn, over_limit)
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

    async def _run(self, conn: Transport, over_limit: bool) -> None:
        conn.start()
        try:
            event = await conn.handshake()
        except Exception:
            await conn.closed()  # ARTIM expiry or a bad first PDU; already logged as outcome
            return
        assert isinstance(event, AssociationRequested)
        rq = event.request
        if over_limit:
            conn.detail = f"over the limit of {self.limits.max_associations} associations"
            conn.respond_association(association_limit_rejection())
            await conn.closed()
            return
        answer = negotiate_as_acceptor(rq, self.policy)
        if isinstance(answer, AAssociateRJ):
            conn.detail = describe_reject(answer)
            conn.respond_association(answer)
            await conn.closed()
            return
        conn.respond_association(answer, negotiated(rq, answer, local_is_requestor=False))
        conn.outcome = "established"
        await self.service(conn.channel)
        await conn.finish()

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
