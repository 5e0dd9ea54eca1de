"""The HTTP side of the daemon: DICOMweb, metrics and health wired from the configuration."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Mapping

from ..config import Config
from ..index import SqlIndex
from ..net.tls import TlsContexts
from ..ports import NO_METRICS, FindQuery, Metrics, Permissions, QueryLevel
from ..services.store import StoreService
from ..storage import FilesystemStorage
from ..web.app import WebSettings, build_app
from ..web.auth import WebAuth
from ..web.common import WebBackend
from ..web.metrics import Probes, PrometheusMetrics, Space
from ..web.server import HttpServer
from .security import Security

__all__ = ["build_http_server", "build_metrics"]

_LEVELS = {"patient": QueryLevel.PATIENT, "study": QueryLevel.STUDY,
           "series": QueryLevel.SERIES, "instance": QueryLevel.IMAGE}
_NO_CAP = 1 << 62


def build_metrics(config: Config) -> Metrics:
    """Prometheus counters when HTTP (which serves /metrics) is configured, else none."""
    return PrometheusMetrics() if config.http is not None else NO_METRICS


def build_probes(config: Config, storage: FilesystemStorage, index: SqlIndex) -> Probes:
    """What /metrics and /health/ready read: index counts, disk space, a test write."""
    commitments = index.commitment
    watermark = config.storage.min_free_mb << 20

    async def index_counts() -> Mapping[str, int]:
        return {name: await index.count(FindQuery(level, ()), cap=_NO_CAP)
                for name, level in _LEVELS.items()}

    async def space() -> Space:
        usage = await asyncio.to_thread(shutil.disk_usage, config.storage.root)
        return Space(total=usage.total, free=usage.free, watermark=watermark)

    def write_probe() -> None:
        folder = storage.spool_dir
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix="health-", suffix=".part") as fp:
            fp.write(b"minipacs")
            fp.flush()
            os.fsync(fp.fileno())

    async def store_writable() -> None:
        await asyncio.to_thread(write_probe)

    async def commitment_pending() -> int:
        return len(await commitments.pending())

    return Probes(index_counts=index_counts, space=space, store_writable=store_writable,
                  commitment_pending=commitment_pending)


def build_http_server(config: Config, storage: FilesystemStorage, index: SqlIndex, *,
                      ingest: StoreService, storage_classes: frozenset[str],
                      metrics: Metrics = NO_METRICS, security: Security | None = None,
                      permissions: Permissions | None = None,
                      tls: TlsContexts | None = None) -> HttpServer | None:
    """The HTTP listener of `config.http`, or None when HTTP is not configured.

    `ingest` is the C-STORE service itself: STOW-RS stores through the same instance.
    `security` gives the users, tokens, policy and audit; `permissions` alone replaces the
    policy (tests); with neither, everything is allowed. With `http.tls` it serves HTTPS from
    `tls` (its `http` context, reloaded with the rest).
    """
    http = config.http
    if http is None:
        return None
    auth = WebAuth()
    if security is not None:
        auth = WebAuth(permissions=security.policy, authenticator=security.authenticator,
                       passwords_without_tls=config.security.allow_passwords_without_tls,
                       tokens=config.security.jwt is not None, throttle=security.throttle,
                       audit=security.audit)
    if permissions is not None:
        auth = WebAuth(permissions, auth.authenticator, auth.passwords_without_tls,
                       auth.tokens, auth.throttle, auth.audit)
    backend = WebBackend(query=index, retrieve=index, storage=storage, auth=auth,
                         ingest=ingest, ae_title=config.ae_title,
                         storage_classes=storage_classes)
    app = build_app(backend, WebSettings(cors_origins=http.cors_origins,
                                         viewer_root=http.viewer_root),
                    metrics=metrics if isinstance(metrics, PrometheusMetrics) else None,
                    probes=build_probes(config, storage, index))
    if http.tls and tls is None:
        raise ValueError("http.tls is set but no TLS contexts were given")
    return HttpServer(app, http.host, http.port, grace=config.limits.shutdown_grace,
                      ssl=tls.http_front() if http.tls and tls is not None else None)
