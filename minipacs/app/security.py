"""The security side of the daemon, wired from the configuration: the access policy, the
authenticator, the association gate, the failure throttle and the audit trail."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from ..config import Config, ConfigError
from ..ports import NO_AUDIT, Audit, AuditEvent
from ..security.audit import JsonAuditLog
from ..security.authenticate import UserAuthenticator
from ..security.gate import Gatekeeper
from ..security.passwords import ScryptHash
from ..security.policy import AccessPolicy, PeerRule
from ..security.throttle import FailureThrottle
from ..security.tokens import TokenVerifier

__all__ = ["Security", "build_access_policy", "build_authenticator", "build_security",
           "open_audit"]

log = logging.getLogger("minipacs")


def _addresses(host: str) -> frozenset[str]:
    """The addresses a configured peer host stands for (a name is resolved once, at start)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        log.warning("peer host %r does not resolve (%s): check_peer_host refuses it", host,
                    exc.strerror or exc)
        return frozenset()
    return frozenset(str(info[4][0]) for info in infos)


def build_access_policy(config: Config) -> AccessPolicy:
    """The one permission object (README "Security")."""
    check = config.security.check_peer_host
    peers = {title: PeerRule(_addresses(peer.host) if check else frozenset({peer.host}),
                             peer.allow)
             for title, peer in config.peers.items()}
    return AccessPolicy(
        peers=peers, unknown_aes=config.unknown_ae_operations(), check_peer_host=check,
        users={name: user.allow for name, user in config.security.users.items()},
        http_anonymous=config.anonymous_http_operations())


def build_authenticator(config: Config) -> UserAuthenticator:
    """Users and JWT verification; ConfigError naming the key when one cannot be used."""
    security = config.security
    passwords: dict[str, ScryptHash | None] = {}
    for name, user in security.users.items():
        try:
            passwords[name] = ScryptHash.parse(user.password) if user.password else None
        except ValueError as exc:
            raise ConfigError(f"security.users.{name}.password", str(exc)) from None
    tokens = None
    if (jwt := security.jwt) is not None:
        try:
            tokens = TokenVerifier(issuer=jwt.issuer, audience=jwt.audience,
                                   key_file=jwt.key_file, algorithms=jwt.algorithms,
                                   user_claim=jwt.user_claim, leeway=jwt.leeway)
        except ValueError as exc:
            raise ConfigError("security.jwt.key_file", str(exc)) from None
    return UserAuthenticator(passwords, tokens)


class _ClosableAudit:
    """NO_AUDIT with a close(), for when logging.audit is not set."""

    def record(self, event: AuditEvent) -> None:
        NO_AUDIT.record(event)

    def close(self) -> None:
        return None


def open_audit(config: Config) -> JsonAuditLog | _ClosableAudit:
    """The audit trail of ``logging.audit`` (started; close it last), or none."""
    path = config.logging.audit
    if path is None:
        return _ClosableAudit()
    try:
        return JsonAuditLog(path, source=config.ae_title)
    except OSError as exc:
        raise ConfigError("logging.audit", f"cannot open {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True, slots=True)
class Security:
    """What the listeners and services of one server share."""

    policy: AccessPolicy
    authenticator: UserAuthenticator
    throttle: FailureThrottle
    gate: Gatekeeper
    audit: Audit

    def describe(self, config: Config) -> list[str]:
        """The effective policy, for the log at start."""
        security = config.security
        jwt = security.jwt
        return [*self.policy.describe(),
                f"user identity: {security.identity.value}"
                f" ({len(security.users)} user(s)"
                f"{', JWT from ' + repr(jwt.issuer) if jwt else ''})",
                "passcodes without TLS: "
                + ("allowed" if security.allow_passwords_without_tls else "refused")]


def build_security(config: Config, audit: Audit) -> Security:
    policy = build_access_policy(config)
    authenticator = build_authenticator(config)
    throttle = FailureThrottle(config.security.failure_delay)
    gate = Gatekeeper(policy, authenticator, identity=config.security.identity,
                      throttle=throttle,
                      passwords_without_tls=config.security.allow_passwords_without_tls)
    return Security(policy, authenticator, throttle, gate, audit)
