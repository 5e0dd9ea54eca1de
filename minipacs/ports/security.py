"""Permissions port: the one policy object every transport asks before an operation.

DESIGN "Permissions": (calling AE, peer address, user, operation, SOP class) → allowed or
not. The security work (users, JWT, per-AE rules) provides the real policy; until it lands
the composition root wires `AllowAll`. The HTTP layer asks it for each DICOMweb request with
the operation words `find` (QIDO-RS), `get` (WADO-RS) and `store` (STOW-RS).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Operation(enum.StrEnum):
    """The permission words of the security work."""

    FIND = "find"
    GET = "get"
    STORE = "store"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who asks: an authenticated user (None: anonymous), the peer address, the AE title."""

    peer_host: str
    user: str | None = None
    calling_ae: str | None = None


class Permissions(Protocol):
    """The policy: whether `who` may perform `operation` (on `sop_class`, when known)."""

    def allowed(self, who: Principal, operation: Operation, sop_class: str | None = None
                ) -> bool: ...


class AllowAll:
    """Every principal may do everything (no security configured)."""

    def allowed(self, who: Principal, operation: Operation, sop_class: str | None = None
                ) -> bool:
        return True
