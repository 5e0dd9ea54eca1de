"""The HTTP side of the daemon: DICOMweb, metrics and health wired from the configuration."""

from __future__ import annotations

from ..config import Config
from ..index import SqlIndex
from ..ports import AllowAll, Permissions, Storage
from ..services.store import StoreService
from ..web.app import WebSettings, build_app
from ..web.common import WebBackend
from ..web.server import HttpServer

__all__ = ["build_http_server"]


def build_http_server(config: Config, storage: Storage, index: SqlIndex, *,
                      storage_classes: frozenset[str],
                      permissions: Permissions | None = None) -> HttpServer | None:
    """The HTTP listener of `config.http`, or None when HTTP is not configured."""
    http = config.http
    if http is None:
        return None
    backend = WebBackend(query=index, retrieve=index, storage=storage,
                         permissions=permissions or AllowAll(),
                         ingest=StoreService(storage, index), ae_title=config.ae_title,
                         storage_classes=storage_classes)
    app = build_app(backend, WebSettings(cors_origins=http.cors_origins,
                                         viewer_root=http.viewer_root))
    return HttpServer(app, http.host, http.port, grace=config.limits.shutdown_grace)
