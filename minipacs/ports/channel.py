"""Channel and peers ports: one association as a service sees it, and outbound ones."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from ..proto.dimse import DimseMessage
from ..proto.negotiation import AcceptedContext, Negotiated
from ..proto.pdu import RoleSelection

# --- Channel (network side) ---------------------------------------------------------------
# What a service sees of one established association. The asyncio adapter in net/ implements
# it; services are tested against in-memory fakes of it.


class AssociationClosed(Exception):
    """The association ended (released, aborted or lost) while an operation still used it."""


class MessageNotEncodable(ValueError):
    """A message to send breaks its command set's encoding (PS3.7 §6.3.1, PS3.5 §6.2: a UI
    value over 64 bytes, a character outside the default repertoire). Nothing was sent:
    the association goes on."""


class DataStream(Protocol):
    """A data set arriving fragment by fragment (PS3.7 §8.1); iterate it exactly once."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def read_all(self, limit: int) -> bytes:
        """The whole data set; raises ValueError past `limit` bytes (after draining it)."""
        ...

    async def drain(self) -> None:
        """Discard what is left, so the association can go on (PS3.4 B.2.3 "drain, then answer")."""
        ...


@dataclass(slots=True)
class Request:
    """One incoming DIMSE request: the per-operation state (command, data set, cancel)."""

    context: AcceptedContext
    message: DimseMessage
    data: DataStream | None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class Reply:
    """One response to a request we sent, with its data set when it had one."""

    message: DimseMessage
    dataset: bytes | None = None


@dataclass(frozen=True, slots=True)
class AssociationInfo:
    """The per-association state a service may look at."""

    calling_ae: str
    called_ae: str
    peer_host: str
    peer_port: int
    negotiated: Negotiated
    user: str | None = None  # the user the requestor proved (PS3.7 D.3.3.7), if any
    tls: bool = False  # whether the association runs over TLS (PS3.15 Annex B)


@dataclass(slots=True)
class AssociationUsage:
    """What one association was used for: its summary log line (the dispatcher counts)."""

    requests: Counter[str] = field(default_factory=Counter)  # by SOP class UID
    stored: int = 0  # C-STORE: instances kept that we did not have
    duplicates: int = 0  # C-STORE: instances we already had, received again
    failed: int = 0  # C-STORE: instances refused (a failure status)
    studies: Counter[str] = field(default_factory=Counter)  # C-STORE: kept, by Study UID


class Channel(Protocol):
    """One established association, either role, as the services use it."""

    @property
    def info(self) -> AssociationInfo: ...

    @property
    def usage(self) -> AssociationUsage:
        """Counts for the association's summary line, kept by whoever serves it."""
        ...

    def requests(self) -> AsyncIterator[Request]:
        """Requests from the peer, each as soon as its command set has arrived; ends at release."""
        ...

    def next_message_id(self) -> int: ...

    def abort(self, detail: str = ...) -> None:
        """A-ABORT the association (PS3.8 §7.3): when it cannot go on in good order."""
        ...

    async def send(
        self,
        context_id: int,
        message: DimseMessage,
        dataset: bytes | AsyncIterable[bytes] | None = None,
    ) -> None:
        """Send one whole message; fragments of two messages never interleave (PS3.8 Annex E).

        Raises MessageNotEncodable (nothing sent) or AssociationClosed.
        """
        ...

    def request(
        self,
        context_id: int,
        message: DimseMessage,
        dataset: bytes | AsyncIterable[bytes] | None = None,
    ) -> AsyncIterator[Reply]:
        """Send a request and yield its responses, the final (non-pending) one last."""
        ...


# --- Peers (outbound associations) ----------------------------------------------------------


class PeerUnreachable(Exception):
    """No association could be opened with a peer (refused, rejected, timed out).

    str() is one line in words, fit for a log line.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Peers(Protocol):
    """The configured remote AEs we open associations to (C-MOVE destinations)."""

    def address(self, ae_title: str) -> str | None:
        """'host:port' of a configured AE title; None when the title is unknown."""
        ...

    def connect(self, ae_title: str, contexts: Sequence[tuple[str, str]], *,
                roles: Sequence[RoleSelection] = (), calling_ae: str | None = None
                ) -> AbstractAsyncContextManager[Channel]:
        """An association to `ae_title` proposing each (abstract syntax, transfer syntax)
        as its own context; released on leaving the block, aborted if the block raised.

        `roles`: SCP/SCU role selection items to propose (PS3.7 D.3.3.4); `calling_ae`:
        our AE title on it, when not the configured one. Entering raises PeerUnreachable
        with the reason in words.
        """
        ...
