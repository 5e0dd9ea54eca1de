"""DICOM TLS (PS3.15 Annex B): `ssl.SSLContext`s built from a `TlsPolicy`, and their reload.

Every context follows the BCP 195 profiles of PS3.15 B.9-B.13 (RFC 8996, RFC 9325): TLS 1.2
at least, TLS 1.3 whenever the peer has it (OpenSSL picks the highest common version), and
AEAD cipher suites with forward secrecy only: for TLS 1.2 the ECDHE suites with AES-GCM or
ChaCha20-Poly1305 (`TLS12_CIPHERS`); TLS 1.3's suites are all AEAD. DHE suites are left out:
Python's ssl sets no DH parameters by itself, and PS3.15 B.13 forbids DHE where the key length
cannot be set. Renegotiation and compression are off.

`TlsLayer` is TLS without I/O (an `ssl.SSLObject` over memory buffers): the listener's
transport feeds it the bytes it reads and writes what it hands out, so the TLS handshake
reads the very bytes the connection delivered — whatever the event loop, none is lost —
and is bounded by the handshake limits like any other connection.

`TlsContexts` holds the contexts a process uses — the DICOM listener's, the client's for
outbound associations, the HTTPS listener's — and `reload()` rebuilds them from the same
files (SIGHUP): a failed reload raises and leaves the previous contexts in place.
Associations already running keep the context they started with.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..ports import PeerCertificate, TlsPolicy

__all__ = ["MINIMUM_VERSION", "TLS12_CIPHERS", "TlsContexts", "TlsError", "TlsLayer",
           "TlsSession", "client_context", "describe_error", "server_context", "session_of"]

# PS3.15 B.12/B.13 and RFC 8996: TLS 1.0 and 1.1 are never negotiated.
MINIMUM_VERSION: Final = ssl.TLSVersion.TLSv1_2
# RFC 9325 §4.2: AEAD suites with ephemeral (EC)DH key exchange, for TLS 1.2.
TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"
_OPTIONS: Final = ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
_READ_SIZE: Final = 1 << 16  # plaintext taken from the TLS layer at a time
_VERIFY_MODES: Final = {
    PeerCertificate.REQUIRE: ssl.CERT_REQUIRED,
    PeerCertificate.VERIFY_IF_PRESENT: ssl.CERT_OPTIONAL,
    PeerCertificate.IGNORE: ssl.CERT_NONE,
}


class TlsError(Exception):
    """A certificate, key or CA file that cannot be used; `field` names the policy field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TlsSession:
    """What one TLS connection negotiated, for the association's log line."""

    version: str  # e.g. "TLSv1.3"
    cipher: str  # e.g. "TLS_AES_256_GCM_SHA384"
    peer: str | None  # the verified peer certificate's subject common name, if one was sent

    def __str__(self) -> str:
        return f"{self.version}/{self.cipher}"


def server_context(policy: TlsPolicy, *,
                   peer_certificate: PeerCertificate | None = None) -> ssl.SSLContext:
    """A listener's context: our certificate, and clients' certificates checked as
    `peer_certificate` (default: the policy's) says. Raises TlsError naming the field."""
    mode = policy.peer_certificate if peer_certificate is None else peer_certificate
    context = _base(ssl.PROTOCOL_TLS_SERVER)
    _load_identity(context, policy, required=True)
    context.verify_mode = _VERIFY_MODES[mode]
    if mode is not PeerCertificate.IGNORE:
        if policy.ca_certificates is None:
            raise TlsError("ca_certificates", "required to verify clients' certificates")
        _load_cas(context, policy.ca_certificates)
    return context


