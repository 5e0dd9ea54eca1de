"""The access policy: (calling AE, peer address, user, operation, SOP class) → allowed or not.

One pure object built from the configuration (DESIGN "Permissions"), asked by negotiation
(which contexts can be of any use), by the dispatcher (each DIMSE request) and by the HTTP
layer (each DICOMweb request). It does no I/O: host names of peers are resolved to
addresses by whoever builds it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..ports import ALL_OPERATIONS, Operation, Principal, describe_operations

__all__ = ["AccessPolicy", "PeerRule", "normal_address"]


@dataclass(frozen=True, slots=True)
class PeerRule:
    """A configured AE: the addresses it may call from, what it may do."""

    addresses: frozenset[str]
    allow: frozenset[Operation]


def normal_address(host: str) -> str:
    """An address as compared: an IPv4-mapped IPv6 address (a dual-stack listener's view of an
    IPv4 peer) becomes the IPv4 address; anything else is kept as given."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class AccessPolicy:
    """Who may associate, and what each principal may do (README "Security").

    - A calling AE title listed in `peers` may do its `allow` list; with `check_peer_host`
      only from its configured addresses.
    - Any other calling AE title may do `unknown_aes`; when that is empty it may not even
      associate (A-ASSOCIATE-RJ, calling AE title not recognized).
    - A user with an `allow` list of its own does that list, whatever its AE; without one,
      its AE's list over DICOM, and everything over HTTP (there is no AE there).
    - An HTTP request without a user does `http_anonymous`.
    """

    def __init__(self, *, peers: Mapping[str, PeerRule], unknown_aes: frozenset[Operation],
                 check_peer_host: bool = False,
                 users: Mapping[str, frozenset[Operation] | None] | None = None,
                 http_anonymous: frozenset[Operation] = frozenset()) -> None:
        self.peers = MappingProxyType({title.strip(" "): PeerRule(
            frozenset(map(normal_address, rule.addresses)), rule.allow)
            for title, rule in peers.items()})
        self.unknown_aes = unknown_aes
        self.check_peer_host = check_peer_host
        self.users = MappingProxyType(dict(users or {}))
        self.http_anonymous = http_anonymous

    def refusal(self, calling_ae: str, peer_host: str) -> str | None:
        """Why an association from `calling_ae` at `peer_host` is refused, or None."""
        title = calling_ae.strip(" ")
        rule = self.peers.get(title)
        if rule is None:
            if not self.unknown_aes:
                return f"calling AE {title!r} is not a configured peer (unknown_aes: [])"
            return None
        if not self._from_its_host(rule, peer_host):
            return (f"calling AE {title!r} calls from {peer_host}, not from its configured "
                    "host (check_peer_host)")
        return None

    def operations(self, who: Principal) -> frozenset[Operation]:
        """Everything `who` may do."""
        if who.user is not None:
            own = self.users.get(who.user)
            if own is not None:
                return own
            if who.calling_ae is None:
                return ALL_OPERATIONS
        if who.calling_ae is None:
            return self.http_anonymous
        title = who.calling_ae.strip(" ")
        rule = self.peers.get(title)
        if rule is None:
            return self.unknown_aes
        return rule.allow if self._from_its_host(rule, who.peer_host) else frozenset()

    def allowed(self, who: Principal, operation: Operation, sop_class: str | None = None
                ) -> bool:
        """`ports.Permissions`: the SOP class does not matter beyond its operation."""
        return operation in self.operations(who)

    def describe(self) -> list[str]:
        """The effective policy, one line per rule, for the log at start."""
        lines = [f"peer {title!r}: {describe_operations(rule.allow)}"
                 + (f" from {', '.join(sorted(rule.addresses)) or '(unresolved)'}"
                    if self.check_peer_host else "")
                 for title, rule in sorted(self.peers.items())]
        unknown = describe_operations(self.unknown_aes)
        lines.append(f"unknown calling AEs: {unknown}"
                     + (" (associations refused)" if not self.unknown_aes else ""))
        for name, own in sorted(self.users.items()):
            lines.append(f"user {name!r}: "
                         + (describe_operations(own) if own is not None else "its AE's rights"))
        lines.append(f"HTTP without credentials: {describe_operations(self.http_anonymous)}")
        return lines

    def _from_its_host(self, rule: PeerRule, peer_host: str) -> bool:
        return not self.check_peer_host or normal_address(peer_host) in rule.addresses
