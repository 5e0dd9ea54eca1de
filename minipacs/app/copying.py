"""minipacs db copy: the whole index into another, empty database (index/copy.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from ..config import Config, ConfigError, database_url
from ..index import copy as index_copy
from ..index.engine import make_engine, sync_url
from ..index.migrate import SchemaTooNew, upgrade
from .ops import (
    OpsFailed,
    OpsUsageError,
    audited,
    index_engine,
    index_failures,
    refuse_beside_servers,
)


@dataclass(frozen=True, slots=True)
class CopyResult:
    """What `db copy` wrote, for its summary line."""

    destination: str  # the URL, password hidden
    rows: dict[str, int]  # per table
    seconds: float


@audited("db copy")
def db_copy(config: Config, to: str, *,
            progress: Callable[[str, int], None] | None = None) -> CopyResult:
    """Copy the whole index into the empty database `to` (all or nothing: index/copy.py).

    Refused while serving processes use the index (the copy would miss what they store).
    """
    try:
        dest_url = database_url(to, "--to", Path.cwd())
    except ConfigError as exc:
        raise OpsUsageError(exc.reason if exc.where == "--to" else str(exc)) from exc
    shown = make_url(dest_url).render_as_string(hide_password=True)
    if sync_url(dest_url) == sync_url(config.database.url):
        raise OpsUsageError(f"--to {shown} is the index itself")
    with index_engine(config) as source, index_failures():
        refuse_beside_servers(config, source)
        try:
            upgrade(dest_url)
        except SchemaTooNew as exc:
            raise OpsFailed(f"{shown}: {exc}") from exc
        except Exception as exc:  # cannot connect, cannot create: one line
            raise OpsFailed(f"cannot open {shown}: {exc}") from exc
        dest = make_engine(dest_url)
        try:
            with dest.connect() as conn:
                present = {name: n for name, n in index_copy.row_counts(conn).items() if n}
            if present:
                listed = ", ".join(f"{n} {name}" for name, n in present.items())
                raise OpsFailed(f"{shown} is not empty ({listed}): copy into an empty index")
            started = time.monotonic()
            try:
                rows = index_copy.copy_index(source, dest, progress=progress)
            except index_copy.CopyMismatch as exc:
                raise OpsFailed(str(exc)) from exc
            except SQLAlchemyError as exc:
                raise OpsFailed(f"copy to {shown} failed, nothing written: "
                                f"{getattr(exc, 'orig', None) or exc}") from exc
            return CopyResult(shown, rows, time.monotonic() - started)
        finally:
            dest.dispose()
