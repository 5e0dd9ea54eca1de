"""Admission of an association: the access policy, then the user identity (PS3.7 D.3.3.7).

`Gatekeeper` is the `ports.AssociationGate` the listener asks for every A-ASSOCIATE-RQ that
passed the protocol checks. A calling AE the policy refuses gets A-ASSOCIATE-RJ "calling AE
title not recognized"; a missing or bad user identity where one is needed gets rejected-
permanent from the ACSE service provider with no reason given (PS3.7 D.3.3.7: nothing tells
the requestor which part was wrong — the log does), after the failure delay of its address.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from ..ports import (
    Admission,
    AdmissionRequest,
    Authenticator,
    CredentialKind,
    Credentials,
    IdentityMode,
    Principal,
)
from ..proto.pdu import (
    AAssociateRJ,
    RejectReason,
    RejectResult,
    RejectSource,
    UserIdentityRQ,
    UserIdentityType,
)
from .policy import AccessPolicy
from .throttle import FailureThrottle

__all__ = ["ACSE_NO_REASON", "Gatekeeper"]

log = logging.getLogger("minipacs.security")

ACSE_NO_REASON = 1  # PS3.8 §9.3.4, source 2 (ACSE related function): no-reason-given
_UNKNOWN_AE = AAssociateRJ(RejectResult.PERMANENT, RejectSource.SERVICE_USER,
                           RejectReason.CALLING_AE_NOT_RECOGNIZED)
# PS3.7 D.3.3.7: an association refused for its user identity is rejected-permanent by the
# ACSE service provider; the reason says nothing of what was wrong.
_BAD_IDENTITY = AAssociateRJ(RejectResult.PERMANENT, RejectSource.SERVICE_PROVIDER_ACSE,
                             ACSE_NO_REASON)
# Connections held by the failure delay at once; beyond, failures are answered at once so
# that delayed sockets (which count against no association limit) stay bounded.
MAX_DELAYED: Final = 1000
_VERIFIED_TYPES = frozenset({UserIdentityType.USERNAME, UserIdentityType.USERNAME_AND_PASSCODE,
                             UserIdentityType.JWT})


class _Refused(Exception):
    """A user identity that cannot be accepted; the message goes to the log only."""


class Gatekeeper:
    """Decides each association from the policy, the identity mode and the authenticator."""

    def __init__(self, policy: AccessPolicy, authenticator: Authenticator, *,
                 identity: IdentityMode, throttle: FailureThrottle,
                 passwords_without_tls: bool = False, max_delayed: int = MAX_DELAYED,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.policy = policy
        self.authenticator = authenticator
        self.identity = identity
        self.throttle = throttle
        self.passwords_without_tls = passwords_without_tls
        self.sleep = sleep
        self.max_delayed = max_delayed
        self._delayed = 0

    async def admit(self, request: AdmissionRequest) -> Admission:
        where = f"{request.calling_ae!r} at {request.peer_host}"
        refusal = self.policy.refusal(request.calling_ae, request.peer_host)
        if refusal is not None:
            log.warning("association from %s refused: %s", where, refusal)
            return Admission(rejection=_UNKNOWN_AE, reason=refusal)
        try:
            user = await self._user(request)
        except _Refused as exc:
            delay = self.throttle.failed(request.peer_host)
            if self._delayed >= self.max_delayed:
                delay = 0.0
            log.warning("association from %s refused: user identity: %s%s", where, exc,
                        f" (answered after {delay:g} s)" if delay else "")
            if delay:
                self._delayed += 1
                try:
                    await self.sleep(delay)
                finally:
                    self._delayed -= 1
            return Admission(rejection=_BAD_IDENTITY, reason=f"user identity: {exc}")
        response = None
        if user is not None:
            self.throttle.succeeded(request.peer_host)
            item = request.identity
            # PS3.7 D.3.3.7.2: answered only when asked, empty for types 1 and 2 (and 5).
            if item is not None and item.positive_response_requested:
                response = b""
        who = Principal(request.peer_host, user, request.calling_ae, request.tls)
        return Admission(self.policy.operations(who), user, response)

    async def _user(self, request: AdmissionRequest) -> str | None:
        """The proven user; None for an anonymous association; _Refused when not admitted."""
        if self.identity is IdentityMode.NONE:
            return None  # PS3.7 D.3.3.7: an acceptor may ignore the sub-item
        item = request.identity
        if item is None or item.identity_type not in _VERIFIED_TYPES:
            if self.identity is IdentityMode.REQUIRED:
                raise _Refused("none given" if item is None
                               else f"type {item.identity_type} is not supported")
            return None
        verdict = await self.authenticator.verify(self._credentials(item, tls=request.tls))
        if verdict.user is None:
            raise _Refused(verdict.reason)
        return verdict.user

    def _credentials(self, item: UserIdentityRQ, *, tls: bool) -> Credentials:
        """PS3.7 D.3.3.7.1: the primary field (user name, or the token), the secondary one."""
        kind = item.identity_type
        try:
            primary = item.primary_field.decode("utf-8")
            secondary = item.secondary_field.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused("a field is not UTF-8") from None
        if kind == UserIdentityType.JWT:
            return Credentials(CredentialKind.TOKEN, "", primary)
        if not primary:
            raise _Refused("empty user name")
        if kind == UserIdentityType.USERNAME:
            return Credentials(CredentialKind.USERNAME, primary)
        if not tls and not self.passwords_without_tls:
            raise _Refused(f"passcode for {primary!r} over a connection without TLS "
                           "(security.allow_passwords_without_tls is false)")
        return Credentials(CredentialKind.PASSCODE, primary, secondary)
