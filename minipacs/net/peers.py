"""`ports.Peers` over asyncio: outbound associations to configured AEs (C-MOVE destinations).

Outbound policy (PS3.4 C.4.2.3, PS3.8 §7.1): at most `max_per_peer` associations to one AE
at a time (the others wait their turn), a connect timeout, and a bounded retry with
exponential backoff for opening the association — a refused TCP connection, a timeout or a
transient rejection is retried, a permanent rejection is not. Our A-ASSOCIATE-RQ carries no
Asynchronous Operations Window item (PS3.7 D.3.3.3: synchronous operations).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ..ports import Channel, ConnectPolicy, PeerUnreachable
from ..proto.negotiation import build_associate_rq
from ..proto.pdu import RejectResult, RoleSelection
from .client import AssociationError, AssociationRejectedError, associate
from .connection import Connection

__all__ = ["ConnectPolicy", "NetPeers", "PeerAddress"]

log = logging.getLogger("minipacs.peers")

RELEASE_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """Where a configured AE listens."""

    host: str
    port: int


class NetPeers:
    """`ports.Peers`: the configured AEs, reached with `net.client.associate`."""

    def __init__(self, ae_title: str, peers: Mapping[str, PeerAddress],
                 policy: ConnectPolicy | None = None) -> None:
        self.ae_title = ae_title
        self.peers = dict(peers)
        self.policy = policy or ConnectPolicy()
        if self.policy.max_per_peer < 1 or self.policy.attempts < 1:
            raise ValueError("max_per_peer and attempts must be at least 1")
        self._slots: dict[str, asyncio.Semaphore] = {}

    def address(self, ae_title: str) -> str | None:
        peer = self.peers.get(ae_title.strip(" "))
        return None if peer is None else f"{peer.host}:{peer.port}"

    @contextlib.asynccontextmanager
    async def connect(self, ae_title: str, contexts: Sequence[tuple[str, str]], *,
                      roles: Sequence[RoleSelection] = (), calling_ae: str | None = None
                      ) -> AsyncIterator[Channel]:
        title = ae_title.strip(" ")
        peer = self.peers.get(title)
        if peer is None:
            raise PeerUnreachable(f"{title!r} is not a configured peer")
        slots = self._slots.setdefault(title, asyncio.Semaphore(self.policy.max_per_peer))
        async with slots:
            conn = await self._open(title, peer, contexts, roles, calling_ae or self.ae_title)
            try:
                yield conn
            except BaseException:
                conn.abort("sub-operations stopped")
                raise
            await conn.release(RELEASE_TIMEOUT)

    async def _open(self, title: str, peer: PeerAddress, contexts: Sequence[tuple[str, str]],
                    roles: Sequence[RoleSelection], calling_ae: str) -> Connection:
        policy = self.policy
        # One transfer syntax per context: a context's list is not a preference order, the
        # acceptor may pick any (PS3.8 §7.1.1.13), so each pair is proposed on its own.
        request = build_associate_rq(calling_ae, title,
                                     [(sop_class, [ts]) for sop_class, ts in contexts],
                                     max_pdu_length=policy.max_pdu_length, roles=roles)
        delay = policy.backoff
        for attempt in range(1, policy.attempts + 1):
            try:
                return await associate(peer.host, peer.port, request,
                                       connect_timeout=policy.connect_timeout,
                                       artim_timeout=policy.artim_timeout)
            except AssociationRejectedError as exc:
                if exc.reject.result == RejectResult.PERMANENT or attempt == policy.attempts:
                    raise PeerUnreachable(str(exc)) from None
                reason = str(exc)
            except AssociationError as exc:
                if attempt == policy.attempts:
                    suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
                    raise PeerUnreachable(f"{exc}{suffix}") from None
                reason = str(exc)
            log.info("association to %s at %s:%d, attempt %d of %d: %s; retrying in %.1f s",
                     title, peer.host, peer.port, attempt, policy.attempts, reason, delay)
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # the loop returns or raises
