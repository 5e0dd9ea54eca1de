"""The HTTP side of the daemon: DICOMweb, metrics and health wired from the configuration."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Mapping

from ..config import Config
from ..index import SqlIndex
from ..ports import NO_METRICS, AllowAll, FindQuery, Metrics, Permissions, QueryLevel
from ..services.store import StoreService
from ..storage import FilesystemStorage
from ..web.app import WebSettings, build_app
from ..web.common import WebBackend
from ..web.metrics import Probes, PrometheusMetrics, Space
from ..web.server import HttpServer

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
                      metrics: Metrics = NO_METRICS,
                      permissions: Permissions | None = None) -> HttpServer | None:
    """The HTTP listener of `config.http`, or None when HTTP is not configured.

    `ingest` is the C-STORE service itself: STOW-RS stores through the same instance.
    """
    http = config.http
    if http is None:
        return None
    backend = WebBackend(query=index, retrieve=index, storage=storage,
                         permissions=permissions or AllowAll(),
                         ingest=ingest, ae_title=config.ae_title,
                         storage_classes=storage_classes)
    app = build_app(backend, WebSettings(cors_origins=http.cors_origins,
                                         viewer_root=http.viewer_root),
                    metrics=metrics if isinstance(metrics, PrometheusMetrics) else None,
                    probes=build_probes(config, storage, index))
    return HttpServer(app, http.host, http.port, grace=config.limits.shutdown_grace,
                      reuse_port=config.listen.reuse_port)
