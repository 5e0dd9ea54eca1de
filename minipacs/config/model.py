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
from typing import Any, Final

from ..ports import (
    DEFAULT_PROCESS_LEASE,
    CommitmentPolicy,
    DuplicatePolicy,
    PatientConflictPolicy,
    RetrievePolicy,
    ServerLimits,
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
# Relative paths resolve against the configuration file's folder (or the working folder).
DEFAULT_STORAGE_ROOT: Final = "minipacs-data/store"
DEFAULT_DATABASE_URL: Final = "sqlite:///minipacs-data/index.db"

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
    reuse_port: bool = False  # SO_REUSEPORT: several processes on one host share the port


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
    """The index database (an SQLAlchemy URL), and how long a serving process's registration
    in it lasts without renewal (several processes on one index)."""

    url: str = DEFAULT_DATABASE_URL
    process_lease: float = DEFAULT_PROCESS_LEASE


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """A known remote AE: a C-MOVE destination and a permitted caller."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Association acceptance policy (PS3.8 §7.1.1.2 / A-ASSOCIATE-RJ reasons)."""

    check_called_ae_title: bool = False
    known_calling_aes_only: bool = False


@dataclass(frozen=True, slots=True)
class SopClassesConfig:
    """SOP classes accepted beyond the built-in tables."""

    extra_storage: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Logging for the daemon (stderr)."""

    level: str = "INFO"


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


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, validated configuration of one minipacs instance."""

    ae_title: str
    listen: ListenConfig
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

    def peer(self, ae_title: str) -> PeerConfig | None:
        """The known peer with this AE title (spaces are not significant, PS3.5 Table 6.2-1)."""
        return self.peers.get(ae_title.strip(" "))


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
