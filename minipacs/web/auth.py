"""Who an HTTP request comes from: HTTP Basic (RFC 7617) and Bearer (RFC 6750) credentials,
checked by the same `Authenticator` as DICOM user identities, then the permission check.

- No Authorization header: an anonymous principal, allowed `security.http_anonymous`.
- Basic: a configured user and its passcode, only over HTTPS unless passcodes without TLS
  are allowed; Bearer: a JSON Web Token verified like a type-5 user identity.
- Bad credentials, or none where the operation needs some: 401 with a WWW-Authenticate
  challenge for each scheme that could work here (RFC 9110 §11.6.1), after the failure
  delay of the address; authenticated but not allowed: 403.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from dataclasses import dataclass, field
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request

from ..ports import (
    NO_AUDIT,
    AllowAll,
    Audit,
    Authenticator,
    CredentialKind,
    Credentials,
    NoThrottle,
    Operation,
    Participant,
    Permissions,
    Principal,
    Throttle,
    WebRequest,
)

__all__ = ["REALM", "WebAuth", "authorize"]

log = logging.getLogger("minipacs.web")

REALM: Final = "minipacs"
_MAX_HEADER: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class WebAuth:
    """The security side of the HTTP layer; the default accepts no credentials at all."""

    permissions: Permissions = field(default_factory=AllowAll)
    authenticator: Authenticator | None = None
    passwords_without_tls: bool = False
    tokens: bool = False  # whether Bearer tokens can be verified (security.jwt)
    throttle: Throttle = field(default_factory=NoThrottle)
    audit: Audit = NO_AUDIT


class _Unauthenticated(Exception):
    """Credentials that cannot be accepted; the message goes to the log only."""


async def authorize(request: Request, auth: WebAuth, operation: Operation) -> Principal:
    """The principal, when it may perform `operation`; else HTTPException 401 or 403."""
    client = request.client
    host = client.host if client else ""
    tls = request.url.scheme == "https"
    target = _audited_target(request)
    header = request.headers.get("authorization")
    try:
        user = await _user(header, auth, tls) if header else None
    except _Unauthenticated as exc:
        delay = auth.throttle.failed(host)
        refusal = _challenge(auth, tls, "the credentials were not accepted")
        _refuse(auth, request, Principal(host, None, None, tls), operation, target,
                refusal.status_code, str(exc))
        if delay:
            await asyncio.sleep(delay)
        raise refusal from None
    if user is not None:
        auth.throttle.succeeded(host)
    who = Principal(host, user, None, tls)
    if auth.permissions.allowed(who, operation):
        auth.audit.record(WebRequest(Participant(None, host, user), operation.value,
                                     request.method, target, 0))
        return who
    if user is None:
        refusal = _challenge(auth, tls, f"{operation.value} needs credentials")
        _refuse(auth, request, who, operation, target, refusal.status_code,
                "credentials required")
        raise refusal
    _refuse(auth, request, who, operation, target, 403, "not permitted")
    raise HTTPException(403, f"{operation.value} is not permitted")


def _audited_target(request: Request) -> str:
    """Path and query for the audit trail, without an RFC 6750 §2.3 ``access_token``."""
    query = "&".join(part for part in request.url.query.split("&")
                     if part and not part.lower().startswith("access_token="))
    return request.url.path + (f"?{query}" if query else "")


def _refuse(auth: WebAuth, request: Request, who: Principal, operation: Operation,
            target: str, status: int, reason: str) -> None:
    log.warning("%s %r from %s%s refused (%d): %s", request.method, request.url.path,
                who.peer_host, f" user {who.user!r}" if who.user else "", status, reason)
    auth.audit.record(WebRequest(Participant(None, who.peer_host, who.user), operation.value,
                                 request.method, target, status, reason))


def _challenge(auth: WebAuth, tls: bool, detail: str) -> HTTPException:
    """401 with a challenge per usable scheme; 403 when no scheme could succeed here."""
    schemes = []
    if auth.authenticator is not None and (tls or auth.passwords_without_tls):
        schemes.append(f'Basic realm="{REALM}", charset="UTF-8"')
    if auth.tokens:
        schemes.append(f'Bearer realm="{REALM}"')
    if not schemes:
        return HTTPException(403, f"{detail}; passcodes are accepted over HTTPS only")
    return HTTPException(401, detail, headers={"WWW-Authenticate": ", ".join(schemes)})


async def _user(header: str, auth: WebAuth, tls: bool) -> str:
    """The user the Authorization header proves (RFC 9110 §11.6.2)."""
    if auth.authenticator is None:
        raise _Unauthenticated("no users or tokens are configured")
    if len(header) > _MAX_HEADER:
        raise _Unauthenticated("Authorization header too long")
    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":  # RFC 6750 §2.1
        credentials = Credentials(CredentialKind.TOKEN, "", value)
    elif scheme == "basic":  # RFC 7617 §2: base64 of user-id ":" password, UTF-8
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _Unauthenticated("malformed Basic credentials") from None
        name, colon, passcode = decoded.partition(":")
        if not colon or not name:
            raise _Unauthenticated("malformed Basic credentials")
        if not tls and not auth.passwords_without_tls:
            raise _Unauthenticated(f"passcode for {name!r} over plain HTTP "
                                   "(security.allow_passwords_without_tls is false)")
        credentials = Credentials(CredentialKind.PASSCODE, name, passcode)
    else:
        raise _Unauthenticated(f"unsupported authentication scheme {scheme[:20]!r}")
    verdict = await auth.authenticator.verify(credentials)
    if verdict.user is None:
        raise _Unauthenticated(verdict.reason)
    return verdict.user
