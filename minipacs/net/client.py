"""The one outbound association lifecycle (association-requestor) every SCU path uses.

`association()` is an async context manager: it opens the TCP connection (bounded by
`connect_timeout`), sends the A-ASSOCIATE-RQ and waits for the answer (bounded by the ARTIM
timeout, PS3.8 §9.1.5), and hands the association to the block. Leaving the block releases
it (A-RELEASE, PS3.8 §7.2); an exception or a cancellation inside the block aborts it
(A-ABORT, §7.3). An association that cannot be established raises `PeerUnreachable` (one
line in words), or its subclass `AssociationRejectedError` for an A-ASSOCIATE-RJ.

The request carries everything negotiated, user identity (PS3.7 D.3.3.7) included, so new
user-information items need nothing here. DICOM TLS (PS3.15 B.1) is the `tls` context handed
to `_open_transport`: the TLS handshake is part of opening the connection (bounded by the
connect timeout), and a failed one is a `PeerUnreachable` saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator
from typing import Final

from ..ports import PeerUnreachable
from ..proto.association import AssociationAccepted, AssociationRejected
from ..proto.negotiation import negotiated
from ..proto.pdu import AAssociateRJ, AAssociateRQ, RejectResult, describe_reject
from .router import Router
from .tls import describe_error
from .transport import PeerAborted, Transport

__all__ = ["DEFAULT_ARTIM_TIMEOUT", "DEFAULT_CONNECT_TIMEOUT", "AssociationRejectedError",
           "PeerAborted", "PeerUnreachable", "Router", "association"]

log = logging.getLogger("minipacs.net")

DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_ARTIM_TIMEOUT: Final = 30.0


class AssociationRejectedError(PeerUnreachable):
    """The peer answered A-ASSOCIATE-RJ; `reject` holds result, source and reason."""

    def __init__(self, reject: AAssociateRJ) -> None:
        super().__init__(f"association rejected: {describe_reject(reject)}")
        self.reject = reject

    @property
    def transient(self) -> bool:
        """PS3.8 §9.3.4: a transient rejection may succeed when tried again later."""
        return self.reject.result == RejectResult.TRANSIENT


@contextlib.asynccontextmanager
async def association(
    host: str,
    port: int,
    request: AAssociateRQ,
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    artim_timeout: float = DEFAULT_ARTIM_TIMEOUT,
    idle_timeout: float = 0.0,
    attempts: int = 1,
    backoff: float = 0.2,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Router]:
    """An established association to host:port for the block; released or aborted after it.

    `attempts` > 1 retries opening it, `backoff` seconds after the first failure and twice
    as long each time after; a permanent rejection is never retried. A-RELEASE waits
    `artim_timeout` for its answer, then aborts. `tls` makes it a DICOM TLS connection.
    """
    transport = await _establish(host, port, request, connect_timeout, artim_timeout,
                                 idle_timeout, attempts, backoff, tls)
    try:
        yield transport.channel
    except BaseException as exc:
        transport.abort(_abort_detail(exc))
        raise
    await transport.release(artim_timeout)


def _abort_detail(exc: BaseException) -> str:
    """Why we abort, for the log: the association ended, was cancelled, or the block failed."""
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "cancelled"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


async def _establish(host: str, port: int, request: AAssociateRQ, connect_timeout: float,
                     artim_timeout: float, idle_timeout: float, attempts: int,
                     backoff: float, tls: ssl.SSLContext | None) -> Transport:
    """Open the association, trying up to `attempts` times; raises PeerUnreachable."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    delay = backoff
    for attempt in range(1, attempts + 1):
        try:
            return await _open(host, port, request, connect_timeout, artim_timeout,
                               idle_timeout, tls)
        except AssociationRejectedError as exc:
            if not exc.transient or attempt == attempts:
                raise
            reason = str(exc)
        except PeerUnreachable as exc:
            if attempt == attempts:
                if attempt > 1:
                    raise PeerUnreachable(f"{exc} (after {attempt} attempts)") from None
                raise
            reason = str(exc)
        log.info("association to %r at %s:%d, attempt %d of %d: %s; retrying in %.1f s",
                 request.called_ae_title, host, port, attempt, attempts, reason, delay)
        await asyncio.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")  # the loop returns or raises


async def _open_transport(host: str, port: int, connect_timeout: float,
                          tls: ssl.SSLContext | None = None
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The TCP connection, TLS-wrapped with `tls` (PS3.15 B.1); raises PeerUnreachable in
    words. Connecting and the TLS handshake share the connect timeout."""
    try:
        async with asyncio.timeout(connect_timeout):
            if tls is None:
                return await asyncio.open_connection(host, port)
            return await asyncio.open_connection(host, port, ssl=tls,
                                                 ssl_handshake_timeout=connect_timeout)
    except TimeoutError:
        raise PeerUnreachable(f"cannot connect to {host}:{port}: timed out after "
                              f"{connect_timeout:g} s") from None
    except ssl.SSLError as exc:
        raise PeerUnreachable(f"TLS handshake with {host}:{port} failed: "
                              f"{describe_error(exc)}") from None
    except OSError as exc:
        # A refusal in the same words on every loop (asyncio's says "Connect call failed").
        reason = os.strerror(exc.errno) if isinstance(exc, ConnectionError) and exc.errno \
            else exc.strerror or str(exc) or type(exc).__name__
        raise PeerUnreachable(f"cannot connect to {host}:{port}: {reason}") from None


async def _open(host: str, port: int, request: AAssociateRQ, connect_timeout: float,
                artim_timeout: float, idle_timeout: float,
                tls: ssl.SSLContext | None) -> Transport:
    """One attempt: connect, A-ASSOCIATE-RQ, the answer (PS3.8 §9.2 AE-1 to AE-4)."""
    reader, writer = await _open_transport(host, port, connect_timeout, tls)
    max_pdu = request.user_information.max_length or 0
    conn = Transport(reader, writer, requestor=True, max_pdu_length=max_pdu,
                     artim_timeout=artim_timeout, idle_timeout=idle_timeout)
    conn.assoc.send(request)
    conn.start()
    try:
        async with asyncio.timeout(artim_timeout):
            event = await conn.handshake()
    except TimeoutError:
        conn.abort("no A-ASSOCIATE response")
        raise PeerUnreachable(f"{host}:{port} did not answer the association request "
                              f"within {artim_timeout:g} s") from None
    except BaseException as exc:
        conn.abort()
        if not isinstance(exc, Exception):
            raise
        # A TLS 1.3 server checks our certificate after its handshake; asyncio's closes the
        # connection without sending its alert, so silence is all we may hear.
        hint = (" right after the TLS handshake: does the peer accept our certificate?"
                if tls is not None and conn.received == 0 and not conn.read_error else "")
        raise PeerUnreachable(f"association with {host}:{port} failed: {exc}{hint}") from None
    if isinstance(event, AssociationRejected):
        await conn.closed()
        raise AssociationRejectedError(event.reject)
    assert isinstance(event, AssociationAccepted)
    try:
        conn.negotiated = negotiated(request, event.accept, local_is_requestor=True)
    except ValueError as exc:
        conn.abort(str(exc))
        raise PeerUnreachable(f"invalid A-ASSOCIATE-AC from {host}:{port}: {exc}") from None
    return conn
