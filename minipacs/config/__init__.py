"""Configuration: YAML → frozen dataclasses, validated once at start (DESIGN principle 16).

Every error is a `ConfigError` whose str() is one line naming the key path, e.g.
``config error: peers.WORKSTATION.port: 70000 is out of range 1-65535``. `model` holds the
types, `rules` the checks of single values, `sections` one rule table per section,
`loader` the strict YAML reading.
"""

from __future__ import annotations

from ..ports import (
    CommitmentPolicy,
    ConnectPolicy,
    PatientIssuers,
    PeerCertificate,
    RetrievePolicy,
    ServerLimits,
    TlsPolicy,
    describe_operations,
)
from .loader import load_config
from .model import (
    AE_TITLE_MAX_LENGTH,
    DEFAULT_AE_TITLE,
    DEFAULT_DATABASE_URL,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_STORAGE_ROOT,
    DEFAULT_TLS_PORT,
    LOG_LEVELS,
    MAX_PDU_LENGTH,
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
    UserConfig,
    check_ae_title,
    check_host,
    check_user_name,
)

__all__ = [
    "AE_TITLE_MAX_LENGTH",
    "DEFAULT_AE_TITLE",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_STORAGE_ROOT",
    "DEFAULT_TLS_PORT",
    "LOG_LEVELS",
    "MAX_PDU_LENGTH",
    "MIN_PDU_LENGTH",
    "PORT_MAX",
    "PORT_MIN",
    "CommitmentPolicy",
    "Config",
    "ConfigError",
    "ConnectPolicy",
    "DatabaseConfig",
    "HttpConfig",
    "ListenConfig",
    "LoggingConfig",
    "PatientIssuers",
    "PeerCertificate",
    "PeerConfig",
    "QueryConfig",
    "RetrievePolicy",
    "SecurityConfig",
    "ServerLimits",
    "SopClassesConfig",
    "StorageConfig",
    "TlsPolicy",
    "UserConfig",
    "check_ae_title",
    "check_host",
    "check_user_name",
    "describe_operations",
    "load_config",
]
