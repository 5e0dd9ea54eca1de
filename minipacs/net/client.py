"""Outbound associations (association-requestor): connect, negotiate, hand back a Channel."""

from __future__ import annotations

import asyncio
import os
from typing import Final

from ..proto.association import AssociationAccepted, AssociationRejected
from ..proto.negotiation import negotiated
from ..proto.pdu import (
    ACSE_PROTOCOL_VERSION_NOT_SUPPORTED,
    PRESENTATION_LOCAL_LIMIT_EXCEEDED,
    PRESENTATION_TEMPORARY_CONGESTION,
    AAssociateRJ,
    AAssociateRQ,
    RejectReason,
    RejectResult,
    RejectSource,
)
from .connection import Connection

DEFAULT_CONNECT_TIMEOUT: Final = 10.0


class AssociationError(Exception):
    """An outbound association could not be established; str() is one line for humans."""


class AssociationRejectedError(AssociationError):
    """The peer answered A-ASSOCIATE-RJ."""

    def __init__(self, reject: AAssociateRJ) -> None:
        super().__init__(f"association rejected: {describe_reject(reject)}")
        self.reject = reject


def describe_reject(rj: AAssociateRJ) -> str:
    """Result, source and reason of an A-ASSOCIATE-RJ in words (PS3.8 §9.3.4)."""
    result = {RejectResult.PERMANENT: "permanent", RejectResult.TRANSIENT: "transient"}.get(
        rj.result, f"result {rj.result}")
    if rj.source == RejectSource.SERVICE_USER:
        source = "service user"
        reason = {
            RejectReason.NO_REASON: "no reason given",
            RejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED: "application context not supported",
            RejectReason.CALLING_AE_NOT_RECOGNIZED: "calling AE title not recognized",
            RejectReason.CALLED_AE_NOT_RECOGNIZED: "called AE title not recognized",
        }.get(rj.reason)
    elif rj.source == RejectSource.SERVICE_PROVIDER_ACSE:
        source = "service provider (ACSE)"
        reason = {1: "no reason given",
                  ACSE_PROTOCOL_VERSION_NOT_SUPPORTED: "protocol version not supported"
                  }.get(rj.reason)
    elif rj.source == RejectSource.SERVICE_PROVIDER_PRESENTATION:
        source = "service provider (presentation)"
        reason = {PRESENTATION_TEMPORARY_CONGESTION: "temporary congestion",
                  PRESENTATION_LOCAL_LIMIT_EXCEEDED: "local limit exceeded"}.get(rj.reason)
    else:
        source, reason = f"source {rj.source}", None
    return f"{result}, {source}, {reason or f'reason {rj.reason}'}"


async def associate(
    host: str,
    port: int,
    request: AAssociateRQ,
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    artim_timeout: float = 30.0,
    idle_timeout: float = 0.0,
) -> Connection:
    """Open an association to host:port; raises AssociationError with a one-line reason."""
    try:
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        raise AssociationError(f"cannot connect to {host}:{port}: timed out after "
                               f"{connect_timeout:g} s") from None
    except OSError as exc:
        # A refusal in the same words on every loop (asyncio's says "Connect call failed").
        reason = os.strerror(exc.errno) if isinstance(exc, ConnectionError) and exc.errno \
            else exc.strerror or exc
        raise AssociationError(f"cannot connect to {host}:{port}: {reason}") from None
    max_pdu = request.user_information.max_length or 0
    conn = Connection(reader, writer, requestor=True, max_pdu_length=max_pdu,
                      artim_timeout=artim_timeout, idle_timeout=idle_timeout)
    conn.assoc.send(request)
    conn.start()
    try:
        async with asyncio.timeout(artim_timeout):
            event = await conn.handshake()
    except TimeoutError:
        conn.abort("no A-ASSOCIATE response")
        raise AssociationError(f"{host}:{port} did not answer the association request "
                               f"within {artim_timeout:g} s") from None
    except Exception as exc:
        conn.abort()
        raise AssociationError(f"association with {host}:{port} failed: {exc}") from None
    if isinstance(event, AssociationRejected):
        await conn.closed()
        raise AssociationRejectedError(event.reject)
    assert isinstance(event, AssociationAccepted)
    try:
        conn.negotiated = negotiated(request, event.accept, local_is_requestor=True)
    except ValueError as exc:
        conn.abort(str(exc))
        raise AssociationError(f"invalid A-ASSOCIATE-AC from {host}:{port}: {exc}") from None
    return conn
