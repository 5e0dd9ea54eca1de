"""One rule table per configuration section, and the `Config` built from them.

A table maps each YAML key of a section to the rule that checks its value; the section's
type is then built from the keys present, so every default comes from that type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from ..ports import (
    CommitmentPolicy,
    ConnectPolicy,
    DuplicatePolicy,
    PatientConflictPolicy,
    PatientIssuers,
    RetrievePolicy,
    ServerLimits,
)
from .model import (
    DEFAULT_AE_TITLE,
    MAX_ASSOCIATIONS,
    MAX_ASYNC_OPS_WINDOW,
    MAX_INFLATED_MB,
    MAX_PDU_LENGTH,
    MAX_PEER_ASSOCIATIONS,
    MAX_RESULTS,
    MIN_PDU_LENGTH,
    PORT_MAX,
    PORT_MIN,
    Config,
    ConfigError,
    DatabaseConfig,
    HttpConfig,
    ListenConfig,
    LoggingConfig,
    PeerConfig,
    QueryConfig,
    SecurityConfig,
    SopClassesConfig,
    StorageConfig,
)
from .rules import (
    Rule,
    ae_title,
    boolean,
    describe,
    host,
    integer,
    join,
    log_level,
    mapping,
    non_empty,
    one_of,
    read_section,
    resolve_path,
    seconds,
    text,
    uid_list,
)

_URL_SCHEME: Final = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)$",
                                re.DOTALL)

LISTEN_RULES: Final[Mapping[str, Rule]] = {
    "host": host,
    "port": integer(0, PORT_MAX),
    "reuse_port": boolean,
}
STORAGE_RULES: Final[Mapping[str, Rule]] = {
    "root": non_empty,
    "fsync": boolean,
    "min_free_mb": integer(0, 1 << 30),
    "duplicates": one_of(DuplicatePolicy),
    "patient_conflict": one_of(PatientConflictPolicy),
}
DATABASE_RULES: Final[Mapping[str, Rule]] = {
    "url": text,
    "process_lease": seconds(zero_allowed=False),
}
PEER_RULES: Final[Mapping[str, Rule]] = {
    "host": host,
    "port": integer(PORT_MIN, PORT_MAX),
}
SECURITY_RULES: Final[Mapping[str, Rule]] = {
    "check_called_ae_title": boolean,
    "known_calling_aes_only": boolean,
}
LIMIT_RULES: Final[Mapping[str, Rule]] = {
    "max_associations": integer(1, MAX_ASSOCIATIONS),
    "max_associations_per_address": integer(1, MAX_ASSOCIATIONS),
    "max_handshakes": integer(1, MAX_ASSOCIATIONS),
    "handshake_timeout": seconds(zero_allowed=False),
    "max_pdu_length": integer(MIN_PDU_LENGTH, MAX_PDU_LENGTH),
    "artim_timeout": seconds(zero_allowed=False),
    "idle_timeout": seconds(zero_allowed=True),
    "association_timeout": seconds(zero_allowed=True),
    "async_ops_window": integer(0, MAX_ASYNC_OPS_WINDOW),
    "shutdown_grace": seconds(zero_allowed=True),
    "max_inflated_mb": integer(1, MAX_INFLATED_MB),
}
SOP_CLASS_RULES: Final[Mapping[str, Rule]] = {
    "extra_storage": uid_list,
}
LOGGING_RULES: Final[Mapping[str, Rule]] = {
    "level": log_level,
}
QUERY_RULES: Final[Mapping[str, Rule]] = {
    "max_results": integer(0, MAX_RESULTS),
    "strict_hierarchy": boolean,
}
# The retrieve: section holds how we connect to peers (a ConnectPolicy, whose field names
# differ from the keys') and what the retrieve SCP does.
CONNECT_RULES: Final[Mapping[str, Rule]] = {
    "max_associations_per_peer": integer(1, MAX_PEER_ASSOCIATIONS),
    "connect_timeout": seconds(zero_allowed=False),
}
CONNECT_FIELDS: Final[Mapping[str, str]] = {"max_associations_per_peer": "max_per_peer"}
RETRIEVE_RULES: Final[Mapping[str, Rule]] = {
    "timeout": seconds(zero_allowed=False),
    "patient_issuers": one_of(PatientIssuers),
}
_ORIGIN: Final = re.compile(r"^(\*|https?://[A-Za-z0-9.\-\[\]:]+)$")


def _origins(value: object, where: str) -> tuple[str, ...]:
    """Browser origins allowed across origins (CORS): scheme://host[:port], or "*"."""
    if not isinstance(value, list):
        raise ConfigError(where, f"expected a list of origins, got {describe(value)}")
    origins = []
    for index, item in enumerate(value):
        origin = text(item, f"{where}[{index}]").rstrip("/")
        if not _ORIGIN.match(origin):
            raise ConfigError(f"{where}[{index}]", f"{origin!r} is not an origin "
                              "like 'https://viewer.example:8443' or '*'")
        origins.append(origin)
    return tuple(origins)


HTTP_RULES: Final[Mapping[str, Rule]] = {
    "host": host,
    "port": integer(0, PORT_MAX),
    "cors_origins": _origins,
    "viewer_root": non_empty,
}
COMMITMENT_RULES: Final[Mapping[str, Rule]] = {
    "same_association": boolean,
    "retry_delay": seconds(zero_allowed=False),
    "max_retry_delay": seconds(zero_allowed=False),
    "max_attempts": integer(1, 1_000_000),
    "give_up_after": seconds(zero_allowed=True),
    "timeout": seconds(zero_allowed=False),
}

