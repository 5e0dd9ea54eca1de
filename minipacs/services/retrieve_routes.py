"""Which presentation context carries each instance out of a C-MOVE/C-GET, and what a
C-MOVE proposes to its destination (PS3.4 C.4.2.3, C.4.3.3; PS3.8 §7.1.1.13).

An instance goes in its stored transfer syntax when a usable context has it (streamed from
the file); otherwise in the first syntax of `transcode.NATIVE_SYNTAXES` that an accepted
context has and that the stored one converts to (Explicit LE, Implicit LE, Deflated, Big
Endian); otherwise it fails. C-MOVE proposes one context per (SOP class, stored syntax) of
the plan plus (SOP class, Explicit VR LE) and (SOP class, Implicit VR LE): a context's
transfer-syntax list is not a preference order (the acceptor may pick any), so each
syntax is proposed on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..ports import AssociationClosed, Channel, InstanceLocation
from ..proto.negotiation import MAX_PRESENTATION_CONTEXTS, AcceptedContext, Negotiated
from ..proto.sop import name_of
from .transcode import FALLBACK_SYNTAXES, NATIVE_SYNTAXES, choose_syntax, decoder_missing

__all__ = ["GetRoutes", "Key", "MovePlan", "MoveRoutes", "Route", "SubOperationRoutes",
           "no_route_reason", "plan_move", "route"]

log = logging.getLogger("minipacs.retrieve")

Key = tuple[str, str]  # (SOP Class UID, Transfer Syntax UID)


@dataclass(frozen=True, slots=True)
class Route:
    """The context an instance goes on, and the syntax it is sent in."""

    context_id: int
    transfer_syntax: str
    convert: bool  # False: the stored bytes stream as they are


@dataclass(frozen=True, slots=True)
class MovePlan:
    """One sub-association of a C-MOVE: its contexts and the stored pairs it sends."""

    contexts: tuple[Key, ...]  # proposed in this order, one transfer syntax each
    members: frozenset[Key]  # (SOP class, stored syntax) of the instances sent on it


def route(contexts: Iterable[AcceptedContext], sop_class: str, stored_ts: str) -> Route | None:
    """The usable context for an instance among `contexts` (already filtered by role)."""
    offered: dict[str, int] = {}
    for ctx in sorted(contexts, key=lambda c: c.context_id):
        if ctx.abstract_syntax == sop_class:
            offered.setdefault(ctx.transfer_syntax, ctx.context_id)
    chosen = choose_syntax(stored_ts, offered)
    if chosen is None:
        return None
    return Route(offered[chosen], chosen, chosen != stored_ts)


def no_route_reason(contexts: Iterable[AcceptedContext], sop_class: str,
                    stored_ts: str) -> str:
    """Why `route` found nothing, in words: what was accepted, and any missing decoder."""
    name = name_of(sop_class)
    offered = sorted({c.transfer_syntax for c in contexts if c.abstract_syntax == sop_class})
    if not offered:
        return f"{name} was not accepted"
    words = (f"{name} accepted in {', '.join(name_of(ts) for ts in offered)} only; "
             f"stored as {name_of(stored_ts)}")
    missing = decoder_missing(stored_ts)
    if missing is not None and any(ts in NATIVE_SYNTAXES for ts in offered):
        words += f"; {missing}"
    return words


def plan_move(kinds: Sequence[Key], max_contexts: int = MAX_PRESENTATION_CONTEXTS
              ) -> list[MovePlan]:
    """The sub-associations of a C-MOVE of instances of `kinds`, at most `max_contexts`
    contexts each (PS3.8 §9.3.2.2: odd IDs 1..255); a SOP class's fallback contexts go on
    the same association as its stored pairs."""
    if not 0 < max_contexts <= MAX_PRESENTATION_CONTEXTS:
        raise ValueError(f"max_contexts must be 1..{MAX_PRESENTATION_CONTEXTS}")
    by_class: dict[str, list[str]] = {}
    for sop_class, ts in dict.fromkeys(kinds):
        by_class.setdefault(sop_class, []).append(ts)
    units: list[tuple[tuple[Key, ...], frozenset[Key]]] = []
    for sop_class, stored in by_class.items():
        fallbacks = [ts for ts in FALLBACK_SYNTAXES if ts not in stored]
        size = max(1, max_contexts - len(fallbacks))  # stored pairs per unit
        for first in range(0, len(stored), size):
            pairs = [(sop_class, ts) for ts in stored[first:first + size]]
            room = max_contexts - len(pairs)
            extra = [(sop_class, ts) for ts in fallbacks][:room]
            units.append((tuple(pairs + extra), frozenset(pairs)))
    plans: list[MovePlan] = []
    contexts: list[Key] = []
    members: set[Key] = set()
    for unit_contexts, unit_members in units:
        if contexts and len(contexts) + len(unit_contexts) > max_contexts:
            plans.append(MovePlan(tuple(contexts), frozenset(members)))
            contexts, members = [], set()
        contexts.extend(unit_contexts)
        members |= unit_members
    if contexts:
        plans.append(MovePlan(tuple(contexts), frozenset(members)))
    return plans


# --- the routes of one C-GET or C-MOVE in progress ----------------------------------------


def _no_context_reason(negotiated: Negotiated, sop_class: str, transfer_syntax: str) -> str:
    """Why a C-GET has no context for an instance, in words (the usual C-GET confusion)."""
    name = name_of(sop_class)
    contexts = [c for c in negotiated.contexts.values() if c.abstract_syntax == sop_class]
    if not contexts:
        return f"{name} was not proposed (or not accepted) on this association"
    with_role = [c for c in contexts if c.scp_role]
    if not with_role:
        return f"{name} was proposed without the SCP role (role selection, PS3.7 D.3.3.4)"
    return no_route_reason(with_role, sop_class, transfer_syntax)


class SubOperationRoutes(Protocol):
    """How the send loop of one C-GET or C-MOVE sub-association routes and loses."""

    losses: tuple[type[BaseException], ...]  # what loses the sub-operations' association

    def route(self, loc: InstanceLocation) -> Route | str:
        """The context for `loc`, or why there is none (the instance then fails)."""
        ...

    def lost(self, exc: BaseException) -> str:
        """Why nothing more can be sent, in words."""
        ...


class GetRoutes:
    """C-GET: the requestor's own contexts with the SCP role (PS3.7 D.3.3.4)."""

    losses: tuple[type[BaseException], ...] = (TimeoutError,)  # AssociationClosed ends it

    def __init__(self, channel: Channel, timeout: float) -> None:
        self.info = channel.info
        self.timeout = timeout
        self.routes: dict[Key, Route | str] = {}

    def route(self, loc: InstanceLocation) -> Route | str:
        key = (loc.sop_class_uid, loc.transfer_syntax_uid)
        found = self.routes.get(key)
        if found is None:
            negotiated = self.info.negotiated
            found = route((c for c in negotiated.contexts.values() if c.scp_role), *key)
            if found is None:
                reason = _no_context_reason(negotiated, *key)
                log.warning("C-GET from %r: cannot send %s in %s: %s", self.info.calling_ae,
                            name_of(key[0]), name_of(key[1]), reason)
                found = "no context: " + reason
            self.routes[key] = found
        return found

    def lost(self, exc: BaseException) -> str:
        return f"no C-STORE response for {self.timeout:g} s"


