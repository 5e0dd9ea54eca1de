"""Prometheus metrics and health checks: /metrics, /health/live, /health/ready.

`PrometheusMetrics` implements the metrics port (`ports.Metrics`) the DIMSE listener, the
dispatcher and the store call, and counts HTTP requests itself (an ASGI middleware). Gauges
that describe state (index counts, disk space, the commitment queue) are read when scraped,
from `Probes` the composition root supplies; so are the readiness checks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Probes", "PrometheusMetrics", "health_routes", "metrics_routes"]

log = logging.getLogger("minipacs.web")

PROBE_TIMEOUT: Final = 5.0  # seconds a scrape or a readiness check waits for a probe
# Operation times from a C-ECHO (~1 ms) to a large C-MOVE (minutes).
DIMSE_BUCKETS: Final = (.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300)
HTTP_BUCKETS: Final = (.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)
UNMATCHED: Final = "unmatched"
# Calling AE titles are the peer's to choose: past this many distinct ones, the others share
# one label, so a peer cycling through titles grows neither memory nor /metrics for ever.
MAX_CALLING_AE_LABELS: Final = 256
OTHER_CALLING_AE: Final = "(other)"


@dataclass(frozen=True, slots=True)
class Space:
    """The store's filesystem: total and free bytes, and the free-space watermark."""

    total: int
    free: int
    watermark: int


@dataclass(frozen=True, slots=True)
class Probes:
    """What /metrics and /health/ready read, each a coroutine the composition root wires."""

    index_counts: Callable[[], Awaitable[Mapping[str, int]]]  # entities per level
    space: Callable[[], Awaitable[Space]]
    store_writable: Callable[[], Awaitable[None]]  # raises when a file cannot be written
    commitment_pending: Callable[[], Awaitable[int]] | None = None


class PrometheusMetrics:
    """The metrics port (`ports.Metrics`) over a prometheus_client registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.associations_active = Gauge(
            "minipacs_associations_active", "DICOM associations open now", registry=r)
        self.associations = Counter(
            "minipacs_associations", "DICOM associations ended, by calling AE and outcome",
            ["calling_ae", "outcome"], registry=r)
        self.dimse = Counter(
            "minipacs_dimse_operations", "DIMSE operations answered, by command and status",
            ["command", "status"], registry=r)
        self.dimse_seconds = Histogram(
            "minipacs_dimse_operation_duration_seconds", "DIMSE operation durations",
            ["command"], buckets=DIMSE_BUCKETS, registry=r)
        self.instances = Counter(
            "minipacs_instances_stored", "Instances made durable and indexed", registry=r)
        self.stored_bytes = Counter(
            "minipacs_stored_bytes", "Bytes of instances made durable", registry=r)
        self.index_entities = Gauge(
            "minipacs_index_entities", "Entities in the index, by level", ["level"],
            registry=r)
        self.store_bytes = Gauge(
            "minipacs_store_filesystem_bytes", "The store's filesystem: total and free bytes",
            ["kind"], registry=r)
        self.watermark = Gauge(
            "minipacs_store_free_watermark_bytes",
            "Free space under which stores are refused (storage.min_free_mb)", registry=r)
        self.commitment_pending = Gauge(
            "minipacs_commitment_pending_transactions",
            "Storage Commitment reports still to deliver", registry=r)
        self.http = Counter(
            "minipacs_http_requests", "HTTP requests, by method, route and status",
            ["method", "route", "status"], registry=r)
        self.http_seconds = Histogram(
            "minipacs_http_request_duration_seconds",
            "HTTP request durations, until the last body byte", ["method", "route"],
            buckets=HTTP_BUCKETS, registry=r)
        self._calling_aes: set[str] = set()

    def _calling_label(self, calling_ae: str) -> str:
        """The title itself for the first MAX_CALLING_AE_LABELS distinct ones, else "(other)"."""
        if calling_ae in self._calling_aes:
            return calling_ae
        if len(self._calling_aes) < MAX_CALLING_AE_LABELS:
            self._calling_aes.add(calling_ae)
            return calling_ae
        return OTHER_CALLING_AE

    # --- ports.Metrics ------------------------------------------------------------------

    def association_started(self) -> None:
        self.associations_active.inc()

    def association_ended(self, calling_ae: str, outcome: str, seconds: float) -> None:
        self.associations_active.dec()
        self.associations.labels(self._calling_label(calling_ae or "-"), outcome).inc()

    def dimse_operation(self, command: str, status: int, seconds: float) -> None:
        self.dimse.labels(command, f"0x{status:04X}").inc()
        self.dimse_seconds.labels(command).observe(seconds)

    def instance_stored(self, size: int) -> None:
        self.instances.inc()
        self.stored_bytes.inc(size)

    # --- HTTP ---------------------------------------------------------------------------

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http.labels(method, route, str(status)).inc()
        self.http_seconds.labels(method, route).observe(seconds)

    async def refresh(self, probes: Probes) -> None:
        """Read the state gauges; a probe that fails leaves its gauge as it was."""
        async def guarded(name: str, probe: Awaitable[Any]) -> Any:
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    return await probe
            except Exception as exc:
                log.warning("metrics: %s probe failed: %s", name, exc)
                return None

        counts = await guarded("index", probes.index_counts())
        for level, count in (counts or {}).items():
            self.index_entities.labels(level).set(count)
        space = await guarded("space", probes.space())
        if space is not None:
            self.store_bytes.labels("total").set(space.total)
            self.store_bytes.labels("free").set(space.free)
            self.watermark.set(space.watermark)
        if probes.commitment_pending is not None:
            pending = await guarded("commitment", probes.commitment_pending())
            if pending is not None:
                self.commitment_pending.set(pending)


class HttpMetricsMiddleware:
    """Counts each HTTP request by its route template (never the raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: PrometheusMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            template = getattr(scope.get("route"), "path", None)
            label = scope.get("root_path", "") + template if template else UNMATCHED
            self.metrics.http_request(scope["method"], label, status,
                                      time.perf_counter() - started)


def metrics_routes(metrics: PrometheusMetrics, probes: Probes) -> list[Route]:
    async def scrape(request: Request) -> Response:
        await metrics.refresh(probes)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", scrape, methods=["GET"])]


def health_routes(probes: Probes) -> list[Route]:
    async def live(request: Request) -> Response:
        return JSONResponse({"status": "ok"})  # the event loop answers: the process lives

    async def ready(request: Request) -> Response:
        """Index reachable, store writable, free space above the watermark."""
        checks: dict[str, str] = {}

        async def check(name: str, probe: Callable[[], Awaitable[Any]]) -> Any:
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    result = await probe()
                checks[name] = "ok"
                return result
            except Exception as exc:
                checks[name] = f"failed: {exc or type(exc).__name__}"
                return None

        await check("index", probes.index_counts)
        await check("store_writable", probes.store_writable)
        space = await check("free_space", probes.space)
        if space is not None and space.free < space.watermark:
            checks["free_space"] = (f"failed: {space.free} bytes free, under the "
                                    f"{space.watermark}-byte watermark")
        ok = all(value == "ok" for value in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                            status_code=200 if ok else 503)

    return [Route("/health/live", live, methods=["GET"]),
            Route("/health/ready", ready, methods=["GET"])]
