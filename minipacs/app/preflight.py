"""What `serve` needs beyond a valid file, checked before it starts (and by `serve --check`).

The database URL must name a dialect and driver that load here, the store's and the
SQLite index's folders must be creatable and writable, and the TLS certificate, key and CA
files must load (PS3.15 B.1). Each problem is a `ConfigError`
naming its key, so it reads like every other configuration error; nothing is left behind
(the write probe is a temporary folder, removed at once).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Final

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from ..config import Config, ConfigError
from ..index.engine import make_engine
from .security import build_authenticator
from .tls import build_tls

__all__ = ["check"]

_PROBE_PREFIX: Final = ".minipacs-check-"


def check(config: Config) -> None:
    """Raise ConfigError naming the key when `serve` could not start on `config`."""
    check_database(config.database.url, "database.url")
    check_folder(config.storage.root, "storage.root")
    if config.logging.audit is not None:
        check_folder(config.logging.audit.parent, "logging.audit")
    # Password hashes and the JWT key file (security.users.*.password, security.jwt.key_file).
    build_authenticator(config)
    build_tls(config)


def check_database(url: str, key: str) -> None:
    """The URL's dialect and driver load (no connection is opened); an SQLite file's folder
    can be created and written."""
    try:
        make_engine(url).dispose()
    except NoSuchModuleError:
        scheme = url.partition("://")[0]
        raise ConfigError(key, f"unknown database dialect or driver {scheme!r} "
                               "(e.g. 'sqlite:///FILE')") from None
    except ImportError as exc:
        raise ConfigError(key, f"the database driver is not installed: {exc}") from None
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(key, f"not a usable database URL: {exc}") from None
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not parsed.database.startswith("file:"):
        check_folder(Path(parsed.database).parent, key)


def check_folder(folder: Path, key: str) -> None:
    """`folder` exists as a writable folder, or can be created as one."""
    existing = folder
    try:
        while not existing.exists():  # the nearest ancestor that exists; ends at "/"
            existing = existing.parent
    except OSError as exc:
        raise ConfigError(key, f"cannot look at {existing}: {exc.strerror or exc}") from None
    if not existing.is_dir():
        where = "" if existing == folder else f"cannot create {folder}: "
        raise ConfigError(key, f"{where}{existing} is not a folder")
    try:
        # A folder made and removed where the first missing one would go (or inside it).
        with tempfile.TemporaryDirectory(prefix=_PROBE_PREFIX, dir=existing):
            pass
    except OSError as exc:
        what = "write to" if existing == folder else "create"
        raise ConfigError(key, f"cannot {what} {folder}: {exc.strerror or exc} "
                               f"(at {existing})") from None
