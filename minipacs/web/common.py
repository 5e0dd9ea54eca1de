"""What every DICOMweb route shares: the ports it uses, the permission check, error answers."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from ..ports import (
    FindPage,
    JsonDataset,
    Operation,
    Principal,
    QueryIndex,
    RetrieveIndex,
    Storage,
)
from ..services.store import StoreService
from .auth import WebAuth, authorize

__all__ = [
    "DICOM_JSON",
    "PREFIX",
    "WebBackend",
    "allow",
    "base_url",
    "dicom_json",
    "json_array",
    "problem",
]

log = logging.getLogger("minipacs.web")

PREFIX: Final = "/dicom-web"  # as Orthanc serves it: a client's base URL ends with it
DICOM_JSON: Final = "application/dicom+json"


@dataclass(frozen=True, slots=True)
class WebBackend:
    """The ports the HTTP layer works on; the composition root builds it (DESIGN §9)."""

    query: QueryIndex
    retrieve: RetrieveIndex
    storage: Storage
    auth: WebAuth = field(default_factory=WebAuth)  # credentials, permissions (default: all)
    ingest: StoreService | None = None  # STOW-RS: the C-STORE ingest path
    ae_title: str = "MINIPACS"  # (0002,0018) of files stored through STOW-RS
    storage_classes: frozenset[str] = frozenset()  # the Storage SOP classes accepted


async def allow(request: Request, backend: WebBackend, operation: Operation) -> Principal:
    """Who asks, when it may perform `operation`; else HTTPException 401 or 403 (web/auth)."""
    return await authorize(request, backend.auth, operation)


def base_url(request: Request) -> str:
    """The DICOMweb base URL as the client reached us (for RetrieveURL, BulkDataURI).

    From the Host header; a client that names our address without the port (dicomweb-client
    does) gets the port it connected to, a proxy's host name is left as it is.
    """
    url = request.base_url
    server = request.scope.get("server")
    if url.port is None and server and url.hostname == server[0]:
        default = 443 if url.scheme == "https" else 80
        if server[1] != default:
            url = url.replace(netloc=f"{url.netloc}:{server[1]}")
    return str(url).rstrip("/") + PREFIX


async def json_array(page: FindPage, next_page: Callable[[object], Awaitable[FindPage]],
                     render: Callable[[JsonDataset], Any], *, skip: int = 0,
                     limit: int | None = None) -> AsyncIterator[bytes]:
    """A JSON array of the rendered answers, page by page from the index (flat memory)."""
    separator = b"["
    while True:
        chunk = bytearray()
        for answer in page.answers:
            if skip:
                skip -= 1
                continue
            if limit is not None:
                if limit == 0:
                    break
                limit -= 1
            chunk += separator + json.dumps(render(answer), separators=(",", ":"),
                                            ensure_ascii=False).encode()
            separator = b","
        if chunk:
            yield bytes(chunk)
        if page.after is None or limit == 0:
            break
        page = await next_page(page.after)
    yield b"[]" if separator == b"[" else b"]"


def dicom_json(body: Any, status: int = 200) -> Response:
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(data, status, media_type=DICOM_JSON)


def problem(status: int, detail: str) -> Response:
    """An error answer: the reason in one line of text (PS3.18 §8.6.3 leaves the body open)."""
    return Response(detail + "\n", status, media_type="text/plain; charset=utf-8")
