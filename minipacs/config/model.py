"""The validated configuration: frozen dataclasses, one per section, and its error type.

Sections that a policy of the server or its services obeys are that policy type itself
(``limits`` → `ServerLimits`, ``retrieve`` → `RetrievePolicy`, ``commitment`` →
`CommitmentPolicy`, from ``minipacs.ports``), so each default is written once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from ..ports import (
    ALL_OPERATIONS,
    CommitmentPolicy,
    DuplicatePolicy,
    IdentityMode,
    Operation,
    PatientConflictPolicy,
    RetrievePolicy,
    ServerLimits,
    TlsPolicy,
)

# PS3.5 §6.2 Table 6.2-1, VR AE: at most 16 characters of the default repertoire.
AE_TITLE_MAX_LENGTH: Final = 16
PORT_MIN: Final = 1
PORT_MAX: Final = 65535
# PS3.8 §9.3.2.3.1 lets a maximum length of 0 mean "unlimited"; we refuse it (and anything
# absurdly small or large) because our advertised maximum bounds what a peer may send us.
MIN_PDU_LENGTH: Final = 4096
MAX_PDU_LENGTH: Final = 16 * 1024 * 1024
# PS3.7 §D.3.3.3: the operations-invoked/performed fields are 16-bit, 0 = unlimited.
MAX_ASYNC_OPS_WINDOW: Final = 65535
MAX_ASSOCIATIONS: Final = 100_000
MAX_INFLATED_MB: Final = 4096  # PS3.5 §7.1.1: one value is at most 2^32 - 2 bytes
MAX_RESULTS: Final = 1_000_000_000  # query.max_results: any sane cap fits; 0 = unlimited
MAX_PEER_ASSOCIATIONS: Final = 1000
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

DEFAULT_AE_TITLE: Final = "MINIPACS"
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 11112
DEFAULT_TLS_PORT: Final = 2762  # registered for DICOM over TLS (PS3.15 B.1, IANA "dicom-tls")
# Relative paths resolve against the configuration file's folder (or the working folder).
DEFAULT_STORAGE_ROOT: Final = "minipacs-data/store"
DEFAULT_DATABASE_URL: Final = "sqlite:///minipacs-data/index.db"

# Who may do what when nothing says otherwise (issue 12): modalities may push, nobody unknown
# may read; on the embedded defaults (loopback only) everyone may do everything.
DEFAULT_UNKNOWN_AES: Final = frozenset({Operation.ECHO, Operation.STORE})
DEFAULT_HTTP_ANONYMOUS: Final[frozenset[Operation]] = frozenset()
DEFAULT_JWT_ALGORITHMS: Final = ("RS256", "ES256")

# User names: what fits a DICOM user identity and an HTTP Basic user-id (no colon).
USER_NAME: Final = re.compile(r"^[A-Za-z0-9._@\-]{1,64}$")

_HOST_LABEL: Final = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class ConfigError(Exception):
    """A configuration problem; str() is one line naming the key path."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        # Collapse whitespace: whatever the cause (YAML, OS), the message stays one line.
        self.reason = " ".join(reason.split())
        super().__init__(f"config error: {where}: {self.reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.where, self.reason))


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """Where the server accepts associations (port 0 = ephemeral, for tests)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """The filesystem store of received instances."""

    root: Path = Path(DEFAULT_STORAGE_ROOT)
    fsync: bool = True
    min_free_mb: int = 512
    duplicates: DuplicatePolicy = field(default_factory=DuplicatePolicy.default)
    patient_conflict: PatientConflictPolicy = field(
        default_factory=PatientConflictPolicy.default)


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """The index database (an SQLAlchemy URL)."""

    url: str = DEFAULT_DATABASE_URL


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """A known remote AE: a C-MOVE destination, and a caller allowed `allow`; `tls`: reached
    over DICOM TLS (our tls.certificate as the client certificate)."""

    host: str
    port: int
    allow: frozenset[Operation] = ALL_OPERATIONS
    tls: bool = False


@dataclass(frozen=True, slots=True)
class UserConfig:
    """A user: a salted scrypt hash of the passcode (None: a user name alone suffices,
    PS3.7 D.3.3.7 type 1), and the operations it may perform (None: its AE's)."""

    password: str | None = None
    allow: frozenset[Operation] | None = None


@dataclass(frozen=True, slots=True)
class JwtConfig:
    """JSON Web Token verification (PS3.7 D.3.3.7 type 5, HTTP Bearer): the issuer and
    audience a token must name, the PEM public key or JWKS file, the algorithms accepted."""

    issuer: str
    audience: str
    key_file: Path
    algorithms: tuple[str, ...] = DEFAULT_JWT_ALGORITHMS
    user_claim: str = "sub"
    leeway: float = 30.0  # seconds of clock difference tolerated on exp and nbf


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Who may associate and do what (PS3.8 §7.1.1.2, PS3.7 D.3.3.7); see README Security.

    `unknown_aes` and `http_anonymous` None mean "the default": everything on the embedded
    defaults (loopback only), else DEFAULT_UNKNOWN_AES / DEFAULT_HTTP_ANONYMOUS
    (`Config.unknown_ae_operations`, `Config.anonymous_http_operations`).
    """

    check_called_ae_title: bool = False
    unknown_aes: frozenset[Operation] | None = None
    check_peer_host: bool = False
    identity: IdentityMode = IdentityMode.NONE
    users: Mapping[str, UserConfig] = field(default_factory=lambda: MappingProxyType({}))
    jwt: JwtConfig | None = None
    allow_passwords_without_tls: bool = False
    http_anonymous: frozenset[Operation] | None = None
    failure_delay: float = 1.0  # seconds; doubled per failure from one address, 0 = off


@dataclass(frozen=True, slots=True)
class SopClassesConfig:
    """SOP classes accepted beyond the built-in tables."""

    extra_storage: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Logging for the daemon (stderr), and the audit trail (JSON lines) when `audit` is set."""

    level: str = "INFO"
    audit: Path | None = None


@dataclass(frozen=True, slots=True)
class QueryConfig:
    """C-FIND limits (PS3.4 C.4.1): max_results 0 = unlimited, else refused above (A700).

    `strict_hierarchy` False answers what workstations send beyond the hierarchical rules
    (unique keys above the level missing; PATIENT-level retrieve on Study Root).
    """

    max_results: int = 0
    strict_hierarchy: bool = False


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """DICOMweb, /metrics and /health over HTTP (minipacs/web); off unless `http:` is set."""

    host: str = DEFAULT_HOST
    port: int = 8042
    cors_origins: tuple[str, ...] = ()  # origins a browser may call us from; "*" = any
    viewer_root: Path | None = None  # a static web viewer (OHIF) served at "/"
    tls: bool = False  # HTTPS with tls.certificate and tls.private_key


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, validated configuration of one minipacs instance.

    `listen` is the plain DICOM listener, `listen_tls` the DICOM TLS one; either may be None
    (not both). `tls` is set whenever something uses TLS.
    """

    ae_title: str
    listen: ListenConfig | None
    storage: StorageConfig
    database: DatabaseConfig
    peers: Mapping[str, PeerConfig]
    security: SecurityConfig
    limits: ServerLimits
    sop_classes: SopClassesConfig
    logging: LoggingConfig
    source: Path | None = None
    query: QueryConfig = field(default_factory=QueryConfig)
    retrieve: RetrievePolicy = field(default_factory=RetrievePolicy)
    commitment: CommitmentPolicy = field(default_factory=CommitmentPolicy)
    http: HttpConfig | None = None
    listen_tls: ListenConfig | None = None
    tls: TlsPolicy | None = None

    def peer(self, ae_title: str) -> PeerConfig | None:
        """The known peer with this AE title (spaces are not significant, PS3.5 Table 6.2-1)."""
        return self.peers.get(ae_title.strip(" "))

    @property
    def loopback_only(self) -> bool:
        """Running on the embedded defaults (no file) and reachable from this machine only."""
        listeners = (self.listen, self.listen_tls, self.http)
        hosts = [listener.host for listener in listeners if listener is not None]
        return self.source is None and all(is_loopback(host) for host in hosts)

    def unknown_ae_operations(self) -> frozenset[Operation]:
        """What calling AE titles not in `peers` may do (``security.unknown_aes``)."""
        if self.security.unknown_aes is not None:
            return self.security.unknown_aes
        return ALL_OPERATIONS if self.loopback_only else DEFAULT_UNKNOWN_AES

    def anonymous_http_operations(self) -> frozenset[Operation]:
        """What an HTTP request without credentials may do (``security.http_anonymous``)."""
        if self.security.http_anonymous is not None:
            return self.security.http_anonymous
        return ALL_OPERATIONS if self.loopback_only else DEFAULT_HTTP_ANONYMOUS


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_ae_title(value: str) -> str:
    """Return `value` without non-significant spaces or raise ValueError (PS3.5 Table 6.2-1)."""
    for char in value:
        if char == "\\":
            raise ValueError("an AE title must not contain a backslash")
        if not " " <= char <= "~":
            raise ValueError(f"an AE title may hold printable ASCII only, not {char!r}")
    title = value.strip(" ")
    if not title:
        raise ValueError("an AE title must not be empty or all spaces")
    if len(title) > AE_TITLE_MAX_LENGTH:
        raise ValueError(
            f"AE title {title!r} has {len(title)} characters, the maximum is {AE_TITLE_MAX_LENGTH}"
        )
    return title


def check_user_name(value: str) -> str:
    """Return `value` when it is a user name we accept (``security.users``), else ValueError."""
    if not USER_NAME.match(value):
        raise ValueError(f"{value!r} is not a user name: 1-64 letters, digits and . _ @ -")
    return value


def check_host(value: str) -> str:
    """Return `value` when it is an IP address or a host name (RFC 1123), else ValueError."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    if len(value) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"{value!r} is not an IP address or host name")
    return value
