"""`ports.Peers` over asyncio: outbound associations to configured AEs (C-MOVE destinations).

Outbound policy (PS3.4 C.4.2.3, PS3.8 §7.1): at most `max_per_peer` associations to one AE
at a time (the others wait their turn), a connect timeout, and a bounded retry with
exponential backoff for opening the association — a refused TCP connection, a timeout or a
transient rejection is retried, a permanent rejection is not. Our A-ASSOCIATE-RQ carries no
Asynchronous Operations Window item (PS3.7 D.3.3.3: synchronous operations). A peer marked
`tls` is reached over DICOM TLS (PS3.15 B.1) with the client context current at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from ..ports import Channel, ConnectPolicy, PeerUnreachable
from ..proto.negotiation import build_associate_rq
from ..proto.pdu import RoleSelection
from .client import association
from .tls import TlsContexts

__all__ = ["ConnectPolicy", "NetPeers", "PeerAddress"]


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """Where a configured AE listens."""

    host: str
    port: int
    tls: bool = False


class NetPeers:
    """`ports.Peers`: the configured AEs, reached through `net.client.association`."""

    def __init__(self, ae_title: str, peers: Mapping[str, PeerAddress],
                 policy: ConnectPolicy | None = None, tls: TlsContexts | None = None) -> None:
        self.ae_title = ae_title
        self.peers = dict(peers)
        self.policy = policy or ConnectPolicy()
        self.tls = tls
        if self.policy.max_per_peer < 1 or self.policy.attempts < 1:
            raise ValueError("max_per_peer and attempts must be at least 1")
        if tls is None and any(peer.tls for peer in self.peers.values()):
            raise ValueError("a peer uses TLS but no TLS contexts were given")
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
        policy = self.policy
        # One transfer syntax per context: a context's list is not a preference order, the
        # acceptor may pick any (PS3.8 §7.1.1.13), so each pair is proposed on its own.
        request = build_associate_rq(calling_ae or self.ae_title, title,
                                     [(sop_class, [ts]) for sop_class, ts in contexts],
                                     max_pdu_length=policy.max_pdu_length, roles=roles)
        slots = self._slots.setdefault(title, asyncio.Semaphore(policy.max_per_peer))
        tls = self.tls.client if peer.tls and self.tls is not None else None
        async with slots, association(peer.host, peer.port, request,
                                      connect_timeout=policy.connect_timeout,
                                      artim_timeout=policy.artim_timeout,
                                      attempts=policy.attempts, backoff=policy.backoff,
                                      tls=tls) as conn:
            yield conn
