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
    IdentityMode,
    PatientConflictPolicy,
    PatientIssuers,
    PeerCertificate,
    RetrievePolicy,
    ServerLimits,
    TlsPolicy,
)
from .model import (
    DEFAULT_AE_TITLE,
    DEFAULT_TLS_PORT,
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
    JwtConfig,
    ListenConfig,
    LoggingConfig,
    PeerConfig,
    QueryConfig,
    SecurityConfig,
    SopClassesConfig,
    StorageConfig,
    UserConfig,
    check_user_name,
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
    permissions,
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
}
PEER_RULES: Final[Mapping[str, Rule]] = {
    "host": host,
    "port": integer(PORT_MIN, PORT_MAX),
    "allow": permissions,
    "tls": boolean,
}
PEER_REQUIRED: Final = ("host", "port")
TLS_RULES: Final[Mapping[str, Rule]] = {
    "certificate": non_empty,
    "private_key": non_empty,
    "ca_certificates": non_empty,
    "peer_certificate": one_of(PeerCertificate),
    "check_hostname": boolean,
}
TLS_PATHS: Final = ("certificate", "private_key", "ca_certificates")
# The salted scrypt hash `minipacs user add` writes: scrypt$N$r$p$SALT$HASH (base64 fields).
_SCRYPT_HASH: Final = re.compile(r"^scrypt\$[0-9]{1,10}\$[0-9]{1,4}\$[0-9]{1,4}"
                                 r"\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*$")
# JWT signature algorithms: asymmetric only (the key file holds a public key or a JWKS).
JWT_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")
KNOWN_CALLING_AES_ONLY: Final = "known_calling_aes_only"  # an alias of unknown_aes: []
SECURITY_RULES: Final[Mapping[str, Rule]] = {
    "check_called_ae_title": boolean,
    "unknown_aes": permissions,
    "check_peer_host": boolean,
    "identity": one_of(IdentityMode),
    "allow_passwords_without_tls": boolean,
    "http_anonymous": permissions,
    "failure_delay": seconds(zero_allowed=True),
}
SECURITY_SUBSECTIONS: Final = ("users", "jwt", KNOWN_CALLING_AES_ONLY)


def _password(value: object, where: str) -> str:
    hashed = text(value, where)
    if not _SCRYPT_HASH.match(hashed):
        raise ConfigError(where, "expected a salted scrypt hash 'scrypt$N$r$p$SALT$HASH' as "
                                 "'minipacs user add' writes it, not a passcode")
    return hashed


def _algorithms(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(where, f"expected a non-empty list of {', '.join(JWT_ALGORITHMS)}")
    names = tuple(text(item, f"{where}[{index}]") for index, item in enumerate(value))
    for index, name in enumerate(names):
        if name not in JWT_ALGORITHMS:
            raise ConfigError(f"{where}[{index}]", f"{name!r} is not one of "
                              f"{', '.join(JWT_ALGORITHMS)} (public-key algorithms only)")
    return names


USER_RULES: Final[Mapping[str, Rule]] = {
    "password": _password,
    "allow": permissions,
}
JWT_RULES: Final[Mapping[str, Rule]] = {
    "issuer": non_empty,
    "audience": non_empty,
    "key_file": non_empty,
    "algorithms": _algorithms,
    "user_claim": non_empty,
    "leeway": seconds(zero_allowed=True),
}
JWT_REQUIRED: Final = ("issuer", "audience", "key_file")
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
    "audit": non_empty,
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
    "tls": boolean,
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
    "listen_tls", "tls",
)  # fmt: skip


