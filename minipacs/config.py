"""Configuration: YAML → frozen dataclasses, validated once at start (DESIGN principle 16).

Every error is a `ConfigError` whose str() is one line naming the key path, e.g.
``config error: peers.WORKSTATION.port: 70000 is out of range 1-65535``.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydicom import config as pydicom_config
from pydicom.uid import UID

from .ports.index import DuplicatePolicy, PatientConflictPolicy

# PS3.5 §6.2 Table 6.2-1, VR AE: at most 16 characters of the default repertoire.
AE_TITLE_MAX_LENGTH = 16
PORT_MIN = 1
PORT_MAX = 65535
# PS3.8 §9.3.2.3.1 lets a maximum length of 0 mean "unlimited"; we refuse it (and anything
# absurdly small or large) because our advertised maximum bounds what a peer may send us.
MIN_PDU_LENGTH = 4096
MAX_PDU_LENGTH = 16 * 1024 * 1024
# PS3.7 §D.3.3.3: the operations-invoked/performed fields are 16-bit, 0 = unlimited.
MAX_ASYNC_OPS_WINDOW = 65535
MAX_ASSOCIATIONS = 100_000
MAX_RESULTS = 1_000_000_000  # query.max_results: any sane cap fits; 0 = unlimited
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

DEFAULT_AE_TITLE = "MINIPACS"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11112
DEFAULT_STORAGE_ROOT = "minipacs-data/store"
DEFAULT_DATABASE_URL = "sqlite:///minipacs-data/index.db"
DEFAULT_MIN_FREE_MB = 512
DUPLICATE_POLICIES = tuple(policy.value for policy in DuplicatePolicy)
PATIENT_ISSUER_RULES = ("all", "refuse")  # retrieve.patient_issuers
MAX_PEER_ASSOCIATIONS = 1000

_YAML_MERGE_TAG = "tag:yaml.org,2002:merge"
_URL_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)$", re.DOTALL)
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


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

    root: Path
    fsync: bool = True
    min_free_mb: int = DEFAULT_MIN_FREE_MB
    duplicates: str = DuplicatePolicy.default().value
    patient_conflict: str = PatientConflictPolicy.default().value


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """The index database (an SQLAlchemy URL)."""

    url: str


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
class LimitsConfig:
    """Resource limits and timers; seconds are floats, 0 disables where documented."""

    max_associations: int = 64
    max_pdu_length: int = 262144
    artim_timeout: float = 30.0
    idle_timeout: float = 300.0
    association_timeout: float = 0.0
    async_ops_window: int = 16
    shutdown_grace: float = 10.0


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
    """C-FIND limits (PS3.4 C.4.1): max_results 0 = unlimited, else refused above (A700)."""

    max_results: int = 0


@dataclass(frozen=True, slots=True)
class RetrieveConfig:
    """C-MOVE / C-GET (PS3.4 C.4.2, C.4.3): outbound policy and the patient-issuer rule.

    `patient_issuers`: what a PATIENT-level retrieve of a Patient ID held under several
    issuers does: "all" sends every such patient's instances, "refuse" answers 0xA900.
    `timeout` bounds each C-STORE sub-operation without progress.
    """

    max_associations_per_peer: int = 2
    connect_timeout: float = 10.0
    timeout: float = 60.0
    patient_issuers: str = "all"


@dataclass(frozen=True, slots=True)
class CommitmentConfig:
    """Storage Commitment SCP (PS3.4 J.3.3): where and how long reports are delivered.

    `same_association`: report on the requestor's association while it is still open;
    otherwise (and when it has gone) on a new association to its `peers` entry. A failed
    delivery is retried after `retry_delay` seconds, doubled each time up to
    `max_retry_delay`, until `max_attempts` attempts or `give_up_after` seconds (0: no time
    limit) since the request. `timeout` bounds the wait for the N-EVENT-REPORT response.
    """

    same_association: bool = False
    retry_delay: float = 10.0
    max_retry_delay: float = 600.0
    max_attempts: int = 20
    give_up_after: float = 86400.0
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, validated configuration of one minipacs instance."""

    ae_title: str
    listen: ListenConfig
    storage: StorageConfig
    database: DatabaseConfig
    peers: Mapping[str, PeerConfig]
    security: SecurityConfig
    limits: LimitsConfig
    sop_classes: SopClassesConfig
    logging: LoggingConfig
    source: Path | None = None
    query: QueryConfig = QueryConfig()
    retrieve: RetrieveConfig = RetrieveConfig()
    commitment: CommitmentConfig = CommitmentConfig()

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


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a YAML config file; None gives the embedded defaults."""
    if path is None:
        return _build({}, Path.cwd(), None)
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(source), "file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(str(source), "not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(str(source), f"cannot read: {exc.strerror or exc}") from None
    data = _parse_yaml(text, str(source))
    if data is None:  # an empty file: every default
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(source), f"the top level must be a mapping, got {_describe(data)}")
    resolved = source.resolve()
    return _build(data, resolved.parent, resolved)


# --- YAML -------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys (PyYAML would keep the last one)."""

    def load_checked(self) -> object:
        node = self.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(node, "", set())
        return self.construct_document(node)


