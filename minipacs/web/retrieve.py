"""WADO-RS routes (PS3.18 §10.4): instances, metadata, frames and bulk data.

Instances come from the index's retrieve side (the same selection C-MOVE and C-GET use)
and stream from `Storage` in ~1 MiB reads, one part per instance; a part is the stored file
as it is, or the data set converted by the existing transcoding (PS3.18 §8.7.3.5.2:
`transfer-syntax=*` is the stored syntax, no parameter is Explicit VR Little Endian).
Metadata is the index's DICOM JSON (PS3.18 F.2), no file is opened; frames are read from
the file's pixel data only (`services.pixels`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, BinaryIO, Final

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..ports import (
    Condition,
    DataSetError,
    FindQuery,
    InstanceLocation,
    JsonDataset,
    MatchKind,
    Operation,
    QueryLevel,
)
from ..proto.sop import EXPLICIT_VR_LITTLE_ENDIAN
from ..services.pixels import FRAME_MEDIA_TYPES, FrameError, part10_header, read_frames
from ..services.transcode import TranscodeError, can_convert, convert
from .accept import MediaRange, parse_accept
from .common import DICOM_JSON, WebBackend, allow, base_url, json_array, problem
from .multipart import new_boundary, part_header, trailer
from .qido import TAG_SERIES_INSTANCE_UID, TAG_SOP_INSTANCE_UID, TAG_STUDY_INSTANCE_UID

__all__ = ["retrieve_routes"]

READ_SIZE: Final = 1 << 20
PAGE_SIZE: Final = 200
MAX_FRAMES: Final = 10_000  # frame numbers in one request
DICOM: Final = "application/dicom"
OCTET_STREAM: Final = "application/octet-stream"
ANY_SYNTAX: Final = "*"
TAG_ROWS: Final = "00280010"
TAG_BITS_ALLOCATED: Final = "00280100"
TAG_PIXEL_DATA: Final = "7FE00010"
_PATH_TAGS: Final = {"study": TAG_STUDY_INSTANCE_UID, "series": TAG_SERIES_INSTANCE_UID,
                     "instance": TAG_SOP_INSTANCE_UID}


class NotAcceptable(Exception):
    """No representation the client accepts can be produced (406)."""


def selection(path: dict[str, str]) -> FindQuery:
    """The instances a WADO-RS resource names: one UID condition per path segment."""
    conditions = tuple(Condition(_PATH_TAGS[name], "UI", MatchKind.SINGLE, (uid,))
                       for name, uid in path.items() if name in _PATH_TAGS)
    return FindQuery(QueryLevel.IMAGE, conditions)


def dicom_syntaxes(accept: Iterable[MediaRange]) -> list[str]:
    """Transfer syntaxes acceptable for application/dicom parts, best first ("*": stored)."""
    out: list[str] = []
    for media in accept:
        if media.matches("multipart/related"):
            kind = media.params.get("type", DICOM).lower()
            if kind not in (DICOM, "*/*"):
                continue
        elif not media.matches(DICOM):
            continue
        out.append(media.params.get("transfer-syntax", EXPLICIT_VR_LITTLE_ENDIAN))
    return out


def choose(stored: str, acceptable: Iterable[str]) -> str | None:
    """The syntax a stored data set goes out in, or None when none acceptable fits."""
    for syntax in acceptable:
        if syntax in (ANY_SYNTAX, stored):
            return stored
        if can_convert(stored, syntax):
            return syntax
    return None


def frame_representation(accept: Iterable[MediaRange], stored: str
                         ) -> tuple[str, str | None]:
    """(part media type, conversion target or None for as stored) for frames (§8.7.3.5)."""
    for media in accept:
        if media.matches("multipart/related"):
            kind = media.params.get("type", OCTET_STREAM).lower()
        elif media.essence == "*/*":
            kind = OCTET_STREAM
        else:
            kind = media.essence
        syntax = media.params.get("transfer-syntax")
        if kind in (OCTET_STREAM, "*/*"):
            if syntax == ANY_SYNTAX or (syntax == stored and stored not in FRAME_MEDIA_TYPES):
                return f"{OCTET_STREAM}; transfer-syntax={stored}", None
            if syntax in (None, EXPLICIT_VR_LITTLE_ENDIAN):
                return f"{OCTET_STREAM}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}", \
                    EXPLICIT_VR_LITTLE_ENDIAN
        elif FRAME_MEDIA_TYPES.get(stored) == kind and syntax in (None, ANY_SYNTAX, stored):
            return f"{kind}; transfer-syntax={stored}", None
    raise NotAcceptable("no acceptable media type for these frames")


def with_bulk_uris(answer: JsonDataset, instance_url: str) -> dict[str, Any]:
    """An instance's metadata: the index's JSON plus a BulkDataURI for its Pixel Data
    (PS3.18 F.2.6: OW, or OB for 8-bit and smaller samples)."""
    out = dict(answer)
    if TAG_ROWS in out:
        bits = (out.get(TAG_BITS_ALLOCATED, {}).get("Value") or [16])[0]
        vr = "OB" if isinstance(bits, int) and bits <= 8 else "OW"
        out[TAG_PIXEL_DATA] = {"vr": vr, "BulkDataURI": f"{instance_url}/bulkdata/{TAG_PIXEL_DATA}"}
    return out


def _uid(answer: JsonDataset, tag: int) -> str:
    return str((answer.get(f"{tag:08X}", {}).get("Value") or [""])[0])


class _Wado:
    def __init__(self, backend: WebBackend) -> None:
        self.backend = backend
        self.storage = backend.storage

    async def instances(self, request: Request) -> Response:
        """Study, series or instance as multipart/related; type="application/dicom"."""
        await allow(request, self.backend, Operation.GET)
        acceptable = dicom_syntaxes(parse_accept(request.headers.get("accept")))
        query = selection(dict(request.path_params))
        try:
            kinds = await self.backend.retrieve.instance_kinds(query)
        except DataSetError as exc:
            return problem(400, exc.comment)
        if not kinds:
            return problem(404, "no such instances")
        targets = {stored: choose(stored, acceptable) for _, stored in kinds}
        if not acceptable or any(t is None for t in targets.values()):
            return problem(406, "no acceptable transfer syntax for the stored instances")
        boundary = new_boundary()
        body = self._dicom_parts(query, targets, boundary)
        return StreamingResponse(body, media_type=(
            f'multipart/related; type="{DICOM}"; boundary={boundary}'))

    async def _dicom_parts(self, query: FindQuery, targets: dict[str, str | None],
                           boundary: str) -> AsyncIterator[bytes]:
        first = True
        after: object | None = None
        while True:
            page = await self.backend.retrieve.instances(query, after=after, limit=PAGE_SIZE)
            for location in page.instances:
                target = targets.get(location.transfer_syntax_uid) or \
                    location.transfer_syntax_uid
                yield part_header(boundary, f"{DICOM}; transfer-syntax={target}", first=first)
                first = False
                async for chunk in self._part10(location, target):
                    yield chunk
            if page.after is None:
                break
            after = page.after
        yield trailer(boundary, empty=first)

    async def _part10(self, location: InstanceLocation, target: str) -> AsyncIterator[bytes]:
        """The stored file as it is, or its data set converted behind a new header."""
        if target != location.transfer_syntax_uid:
            def converted() -> bytes:
                with self.storage.open_dataset(location.storage_key,
                                               location.dataset_offset) as fp:
                    data = convert(fp, location.transfer_syntax_uid, target)
                return part10_header(location.sop_class_uid, location.sop_instance_uid,
                                     target) + data
            yield await asyncio.to_thread(converted)
            return
        fp: BinaryIO = await asyncio.to_thread(self.storage.open_dataset,
                                               location.storage_key, 0)
        try:
            while chunk := await asyncio.to_thread(fp.read, READ_SIZE):
                yield chunk
        finally:
            fp.close()

    async def metadata(self, request: Request) -> Response:
        """PS3.18 §10.4.1.1.2: the instances' DICOM JSON, straight from the index."""
        await allow(request, self.backend, Operation.GET)
        query = selection(dict(request.path_params))
        try:
            page = await self.backend.query.find(query, after=None, limit=PAGE_SIZE)
        except DataSetError as exc:
            return problem(400, exc.comment)
        if not page.answers:
            return problem(404, "no such instances")
        base = base_url(request)

        def url(answer: JsonDataset) -> str:
            return (f"{base}/studies/{_uid(answer, TAG_STUDY_INSTANCE_UID)}/series/"
                    f"{_uid(answer, TAG_SERIES_INSTANCE_UID)}/instances/"
                    f"{_uid(answer, TAG_SOP_INSTANCE_UID)}")

        body = json_array(page, lambda after: self.backend.query.find(
            query, after=after, limit=PAGE_SIZE), lambda answer: with_bulk_uris(
                answer, url(answer)))
        return StreamingResponse(body, media_type=DICOM_JSON)

    async def frames(self, request: Request) -> Response:
        """PS3.18 §10.4.1.1.3: the listed frames, one part each, as stored or native."""
        await allow(request, self.backend, Operation.GET)
        try:
            numbers = [int(n) for n in request.path_params["frames"].split(",")]
        except ValueError:
            return problem(400, "frame numbers are positive integers separated by commas")
        if not numbers or len(numbers) > MAX_FRAMES or min(numbers) < 1:
            return problem(400, f"between 1 and {MAX_FRAMES} frame numbers, each at least 1")
        return await self._frames(request, numbers)

    async def bulkdata(self, request: Request) -> Response:
        """The Pixel Data BulkDataURI of the metadata: every frame, one part each."""
        await allow(request, self.backend, Operation.GET)
        if request.path_params["tag"].upper() != TAG_PIXEL_DATA:
            return problem(404, "no such bulk data")
        return await self._frames(request, None)

    async def _frames(self, request: Request, numbers: list[int] | None) -> Response:
        query = selection(dict(request.path_params))
        try:
            found = (await self.backend.retrieve.instances(query, after=None, limit=1)).instances
        except DataSetError as exc:
            return problem(400, exc.comment)
        if not found:
            return problem(404, "no such instance")
        location = found[0]
        try:
            media_type, target = frame_representation(
                parse_accept(request.headers.get("accept")), location.transfer_syntax_uid)
        except NotAcceptable as exc:
            return problem(406, str(exc))

        def read() -> list[bytes]:
            with self.storage.open_dataset(location.storage_key, location.dataset_offset) as fp:
                return read_frames(fp, location.transfer_syntax_uid, numbers, target=target)

        try:
            frames = await asyncio.to_thread(read)
        except FrameError as exc:
            return problem(404 if exc.missing else 406, str(exc))
        except TranscodeError as exc:
            return problem(406, str(exc))
        boundary = new_boundary()
        kind = media_type.split(";")[0]
        pieces = []
        for index, frame in enumerate(frames):
            pieces += [part_header(boundary, media_type, first=index == 0), frame]
        pieces.append(trailer(boundary, empty=not frames))
        return Response(b"".join(pieces), media_type=(
            f'multipart/related; type="{kind}"; boundary={boundary}'))


def retrieve_routes(backend: WebBackend) -> list[Route]:
    """The WADO-RS resources of PS3.18 Table 10.4.1-1 (relative to the DICOMweb prefix)."""
    wado = _Wado(backend)
    study = "/studies/{study}"
    series = f"{study}/series/{{series}}"
    instance = f"{series}/instances/{{instance}}"
    get: Callable[[str, Any], Route] = lambda path, handler: Route(  # noqa: E731
        path, handler, methods=["GET"])
    return [
        get(study, wado.instances),
        get(series, wado.instances),
        get(instance, wado.instances),
        get(f"{study}/metadata", wado.metadata),
        get(f"{series}/metadata", wado.metadata),
        get(f"{instance}/metadata", wado.metadata),
        get(f"{instance}/frames/{{frames}}", wado.frames),
        get(f"{instance}/bulkdata/{{tag}}", wado.bulkdata),
    ]
