"""The ASGI application: DICOMweb under /dicom-web, metrics, health, the viewer at the root.

Routes translate HTTP into the same ports and services the DIMSE side uses (DESIGN "HTTP /
DICOMweb"); this module only assembles them with the cross-cutting parts: CORS (none
allowed unless configured), the Date header, error bodies, and the per-route metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from time import time
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .common import PREFIX, WebBackend, problem
from .metrics import (
    HttpMetricsMiddleware,
    Probes,
    PrometheusMetrics,
    health_routes,
    metrics_routes,
)
from .rendered import rendered_routes
from .retrieve import retrieve_routes
from .search import search_routes
from .stow import stow_routes
from .viewer import viewer_routes

__all__ = ["WebSettings", "build_app"]

log = logging.getLogger("minipacs.web")

# What a browser may send and read across origins (PS3.18 needs Accept, Content-Type and
# Authorization; clients read Content-Type, Content-Location and Warning).
CORS_HEADERS = ("Accept", "Authorization", "Content-Type")
CORS_EXPOSED = ("Content-Type", "Content-Location", "Warning", "Content-Length")


@dataclass(frozen=True, slots=True)
class WebSettings:
    """The `http:` options the application itself needs."""

    cors_origins: tuple[str, ...] = ()
    viewer_root: Path | None = None


class _DateHeader:
    """Adds Date (RFC 9110 §6.6.1) to every response; computed at most once a second."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._second = 0
        self._value = b""

    def _date(self) -> bytes:
        now = int(time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True).encode()
        return self._value

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_date(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"date", self._date())]
            await send(message)

        await self.app(scope, receive, with_date)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = problem(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})  # WWW-Authenticate on a 401 (RFC 9110 §15.5.2)
    return response


def build_app(backend: WebBackend, settings: WebSettings = WebSettings(), *,
              metrics: PrometheusMetrics | None = None, probes: Probes | None = None,
              extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The whole HTTP application over `backend` (metrics and health when given)."""
    dicomweb: list[BaseRoute] = [*search_routes(backend), *retrieve_routes(backend),
                                 *rendered_routes(backend), *stow_routes(backend)]
    routes: list[BaseRoute] = [*extra_routes, Mount(PREFIX, routes=dicomweb)]
    stack = [Middleware(_DateHeader)]
    if metrics is not None:
        stack.append(Middleware(HttpMetricsMiddleware, metrics=metrics))
    if probes is not None:
        routes += health_routes(probes)
        if metrics is not None:
            routes += metrics_routes(metrics, probes)
    if settings.viewer_root is not None:  # last: its SPA fallback takes every other path
        if not (settings.viewer_root / "index.html").is_file():
            log.warning("http.viewer_root %s has no index.html", settings.viewer_root)
        routes += viewer_routes(settings.viewer_root)
    if settings.cors_origins:
        stack.append(Middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"], allow_headers=list(CORS_HEADERS),
            expose_headers=list(CORS_EXPOSED), max_age=600))
    handlers: dict[Any, Any] = {HTTPException: _http_error}
    return Starlette(routes=routes, middleware=stack, exception_handlers=handlers)