def build(data: Mapping[Any, Any], base: Path, source: Path | None) -> Config:
    """The whole configuration from a parsed YAML mapping; relative paths follow `base`."""
    top = mapping(data, "", TOP_KEYS)
    peers = _peers(top.get("peers"), "peers")
    security = _security(top.get("security"), "security", base, bool(peers))
    limits = ServerLimits(**read_section(top.get("limits"), "limits", LIMIT_RULES))
    listen, listen_tls = _listeners(top)
    http = _http(top["http"], "http", base) if "http" in top else None
    return Config(
        ae_title=ae_title(top.get("ae_title", DEFAULT_AE_TITLE), "ae_title"),
        listen=listen,
        storage=_storage(top.get("storage"), "storage", base),
        database=_database(top.get("database"), "database", base),
        peers=peers,
        security=security,
        limits=limits,
        sop_classes=SopClassesConfig(
            **read_section(top.get("sop_classes"), "sop_classes", SOP_CLASS_RULES)),
        logging=_logging(top.get("logging"), "logging", base),
        source=source,
        query=QueryConfig(**read_section(top.get("query"), "query", QUERY_RULES)),
        retrieve=_retrieve(top.get("retrieve"), "retrieve", limits),
        commitment=_commitment(top.get("commitment"), "commitment"),
        http=http,
        listen_tls=listen_tls,
        tls=_tls(top, base, listen_tls, peers, http),
    )


def _listeners(top: Mapping[Any, Any]) -> tuple[ListenConfig | None, ListenConfig | None]:
    """The plain and the TLS DICOM listener: `listen` as configured, on its defaults when
    neither is configured, and none when only `listen_tls` is (a TLS-only server)."""
    listen_tls = None
    if "listen_tls" in top:
        listen_tls = ListenConfig(**{"port": DEFAULT_TLS_PORT,
                                     **read_section(top["listen_tls"], "listen_tls",
                                                    LISTEN_RULES)})
    listen = None
    if "listen" in top or listen_tls is None:
        listen = ListenConfig(**read_section(top.get("listen"), "listen", LISTEN_RULES))
    if listen is not None and listen_tls is not None and listen_tls.port != 0 \
            and (listen.host, listen.port) == (listen_tls.host, listen_tls.port):
        raise ConfigError("listen_tls.port", f"{listen_tls.port} is also listen.port: the "
                          "plain and the TLS listener need ports of their own")
    return listen, listen_tls


def _tls(top: Mapping[Any, Any], base: Path, listen_tls: ListenConfig | None,
         peers: Mapping[str, PeerConfig], http: HttpConfig | None) -> TlsPolicy | None:
    """The ``tls:`` section, with the keys that what uses TLS needs (PS3.15 B.1)."""
    users = (["listen_tls"] if listen_tls is not None else []) \
        + [f"peers.{title}.tls" for title, peer in peers.items() if peer.tls] \
        + (["http.tls"] if http is not None and http.tls else [])
    if "tls" not in top:
        if users:
            raise ConfigError("tls", f"section missing: {', '.join(users)} needs "
                              "tls.certificate and tls.private_key")
        return None
    entry = read_section(top["tls"], "tls", TLS_RULES)
    for key in TLS_PATHS:
        if key in entry:
            entry[key] = resolve_path(entry[key], base)
    policy = TlsPolicy(**entry)
    if not users:
        return policy
    for key in ("certificate", "private_key"):
        if key not in entry:
            raise ConfigError(f"tls.{key}", f"required key is missing ({', '.join(users)} "
                                            "uses TLS)")
    verifiers = [user for user in users if user.startswith("peers.")]
    if listen_tls is not None and policy.peer_certificate is not PeerCertificate.IGNORE:
        verifiers.insert(0, f"listen_tls with peer_certificate {policy.peer_certificate}")
    if verifiers and "ca_certificates" not in entry:
        raise ConfigError("tls.ca_certificates", "required key is missing: the CA "
                          f"certificates that peers' certificates are checked against "
                          f"({', '.join(verifiers)})")
    return policy


def _storage(raw: object, where: str, base: Path) -> StorageConfig:
    storage = StorageConfig(**read_section(raw, where, STORAGE_RULES))
    return replace(storage, root=resolve_path(storage.root, base))