def client_context(policy: TlsPolicy) -> ssl.SSLContext:
    """An outbound association's context: the server's certificate must chain to the CAs
    (the system's trust store when none are given); ours is sent when configured."""
    context = _base(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = policy.check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    _load_identity(context, policy, required=False)
    if policy.ca_certificates is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _load_cas(context, policy.ca_certificates)
    return context


def _base(protocol: ssl._SSLMethod) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = MINIMUM_VERSION
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= _OPTIONS
    return context


def _readable(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TlsError(field, f"file not found: {path}") from None
    except IsADirectoryError:
        raise TlsError(field, f"{path} is a folder, not a PEM file") from None
    except OSError as exc:
        raise TlsError(field, f"cannot read {path}: {exc.strerror or exc}") from None


def _encrypted_key() -> bytes:
    # Called by OpenSSL for an encrypted key: refuse, rather than prompt on the terminal.
    raise TlsError("private_key", "is encrypted with a passphrase; give an unencrypted key "
                                  "(readable only by the minipacs user)")


def _load_identity(context: ssl.SSLContext, policy: TlsPolicy, *, required: bool) -> None:
    if policy.certificate is None:
        if required:
            raise TlsError("certificate", "required for a TLS listener")
        return
    if policy.private_key is None:
        raise TlsError("private_key", "required with a certificate")
    _check_certificates(policy.certificate, "certificate")
    _readable(policy.private_key, "private_key")
    try:
        context.load_cert_chain(policy.certificate, policy.private_key, password=_encrypted_key)
    except ssl.SSLError as exc:  # the certificate is readable: the key is the problem
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsError("private_key", f"{policy.private_key} is not the key of the "
                                          f"certificate {policy.certificate}") from None
        raise TlsError("private_key",
                       f"no usable PEM private key in {policy.private_key}") from None


def _load_cas(context: ssl.SSLContext, path: Path) -> None:
    _check_certificates(path, "ca_certificates")
    context.load_verify_locations(cafile=path)


def _check_certificates(path: Path, field: str) -> None:
    """`path` holds PEM certificates that all parse (checked on a throw-away context)."""
    if b"-----BEGIN CERTIFICATE-----" not in _readable(path, field):
        raise TlsError(field, f"no PEM certificate in {path}")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise TlsError(field, f"{path} holds a PEM certificate that cannot be read") from None


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc).lower().replace("_", " ")


def describe_error(exc: BaseException) -> str:
    """A failed TLS handshake in words (OpenSSL's reason, the verification message)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = _reason(exc)
        hint = _HINTS.get(str(exc.reason))
        return f"{hint} ({reason})" if hint else reason
    if isinstance(exc, ConnectionError):
        return "the peer closed the connection during the TLS handshake (does it trust our " \
               "certificate?)"
    return str(exc) or type(exc).__name__


# OpenSSL reasons that mean something simpler to whoever reads the log.
_HINTS: Final = {
    "WRONG_VERSION_NUMBER": "the peer does not speak TLS (a plain DICOM client?)",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the peer sent no certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer wants our certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust our certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer says our certificate has expired",
    "NO_SHARED_CIPHER": "no cipher suite in common (we offer BCP 195 AEAD suites only)",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common (we need TLS 1.2 or later)",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common (we need TLS 1.2 or later)",
}


def session_of(transport_info: Callable[[str], Any]) -> TlsSession | None:
    """The TLS session of a stream (`writer.get_extra_info`), or None for plain TCP."""
    ssl_object = transport_info("ssl_object")
    return None if ssl_object is None else _session(ssl_object)


def _session(ssl_object: ssl.SSLObject) -> TlsSession:
    cipher = ssl_object.cipher()
    return TlsSession(ssl_object.version() or "?", cipher[0] if cipher else "?",
                      _common_name(ssl_object.getpeercert()))


def _common_name(certificate: dict[str, Any] | None) -> str | None:
    for rdn in (certificate or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class TlsLayer:
    """One TLS connection without I/O: ciphertext in (`receive`), plaintext out, and back.

    Whatever `receive` and `send` produce for the peer (handshake messages, records, an alert
    before a failure) waits in `data_to_send()`.
    """

    def __init__(self, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(self._incoming, self._outgoing,
                                        server_side=server_side,
                                        server_hostname=server_hostname)
        self.established = False
        self.closed = False  # the peer said close_notify

    def receive(self, data: bytes) -> bytes:
        """Feed bytes read from the connection (b"" once it closed); the plaintext they
        complete. Raises ssl.SSLError when TLS fails, ConnectionResetError when the peer
        closed the connection before the handshake was done."""
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()
        if not self.established:
            try:
                self._object.do_handshake()
            except ssl.SSLWantReadError:
                if not data:
                    raise ConnectionResetError from None
                return b""
            except ssl.SSLEOFError:
                raise ConnectionResetError from None
            self.established = True
        chunks = []
        while not self.closed:
            try:
                chunk = self._object.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break  # a record is still incomplete
            except ssl.SSLZeroReturnError:
                chunk = b""
            if not chunk:  # the peer's close_notify (RFC 8446 §6.1): nothing more will come
                self.closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt plaintext for the peer (after the handshake)."""
        self._object.write(data)

    def close(self) -> None:
        """Say goodbye (close_notify, RFC 8446 §6.1) without waiting for the peer's."""
        with contextlib.suppress(ssl.SSLError, ValueError):
            self._object.unwrap()

    def data_to_send(self) -> bytes:
        return self._outgoing.read()

    def session(self) -> TlsSession:
        return _session(self._object)


class TlsContexts:
    """The contexts one process uses, built from one policy, reloadable as a whole.

    `server` for the DICOM TLS listener, `client` for outbound associations, `http` for the
    HTTPS listener (no client certificates: HTTP clients authenticate with HTTP credentials).
    Only those asked for are built; asking for another raises LookupError.
    """

    def __init__(self, policy: TlsPolicy, *, server: bool = False, client: bool = False,
                 http: bool = False) -> None:
        self.policy = policy
        self._wanted = {"server": server, "client": client, "http": http}
        self._contexts = self._build()

    def _build(self) -> dict[str, ssl.SSLContext]:
        builders: dict[str, Callable[[], ssl.SSLContext]] = {
            "server": lambda: server_context(self.policy),
            "client": lambda: client_context(self.policy),
            "http": lambda: server_context(self.policy,
                                           peer_certificate=PeerCertificate.IGNORE),
        }
        return {role: build() for role, build in builders.items() if self._wanted[role]}

    def reload(self) -> None:
        """Build every context again from the files; on TlsError the old ones stay."""
        self._contexts = self._build()

    def _get(self, role: str) -> ssl.SSLContext:
        try:
            return self._contexts[role]
        except KeyError:
            raise LookupError(f"no TLS {role} context was configured") from None

    @property
    def server(self) -> ssl.SSLContext:
        return self._get("server")

    @property
    def client(self) -> ssl.SSLContext:
        return self._get("client")

    def http_front(self) -> ssl.SSLContext:
        """A context for a listener that keeps its context for life (uvicorn's): each new
        connection switches to the current `http` context as its handshake starts."""
        front = server_context(self.policy, peer_certificate=PeerCertificate.IGNORE)

        def switch(ssl_object: ssl.SSLObject, _name: str | None,
                   _context: ssl.SSLContext) -> None:
            ssl_object.context = self._get("http")

        front.sni_callback = switch  # OpenSSL calls it for every ClientHello, SNI or not
        return front
