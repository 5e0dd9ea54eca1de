"""Schema migrations (Alembic), run before the server's event loop starts.

Synchronous on purpose: call it from ``serve`` and ``minipacs db upgrade`` before
``asyncio.run``; inside a running loop, hand it to a thread.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL

from .engine import sync_url

__all__ = ["MIGRATIONS_DIR", "alembic_config", "upgrade"]



def _migrations_dir() -> Path:
    """migrations/ as installed (package minipacs.migrations), else in the source tree."""
    spec = importlib.util.find_spec("minipacs.migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "migrations"


MIGRATIONS_DIR: Final = _migrations_dir()


def alembic_config(url: str | URL) -> Config:
    """An Alembic configuration for `url` without an alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = sync_url(url).render_as_string(hide_password=False)
    return config


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Bring the index database at `url` to `revision` (creating an SQLite file's folder)."""
    parsed = sync_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(parsed), revision)