def _database(raw: object, where: str, base: Path) -> DatabaseConfig:
    url = DatabaseConfig(**read_section(raw, where, DATABASE_RULES)).url
    here = f"{where}.url"
    match = _URL_SCHEME.match(url)
    if match is None:
        raise ConfigError(here, f"{url!r} is not a database URL like 'dialect+driver://...'")
    scheme, rest = match["scheme"], match["rest"]
    dialect, _, driver = scheme.partition("+")
    if dialect != "sqlite":
        return DatabaseConfig(url=url)
    # The index drives sqlite3 from its own writer thread; "+aiosqlite" is accepted as an
    # alias so URLs written for SQLAlchemy's asyncio engine keep working.
    if driver not in ("", "pysqlite", "aiosqlite"):
        raise ConfigError(here, f"unsupported SQLite driver {driver!r}: use 'sqlite:///FILE'")
    if rest and not rest.startswith("/"):
        raise ConfigError(here, "a SQLite URL takes no host: use 'sqlite:///FILE'")
    file_part, query_sep, query = rest[1:].partition("?")
    if file_part in ("", ":memory:") or file_part.startswith("file:"):
        return DatabaseConfig(url=url)
    resolved = resolve_path(file_part, base)
    return DatabaseConfig(url=f"{scheme}:///{resolved.as_posix()}{query_sep}{query}")


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
        for required in PEER_REQUIRED:
            if required not in entry:
                raise ConfigError(f"{here}.{required}", "required key is missing")
        peers[title] = PeerConfig(**entry)
    return MappingProxyType(peers)


def _security(raw: object, where: str, base: Path, has_peers: bool) -> SecurityConfig:
    data = mapping(raw, where, (*SECURITY_RULES, *SECURITY_SUBSECTIONS))
    values = read_section(raw, where, SECURITY_RULES, known=SECURITY_SUBSECTIONS)
    closed = join(where, "unknown_aes")
    if KNOWN_CALLING_AES_ONLY in data:  # the key before issue 12: kept as an alias
        here = join(where, KNOWN_CALLING_AES_ONLY)
        if boolean(data[KNOWN_CALLING_AES_ONLY], here):
            if "unknown_aes" in values:
                raise ConfigError(here, "is an alias of 'unknown_aes: []'; give only unknown_aes")
            values["unknown_aes"], closed = frozenset(), here
    if values.get("unknown_aes") == frozenset() and not has_peers:
        raise ConfigError(closed, "refuses every calling AE not in peers, but no peers are "
                                  "configured: nobody could connect")
    if "users" in data:
        values["users"] = _users(data["users"], join(where, "users"))
    if "jwt" in data:
        values["jwt"] = _jwt(data["jwt"], join(where, "jwt"), base)
    security = SecurityConfig(**values)
    if security.identity is IdentityMode.REQUIRED and not security.users \
            and security.jwt is None:
        raise ConfigError(join(where, "identity"), "is required but neither users nor jwt "
                                                   "are configured: nobody could connect")
    return security


def _users(raw: object, where: str) -> Mapping[str, UserConfig]:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        raise ConfigError(where, f"expected a mapping of user name to user, got {describe(raw)}")
    users: dict[str, UserConfig] = {}
    for key, value in raw.items():
        here = join(where, key)
        try:
            name = check_user_name(text(key, here))
        except ValueError as exc:
            raise ConfigError(here, str(exc)) from None
        users[name] = UserConfig(**read_section(value, here, USER_RULES))
    return MappingProxyType(users)


def _jwt(raw: object, where: str, base: Path) -> JwtConfig:
    values = read_section(raw, where, JWT_RULES)
    for required in JWT_REQUIRED:
        if required not in values:
            raise ConfigError(f"{where}.{required}", "required key is missing")
    values["key_file"] = resolve_path(values["key_file"], base)
    return JwtConfig(**values)


def _logging(raw: object, where: str, base: Path) -> LoggingConfig:
    logging = LoggingConfig(**read_section(raw, where, LOGGING_RULES))
    if logging.audit is None:
        return logging
    return replace(logging, audit=resolve_path(logging.audit, base))


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