class MoveRoutes:
    """C-MOVE: the contexts the destination accepted on this sub-association."""

    losses: tuple[type[BaseException], ...] = (TimeoutError, AssociationClosed)

    def __init__(self, sub: Channel, plan: MovePlan, destination: str) -> None:
        self.destination = destination
        accepted = [c for c in sub.info.negotiated.contexts.values() if c.scu_role]
        self.routes: dict[Key, Route | str] = {}
        for key in sorted(plan.members):
            found = route(accepted, *key)
            if found is None:
                log.warning("C-MOVE to %s: cannot send %s in %s: %s; those instances fail",
                            destination, name_of(key[0]), name_of(key[1]),
                            no_route_reason(accepted, *key))
                self.routes[key] = (f"{destination} accepted no context for {name_of(key[0])} "
                                    f"in {name_of(key[1])} or a syntax it converts to")
            else:
                if found.convert:
                    log.info("C-MOVE to %s: %s stored in %s is converted to %s", destination,
                             name_of(key[0]), name_of(key[1]), name_of(found.transfer_syntax))
                self.routes[key] = found

    def route(self, loc: InstanceLocation) -> Route | str:
        return self.routes[(loc.sop_class_uid, loc.transfer_syntax_uid)]

    def lost(self, exc: BaseException) -> str:
        return f"association to {self.destination} lost: {exc or 'no response in time'}"