TOP_KEYS: Final = (
    "ae_title", "listen", "storage", "database", "peers",
    "security", "limits", "sop_classes", "logging", "query", "retrieve", "commitment", "http",
)  # fmt: skip


def build(data: Mapping[Any, Any], base: Path, source: Path | None) -> Config:
    """The whole configuration from a parsed YAML mapping; relative paths follow `base`."""
    top = mapping(data, "", TOP_KEYS)
    peers = _peers(top.get("peers"), "peers")
    security = SecurityConfig(**read_section(top.get("security"), "security", SECURITY_RULES))
    if security.known_calling_aes_only and not peers:
        raise ConfigError("security.known_calling_aes_only", "is true but no peers are configured")
    limits = ServerLimits(**read_section(top.get("limits"), "limits", LIMIT_RULES))
    return Config(
        ae_title=ae_title(top.get("ae_title", DEFAULT_AE_TITLE), "ae_title"),
        listen=ListenConfig(**read_section(top.get("listen"), "listen", LISTEN_RULES)),
        storage=_storage(top.get("storage"), "storage", base),
        database=_database(top.get("database"), "database", base),
        peers=peers,
        security=security,
        limits=limits,
        sop_classes=SopClassesConfig(
            **read_section(top.get("sop_classes"), "sop_classes", SOP_CLASS_RULES)),
        logging=LoggingConfig(**read_section(top.get("logging"), "logging", LOGGING_RULES)),
        source=source,
        query=QueryConfig(**read_section(top.get("query"), "query", QUERY_RULES)),
        retrieve=_retrieve(top.get("retrieve"), "retrieve", limits),
        commitment=_commitment(top.get("commitment"), "commitment"),
        http=_http(top["http"], "http", base) if "http" in top else None,
    )


def _storage(raw: object, where: str, base: Path) -> StorageConfig:
    storage = StorageConfig(**read_section(raw, where, STORAGE_RULES))
    return replace(storage, root=resolve_path(storage.root, base))


def _database(raw: object, where: str, base: Path) -> DatabaseConfig:
    database = DatabaseConfig(**read_section(raw, where, DATABASE_RULES))
    url = database.url
    here = f"{where}.url"
    match = _URL_SCHEME.match(url)
    if match is None:
        raise ConfigError(here, f"{url!r} is not a database URL like 'dialect+driver://...'")
    scheme, rest = match["scheme"], match["rest"]
    dialect, _, driver = scheme.partition("+")
    if dialect != "sqlite":
        return database
    # The index drives sqlite3 from its own writer thread; "+aiosqlite" is accepted as an
    # alias so URLs written for SQLAlchemy's asyncio engine keep working.
    if driver not in ("", "pysqlite", "aiosqlite"):
        raise ConfigError(here, f"unsupported SQLite driver {driver!r}: use 'sqlite:///FILE'")
    if rest and not rest.startswith("/"):
        raise ConfigError(here, "a SQLite URL takes no host: use 'sqlite:///FILE'")
    file_part, query_sep, query = rest[1:].partition("?")
    if file_part in ("", ":memory:") or file_part.startswith("file:"):
        return database
    resolved = resolve_path(file_part, base)
    return replace(database, url=f"{scheme}:///{resolved.as_posix()}{query_sep}{query}")


def database_url(url: str, where: str, base: Path) -> str:
    """A database URL checked as `database.url` is (ConfigError naming `where`), a relative
    SQLite path resolved against `base` (e.g. ``db copy --to``)."""
    try:
        return _database({"url": url}, "database", base).url
    except ConfigError as exc:
        raise ConfigError(where, exc.reason) from None


def _peers(raw: object, where: str) -> Mapping[str, PeerConfig]:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        raise ConfigError(where, f"expected a mapping of AE title to peer, got {describe(raw)}")
    peers: dict[str, PeerConfig] = {}
    for key, value in raw.items():
        here = join(where, key)
        title = ae_title(key, here)
        if title in peers:  # e.g. "WS" and "WS ": the same AE title on the wire
            raise ConfigError(here, f"duplicate peer AE title {title!r}")
        entry = read_section(value, here, PEER_RULES)
        for required in PEER_RULES:
            if required not in entry:
                raise ConfigError(f"{here}.{required}", "required key is missing")
        peers[title] = PeerConfig(**entry)
    return MappingProxyType(peers)


def _retrieve(raw: object, where: str, limits: ServerLimits) -> RetrievePolicy:
    connect = read_section(raw, where, CONNECT_RULES, known=tuple(RETRIEVE_RULES))
    rest = read_section(raw, where, RETRIEVE_RULES, known=tuple(CONNECT_RULES))
    # Outbound associations keep the inbound ARTIM timer and advertise the same maximum PDU.
    policy = ConnectPolicy(**{CONNECT_FIELDS.get(key, key): value
                              for key, value in connect.items()},
                           artim_timeout=limits.artim_timeout,
                           max_pdu_length=limits.max_pdu_length)
    return RetrievePolicy(connect=policy, **rest)


def _commitment(raw: object, where: str) -> CommitmentPolicy:
    policy = CommitmentPolicy(**read_section(raw, where, COMMITMENT_RULES))
    if policy.max_retry_delay < policy.retry_delay:
        raise ConfigError(f"{where}.max_retry_delay",
                          f"{policy.max_retry_delay:g} is less than retry_delay "
                          f"({policy.retry_delay:g})")
    return policy


def _http(raw: object, where: str, base: Path) -> HttpConfig:
    http = HttpConfig(**read_section(raw, where, HTTP_RULES))
    if http.viewer_root is None:
        return http
    return replace(http, viewer_root=resolve_path(http.viewer_root, base))