def _check_duplicate_keys(node: yaml.Node, where: str, seen_nodes: set[int]) -> None:
    if id(node) in seen_nodes:  # aliases may share (or recursively contain) a node
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _YAML_MERGE_TAG:
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "<complex key>"
            here = _join(where, key)
            if isinstance(key_node, yaml.ScalarNode):
                if key in keys:
                    line = key_node.start_mark.line + 1
                    raise ConfigError(here, f"duplicate key (again on line {line})")
                keys.add(key)
            _check_duplicate_keys(value_node, here, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(item, f"{where}[{index}]", seen_nodes)


def _parse_yaml(text: str, name: str) -> object:
    loader = _StrictLoader(text)
    try:
        return loader.load_checked()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise ConfigError(where, f"invalid YAML: {exc.problem or exc.context or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(name, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


# --- building the dataclasses -----------------------------------------------------------

_TOP_KEYS = (
    "ae_title", "listen", "storage", "database", "peers",
    "security", "limits", "sop_classes", "logging", "query", "retrieve", "commitment",
)  # fmt: skip


def _build(data: Mapping[Any, Any], base: Path, source: Path | None) -> Config:
    top = _mapping(data, "", _TOP_KEYS)
    peers = _peers(top.get("peers"), "peers")
    security = _security(top.get("security"), "security")
    if security.known_calling_aes_only and not peers:
        raise ConfigError("security.known_calling_aes_only", "is true but no peers are configured")
    return Config(
        ae_title=_ae_title(top.get("ae_title", DEFAULT_AE_TITLE), "ae_title"),
        listen=_listen(top.get("listen"), "listen"),
        storage=_storage(top.get("storage"), "storage", base),
        database=_database(top.get("database"), "database", base),
        peers=peers,
        security=security,
        limits=_limits(top.get("limits"), "limits"),
        sop_classes=_sop_classes(top.get("sop_classes"), "sop_classes"),
        logging=_logging(top.get("logging"), "logging"),
        source=source,
        query=_query(top.get("query"), "query"),
        retrieve=_retrieve(top.get("retrieve"), "retrieve"),
        commitment=_commitment(top.get("commitment"), "commitment"),
    )


def _listen(raw: object, where: str) -> ListenConfig:
    data = _mapping(raw, where, ("host", "port"))
    return ListenConfig(
        host=_host(data.get("host", DEFAULT_HOST), f"{where}.host"),
        port=_int(data.get("port", DEFAULT_PORT), f"{where}.port", 0, PORT_MAX),
    )


def _storage(raw: object, where: str, base: Path) -> StorageConfig:
    data = _mapping(raw, where, ("root", "fsync", "min_free_mb", "duplicates",
                                 "patient_conflict"))
    root = _str(data.get("root", DEFAULT_STORAGE_ROOT), f"{where}.root")
    if not root.strip():
        raise ConfigError(f"{where}.root", "must not be empty")
    duplicates = _str(data.get("duplicates", DuplicatePolicy.default().value),
                      f"{where}.duplicates")
    if duplicates not in DUPLICATE_POLICIES:
        raise ConfigError(f"{where}.duplicates",
                          f"{duplicates!r} is not one of {', '.join(DUPLICATE_POLICIES)}")
    conflict = _str(data.get("patient_conflict", PatientConflictPolicy.default().value),
                    f"{where}.patient_conflict")
    if conflict not in {policy.value for policy in PatientConflictPolicy}:
        raise ConfigError(f"{where}.patient_conflict", f"{conflict!r} is not one of "
                          f"{', '.join(policy.value for policy in PatientConflictPolicy)}")
    return StorageConfig(
        root=_resolve_path(root, base),
        fsync=_bool(data.get("fsync", True), f"{where}.fsync"),
        min_free_mb=_int(data.get("min_free_mb", DEFAULT_MIN_FREE_MB), f"{where}.min_free_mb",
                         0, 1 << 30),
        duplicates=duplicates,
        patient_conflict=conflict,
    )


def _database(raw: object, where: str, base: Path) -> DatabaseConfig:
    data = _mapping(raw, where, ("url",))
    here = f"{where}.url"
    url = _str(data.get("url", DEFAULT_DATABASE_URL), here)
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
    resolved = _resolve_path(file_part, base)
    return DatabaseConfig(url=f"{scheme}:///{resolved.as_posix()}{query_sep}{query}")


def _peers(raw: object, where: str) -> Mapping[str, PeerConfig]:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        raise ConfigError(where, f"expected a mapping of AE title to peer, got {_describe(raw)}")
    peers: dict[str, PeerConfig] = {}
    for key, value in raw.items():
        here = _join(where, key)
        title = _ae_title(key, here)
        if title in peers:  # e.g. "WS" and "WS ": the same AE title on the wire
            raise ConfigError(here, f"duplicate peer AE title {title!r}")
        entry = _mapping(value, here, ("host", "port"))
        for required in ("host", "port"):
            if required not in entry:
                raise ConfigError(f"{here}.{required}", "required key is missing")
        peers[title] = PeerConfig(
            host=_host(entry["host"], f"{here}.host"),
            port=_int(entry["port"], f"{here}.port", PORT_MIN, PORT_MAX),
        )
    return MappingProxyType(peers)


def _security(raw: object, where: str) -> SecurityConfig:
    data = _mapping(raw, where, ("check_called_ae_title", "known_calling_aes_only"))
    return SecurityConfig(
        check_called_ae_title=_bool(
            data.get("check_called_ae_title", False), f"{where}.check_called_ae_title"
        ),
        known_calling_aes_only=_bool(
            data.get("known_calling_aes_only", False), f"{where}.known_calling_aes_only"
        ),
    )


_LIMIT_RULES: dict[str, Callable[[object, str], int | float]] = {
    "max_associations": lambda v, w: _int(v, w, 1, MAX_ASSOCIATIONS),
    "max_pdu_length": lambda v, w: _int(v, w, MIN_PDU_LENGTH, MAX_PDU_LENGTH),
    "artim_timeout": lambda v, w: _seconds(v, w, zero_allowed=False),
    "idle_timeout": lambda v, w: _seconds(v, w, zero_allowed=True),
    "association_timeout": lambda v, w: _seconds(v, w, zero_allowed=True),
    "async_ops_window": lambda v, w: _int(v, w, 0, MAX_ASYNC_OPS_WINDOW),
    "shutdown_grace": lambda v, w: _seconds(v, w, zero_allowed=True),
}


def _limits(raw: object, where: str) -> LimitsConfig:
    data = _mapping(raw, where, tuple(_LIMIT_RULES))
    values = {
        key: rule(data[key], f"{where}.{key}") for key, rule in _LIMIT_RULES.items() if key in data
    }
    return LimitsConfig(**values)  # type: ignore[arg-type]


def _sop_classes(raw: object, where: str) -> SopClassesConfig:
    data = _mapping(raw, where, ("extra_storage",))
    here = f"{where}.extra_storage"
    items = data.get("extra_storage")
    if items is None:
        return SopClassesConfig()
    if not isinstance(items, list):
        raise ConfigError(here, f"expected a list of UIDs, got {_describe(items)}")
    uids: list[str] = []
    for index, item in enumerate(items):
        at = f"{here}[{index}]"
        uid = _str(item, at)
        # PS3.5 §9.1: digits and dots, no leading zeros, at most 64 characters.
        if not UID(uid, validation_mode=pydicom_config.IGNORE).is_valid:
            raise ConfigError(at, f"{uid!r} is not a valid UID")
        if uid in uids:
            raise ConfigError(at, f"{uid!r} is listed twice")
        uids.append(uid)
    return SopClassesConfig(extra_storage=tuple(uids))


def _query(raw: object, where: str) -> QueryConfig:
    data = _mapping(raw, where, ("max_results",))
    return QueryConfig(
        max_results=_int(data.get("max_results", 0), f"{where}.max_results", 0, MAX_RESULTS),
    )


def _retrieve(raw: object, where: str) -> RetrieveConfig:
    keys = ("max_associations_per_peer", "connect_timeout", "timeout", "patient_issuers")
    data = _mapping(raw, where, keys)
    defaults = RetrieveConfig()
    rule = _str(data.get("patient_issuers", defaults.patient_issuers), f"{where}.patient_issuers")
    if rule not in PATIENT_ISSUER_RULES:
        raise ConfigError(f"{where}.patient_issuers",
                          f"{rule!r} is not one of {', '.join(PATIENT_ISSUER_RULES)}")
    return RetrieveConfig(
        max_associations_per_peer=_int(
            data.get("max_associations_per_peer", defaults.max_associations_per_peer),
            f"{where}.max_associations_per_peer", 1, MAX_PEER_ASSOCIATIONS),
        connect_timeout=_seconds(data.get("connect_timeout", defaults.connect_timeout),
                                 f"{where}.connect_timeout", zero_allowed=False),
        timeout=_seconds(data.get("timeout", defaults.timeout), f"{where}.timeout",
                         zero_allowed=False),
        patient_issuers=rule,
    )


def _commitment(raw: object, where: str) -> CommitmentConfig:
    keys = ("same_association", "retry_delay", "max_retry_delay", "max_attempts",
            "give_up_after", "timeout")
    data = _mapping(raw, where, keys)
    defaults = CommitmentConfig()
    retry_delay = _seconds(data.get("retry_delay", defaults.retry_delay),
                           f"{where}.retry_delay", zero_allowed=False)
    max_retry_delay = _seconds(data.get("max_retry_delay", defaults.max_retry_delay),
                               f"{where}.max_retry_delay", zero_allowed=False)
    if max_retry_delay < retry_delay:
        raise ConfigError(f"{where}.max_retry_delay",
                          f"{max_retry_delay:g} is less than retry_delay ({retry_delay:g})")
    return CommitmentConfig(
        same_association=_bool(data.get("same_association", defaults.same_association),
                               f"{where}.same_association"),
        retry_delay=retry_delay,
        max_retry_delay=max_retry_delay,
        max_attempts=_int(data.get("max_attempts", defaults.max_attempts),
                          f"{where}.max_attempts", 1, 1_000_000),
        give_up_after=_seconds(data.get("give_up_after", defaults.give_up_after),
                               f"{where}.give_up_after", zero_allowed=True),
        timeout=_seconds(data.get("timeout", defaults.timeout), f"{where}.timeout",
                         zero_allowed=False),
    )


def _logging(raw: object, where: str) -> LoggingConfig:
    data = _mapping(raw, where, ("level",))
    here = f"{where}.level"
    level = _str(data.get("level", "INFO"), here).upper()
    if level not in LOG_LEVELS:
        raise ConfigError(here, f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
    return LoggingConfig(level=level)


# --- scalar rules -------------------------------------------------------------------------


def _mapping(raw: object, where: str, known: tuple[str, ...]) -> Mapping[Any, Any]:
    """A section; left empty (``listen:``) it takes every default."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(where or "<top level>", f"expected a mapping, got {_describe(raw)}")
    for key in raw:
        if key not in known:
            hint = ""
            if isinstance(key, str) and (close := difflib.get_close_matches(key, known, n=1)):
                hint = f" (did you mean {close[0]!r}?)"
            raise ConfigError(
                _join(where, key), f"unknown key{hint}; known keys: {', '.join(known)}"
            )
    return raw


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, bool | int | float) else ""
        raise ConfigError(where, f"expected a string, got {_describe(value)}{hint}")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {_describe(value)}")
    return value


def _int(value: object, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, f"expected an integer, got {_describe(value)}")
    if not low <= value <= high:
        raise ConfigError(where, f"{value} is out of range {low}-{high}")
    return value


def _seconds(value: object, where: str, *, zero_allowed: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(where, f"expected a number of seconds, got {_describe(value)}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_allowed):
        rule = "0 (disabled) or more" if zero_allowed else "more than 0"
        raise ConfigError(where, f"{value} is not a valid duration: it must be {rule}")
    return seconds


def _ae_title(value: object, where: str) -> str:
    try:
        return check_ae_title(_str(value, where))
    except ValueError as exc:
        raise ConfigError(where, str(exc)) from None


def _host(value: object, where: str) -> str:
    host = _str(value, where)
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ConfigError(where, f"{host!r} is not an IP address or host name")
    return host


def _resolve_path(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    # Relative paths follow the config file, not wherever the daemon was started.
    return path if path.is_absolute() else Path(os.path.normpath(base / path))


def _join(where: str, key: object) -> str:
    text = str(key)
    if not _SIMPLE_KEY.match(text):
        text = f"[{text!r}]"
        return f"{where}{text}" if where else text
    return f"{where}.{text}" if where else text


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"{type(value).__name__} {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
