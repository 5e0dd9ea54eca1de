"""QIDO-RS routes (PS3.18 §10.6): study, series and instance searches as DICOM JSON arrays.

Answers stream page by page from the index (keyset pages, each its own short read), so a
search of any size holds one page in memory. The first page is read before the status line
goes out, so a refused condition is still a 400.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..ports import DataSetError, FindPage, JsonDataset, Operation, QueryLevel
from .accept import parse_accept
from .common import DICOM_JSON, WebBackend, allow, base_url, json_array, problem
from .qido import (
    TAG_SERIES_INSTANCE_UID,
    TAG_SOP_INSTANCE_UID,
    TAG_STUDY_INSTANCE_UID,
    QidoError,
    QidoSearch,
    parse_search,
    select_attributes,
)

__all__ = ["search_routes"]

PAGE_SIZE: Final = 200
_JSON_TYPES: Final = (DICOM_JSON, "application/json")
_UID_TAGS: Final = {"study": TAG_STUDY_INSTANCE_UID, "series": TAG_SERIES_INSTANCE_UID}


def _uid(answer: JsonDataset, tag: int) -> str:
    values = answer.get(f"{tag:08X}", {}).get("Value") or [""]
    return str(values[0])


def _retrieve_url(base: str, level: QueryLevel) -> Callable[[JsonDataset], str]:
    """PS3.18 §10.6.3.3: each answer's RetrieveURL (0008,1190), the WADO-RS resource."""
    def url(answer: JsonDataset) -> str:
        study = f"{base}/studies/{_uid(answer, TAG_STUDY_INSTANCE_UID)}"
        if level is QueryLevel.STUDY:
            return study
        series = f"{study}/series/{_uid(answer, TAG_SERIES_INSTANCE_UID)}"
        if level is QueryLevel.SERIES:
            return series
        return f"{series}/instances/{_uid(answer, TAG_SOP_INSTANCE_UID)}"
    return url


class _Search:
    def __init__(self, backend: WebBackend, level: QueryLevel) -> None:
        self.backend = backend
        self.level = level

    async def handle(self, request: Request) -> Response:
        await allow(request, self.backend, Operation.FIND)
        if not any(r.matches(t) for r in parse_accept(request.headers.get("accept"))
                   for t in _JSON_TYPES):
            return problem(406, "QIDO-RS answers application/dicom+json only")
        path = {_UID_TAGS[name]: value for name, value in request.path_params.items()}
        try:
            search = parse_search(self.level, path, request.query_params.multi_items(),
                                  matchable=self.backend.query.matchable)
            first = await self._page(search, None)
        except QidoError as exc:
            return problem(400, str(exc))
        except DataSetError as exc:  # the index refused a condition
            return problem(400, exc.comment)
        headers = {}
        if search.fuzzy:  # PS3.18 §8.3.4.1: accepted, literal matching performed
            headers["Warning"] = ('299 minipacs: "The fuzzymatching parameter is not '
                                  'supported. Only literal matching has been performed."')
        url = _retrieve_url(base_url(request), self.level)
        body = json_array(first, lambda after: self._page(search, after),
                          lambda answer: select_attributes(answer, search, url(answer)),
                          skip=search.offset, limit=search.limit)
        return StreamingResponse(body, media_type=DICOM_JSON, headers=headers)

    async def _page(self, search: QidoSearch, after: object | None) -> FindPage:
        return await self.backend.query.find(search.parsed.query, after=after,
                                             limit=PAGE_SIZE)


def search_routes(backend: WebBackend) -> list[Route]:
    """The QIDO-RS resources of PS3.18 Table 10.6.1-1 (relative to the DICOMweb prefix)."""
    study, series, image = (_Search(backend, level).handle for level in (
        QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE))
    return [
        Route("/studies", study, methods=["GET"]),
        Route("/series", series, methods=["GET"]),
        Route("/instances", image, methods=["GET"]),
        Route("/studies/{study}/series", series, methods=["GET"]),
        Route("/studies/{study}/instances", image, methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances", image, methods=["GET"]),
    ]
