"""Rendered and thumbnail resources (PS3.18 §10.4.1.1.4, §10.4.1.1.5) as JPEG or PNG.

Parameters (PS3.18 Table 8.3.5-1): `viewport=vw,vh` (the crop region that may follow is
ignored), `quality=1..100`, `window=center,width[,linear]`. A study or series thumbnail
shows its first image instance; an instance-level rendering shows its first frame.
"""

from __future__ import annotations

import asyncio
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..ports import DataSetError, InstanceLocation, Operation
from ..services.pixels import FrameError
from ..services.render import MEDIA_TYPES, RenderError, RenderOptions, render_frame
from .accept import parse_accept
from .common import WebBackend, allow, problem
from .retrieve import selection

__all__ = ["rendered_routes"]

THUMBNAIL: Final = (128, 128)
SCAN_LIMIT: Final = 50  # instances looked at for a study or series thumbnail


class _BadParameter(Exception):
    pass


def _numbers(text: str, count: int, name: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise _BadParameter(f"{name} must be numbers separated by commas") from None
    if len(values) < count:
        raise _BadParameter(f"{name} needs {count} numbers")
    return values


def _options(request: Request, frame: int, thumbnail: bool) -> RenderOptions:
    params = request.query_params
    viewport = THUMBNAIL if thumbnail else None
    if "viewport" in params:
        width, height = (int(v) for v in _numbers(params["viewport"], 2, "viewport")[:2])
        if not (0 < width <= 4096 and 0 < height <= 4096):
            raise _BadParameter("viewport sizes go from 1 to 4096")
        viewport = (width, height)
    quality = 90
    if "quality" in params:
        quality = int(_numbers(params["quality"], 1, "quality")[0])
        if not 1 <= quality <= 100:
            raise _BadParameter("quality goes from 1 to 100")
    window = None
    if "window" in params:
        parts = params["window"].split(",")
        if len(parts) > 2 and parts[2].strip().lower() != "linear":
            raise _BadParameter("only the linear VOI LUT function is supported")
        center, width = _numbers(",".join(parts[:2]), 2, "window")[:2]
        window = (center, width)
    media_type = next((kind for media in parse_accept(request.headers.get("accept"))
                       for kind in MEDIA_TYPES if media.matches(kind)), None)
    if media_type is None:
        raise _NotAcceptable()
    return RenderOptions(frame=frame, viewport=viewport, quality=quality, window=window,
                         media_type=media_type)


class _NotAcceptable(Exception):
    pass


class _Rendered:
    def __init__(self, backend: WebBackend) -> None:
        self.backend = backend

    async def _candidates(self, request: Request) -> tuple[InstanceLocation, ...]:
        page = await self.backend.retrieve.instances(selection(dict(request.path_params)),
                                                     after=None, limit=SCAN_LIMIT)
        return page.instances

    async def render(self, request: Request, *, thumbnail: bool) -> Response:
        await allow(request, self.backend, Operation.GET)
        try:
            options = _options(request, int(request.path_params.get("frame", 1)), thumbnail)
        except (ValueError, _BadParameter) as exc:
            return problem(400, str(exc))
        except _NotAcceptable:
            return problem(406, "rendered images are image/jpeg or image/png")
        try:
            candidates = await self._candidates(request)
        except DataSetError as exc:
            return problem(400, exc.comment)
        if not candidates:
            return problem(404, "no such instances")
        failure: Response | None = None
        for location in candidates:  # the first one that renders (skips SRs, PDFs...)
            try:
                image = await asyncio.to_thread(self._render, location, options)
            except FrameError as exc:
                failure = problem(404 if exc.missing else 406, str(exc))
                continue
            except RenderError as exc:
                failure = problem(406, str(exc))
                continue
            return Response(image, media_type=options.media_type)
        assert failure is not None
        return failure

    def _render(self, location: InstanceLocation, options: RenderOptions) -> bytes:
        with self.backend.storage.open_dataset(location.storage_key, 0) as fp:
            return render_frame(fp, options)


def rendered_routes(backend: WebBackend) -> list[Route]:
    rendered = _Rendered(backend)

    async def render(request: Request) -> Response:
        return await rendered.render(request, thumbnail=False)

    async def thumbnail(request: Request) -> Response:
        return await rendered.render(request, thumbnail=True)

    study = "/studies/{study}"
    series = f"{study}/series/{{series}}"
    instance = f"{series}/instances/{{instance}}"
    frame = f"{instance}/frames/{{frame:int}}"
    return [
        Route(f"{instance}/rendered", render, methods=["GET"]),
        Route(f"{frame}/rendered", render, methods=["GET"]),
        Route(f"{study}/thumbnail", thumbnail, methods=["GET"]),
        Route(f"{series}/thumbnail", thumbnail, methods=["GET"]),
        Route(f"{instance}/thumbnail", thumbnail, methods=["GET"]),
        Route(f"{frame}/thumbnail", thumbnail, methods=["GET"]),
    ]
