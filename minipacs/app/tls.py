"""DICOM TLS from the configuration or the command line: the contexts, errors in their words.

A certificate, key or CA file that cannot be used is a `ConfigError` naming its ``tls.*`` key
(from `serve --check`, at start, for `peers check`) or a `UsageError` naming the command-line
option (``--cert``, ``--tls-key``, ``--ca``).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final

from ..config import Config, ConfigError
from ..net.tls import TlsContexts, TlsError, client_context
from ..ports import PeerCertificate, TlsPolicy
from . import UsageError

__all__ = ["build_tls", "client_tls", "listener_tls", "reload_error"]

_OPTIONS: Final = {"certificate": "--cert", "private_key": "--tls-key",
                   "ca_certificates": "--ca"}


def build_tls(config: Config, *, server: bool = True) -> TlsContexts | None:
    """The contexts `config` uses (None when nothing uses TLS); ConfigError naming the key.

    `server` False builds only the outbound one (for `peers check`).
    """
    policy = config.tls
    wants_client = any(peer.tls for peer in config.peers.values())
    wants_server = server and config.listen_tls is not None
    wants_http = server and config.http is not None and config.http.tls
    if policy is None or not (wants_client or wants_server or wants_http):
        return None
    try:
        return TlsContexts(policy, server=wants_server, client=wants_client, http=wants_http)
    except TlsError as exc:
        raise ConfigError(f"tls.{exc.field}", exc.reason) from None


def reload_error(exc: TlsError) -> str:
    """A failed reload in the words of a configuration error."""
    return str(ConfigError(f"tls.{exc.field}", exc.reason))


def _policy(certificate: Path | None, private_key: Path | None,
            ca_certificates: Path | None, peer_certificate: PeerCertificate) -> TlsPolicy:
    if private_key is not None and certificate is None:
        raise UsageError("--tls-key needs --cert")
    # A single PEM file may hold both the key and the certificate.
    return TlsPolicy(certificate=certificate,
                     private_key=private_key if private_key is not None else certificate,
                     ca_certificates=ca_certificates, peer_certificate=peer_certificate)


def client_tls(certificate: Path | None, private_key: Path | None,
               ca_certificates: Path | None) -> ssl.SSLContext:
    """An SCU command's context (``--tls --cert --key --ca``); UsageError naming the option.

    Without ``--ca`` the server's certificate is checked against the system's trust store.
    """
    policy = _policy(certificate, private_key, ca_certificates, PeerCertificate.REQUIRE)
    try:
        return client_context(policy)
    except TlsError as exc:
        raise UsageError(f"{_OPTIONS[exc.field]}: {exc.reason}") from None


def listener_tls(certificate: Path | None, private_key: Path | None,
                 ca_certificates: Path | None) -> TlsContexts:
    """A command's own TLS listener (``commit --listen`` with ``--tls``): our certificate,
    the peer's checked against ``--ca`` when given; UsageError naming the option."""
    if certificate is None:
        raise UsageError("--listen with --tls needs --cert (and --key): the certificate "
                         "the peer checks when it connects back")
    mode = PeerCertificate.IGNORE if ca_certificates is None else PeerCertificate.REQUIRE
    policy = _policy(certificate, private_key, ca_certificates, mode)
    try:
        return TlsContexts(policy, server=True)
    except TlsError as exc:
        raise UsageError(f"{_OPTIONS[exc.field]}: {exc.reason}") from None
