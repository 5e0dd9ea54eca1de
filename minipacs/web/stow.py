"""STOW-RS (PS3.18 §10.5): multipart/related Part 10 files into the C-STORE ingest path.

The body is parsed as it arrives (boundaries quoted or not, chunked or not); each part's
File Meta Information is read, and its data set streams into `StoreService.ingest` — the
same spool, fsync, index commit, duplicates policy and memory bound as a C-STORE. The
answer lists what was stored (ReferencedSOPSequence) and what failed with a Failure Reason
(FailedSOPSequence): 200 all stored, 202 some, 409 none (PS3.18 §10.5.3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ..ports import FileMeta, Operation
from ..proto.sop import STORAGE_TRANSFER_SYNTAXES
from ..proto.status import Status
from ..services.part10 import Part10Error, read_part10
from .accept import parse_media_type
from .common import WebBackend, allow, base_url, dicom_json, problem
from .multipart import MultipartError, read_parts

__all__ = ["stow_routes"]

log = logging.getLogger("minipacs.web")

DICOM: Final = "application/dicom"
SENDING_AE: Final = "DICOMWEB"  # (0002,0017) of files stored through STOW-RS
MAX_WARNINGS: Final = 10
TAG_RETRIEVE_URL: Final = "00081190"
TAG_FAILED_SOP_SEQUENCE: Final = "00081198"
TAG_REFERENCED_SOP_SEQUENCE: Final = "00081199"
TAG_REFERENCED_SOP_CLASS_UID: Final = "00081150"
TAG_REFERENCED_SOP_INSTANCE_UID: Final = "00081155"
TAG_FAILURE_REASON: Final = "00081197"


@dataclass(frozen=True, slots=True)
class _Result:
    sop_class_uid: str
    sop_instance_uid: str
    status: int
    comment: str = ""
    path: str = ""  # studies/{study}/series/{series}/instances/{instance}, once stored


def _item(result: _Result, url: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        TAG_REFERENCED_SOP_CLASS_UID: {"vr": "UI", "Value": [result.sop_class_uid]}
        if result.sop_class_uid else {"vr": "UI"},
        TAG_REFERENCED_SOP_INSTANCE_UID: {"vr": "UI", "Value": [result.sop_instance_uid]}
        if result.sop_instance_uid else {"vr": "UI"},
    }
    if url is not None:
        item[TAG_RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
    else:
        item[TAG_FAILURE_REASON] = {"vr": "US", "Value": [result.status]}
    return item


class _Stow:
    def __init__(self, backend: WebBackend) -> None:
        self.backend = backend

    async def store(self, request: Request) -> Response:
        await allow(request, self.backend, Operation.STORE)
        media = parse_media_type(request.headers.get("content-type"))
        if media is None or media.essence != "multipart/related" or \
                media.params.get("type", DICOM).lower() != DICOM:
            return problem(415, 'STOW-RS takes multipart/related; type="application/dicom"')
        boundary = media.params.get("boundary", "")
        study = request.path_params.get("study")
        results: list[_Result] = []
        try:
            async for part in read_parts(request.stream(), boundary):
                results.append(await self._one(part.chunks(), part.content_type, study))
        except MultipartError as exc:
            return problem(400, str(exc))
        except ClientDisconnect:  # what was complete is stored; the rest was discarded
            log.info("STOW-RS: the client went away after %d part(s)", len(results))
            return problem(400, "the request body ended early")
        if not results:
            return problem(400, "the request holds no DICOM part")
        return self._answer(request, results, study)

    async def _one(self, body: Any, content_type: str, study: str | None) -> _Result:
        """One part, stored or refused; the caller drains what it leaves unread."""
        kind = parse_media_type(content_type)
        if kind is not None and kind.essence != DICOM:
            return _Result("", "", Status.CANNOT_UNDERSTAND, f"a {kind.essence} part")
        try:
            meta = await read_part10(body, sending_ae_title=SENDING_AE,
                                     receiving_ae_title=self.backend.ae_title)
        except Part10Error as exc:
            return _Result("", "", Status.CANNOT_UNDERSTAND, str(exc))
        file_meta, data = meta
        refusal = self._refusal(file_meta)
        if refusal is not None:
            return refusal
        assert self.backend.ingest is not None
        done = await self.backend.ingest.ingest(file_meta, data, study=study)
        stored = done.attributes
        path = "" if stored is None else (
            f"studies/{stored.study_instance_uid}/series/{stored.series_instance_uid}/"
            f"instances/{stored.sop_instance_uid}")
        return _Result(file_meta.sop_class_uid, file_meta.sop_instance_uid, done.status,
                       done.comment, path)

    def _refusal(self, meta: FileMeta) -> _Result | None:
        """What C-STORE negotiation would have refused (PS3.4 B.2.3: 0122H; PS3.5 §10)."""
        if meta.sop_class_uid not in self.backend.storage_classes:
            return _Result(meta.sop_class_uid, meta.sop_instance_uid,
                           Status.SOP_CLASS_NOT_SUPPORTED, "SOP class not accepted")
        if meta.transfer_syntax_uid not in STORAGE_TRANSFER_SYNTAXES:
            return _Result(meta.sop_class_uid, meta.sop_instance_uid,
                           Status.CANNOT_UNDERSTAND, "transfer syntax not accepted")
        return None

    def _answer(self, request: Request, results: list[_Result], study: str | None
                ) -> Response:
        base = base_url(request)
        stored = [r for r in results if r.status == Status.SUCCESS]
        failed = [r for r in results if r.status != Status.SUCCESS]
        body: dict[str, Any] = {}
        if study is not None:
            body[TAG_RETRIEVE_URL] = {"vr": "UR", "Value": [f"{base}/studies/{study}"]}
        if failed:
            body[TAG_FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": [
                _item(r, None) for r in failed]}
        if stored:
            body[TAG_REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": [
                _item(r, f"{base}/{r.path}") for r in stored]}
        status = 200 if not failed else 409 if not stored else 202
        response = dicom_json(body, status)
        for result in failed[:MAX_WARNINGS]:  # the reasons in words (PS3.18 §8.6.3)
            text = f"{result.sop_instance_uid or 'part'}: {result.comment}".replace('"', "'")
            text = text.encode("latin-1", "replace").decode("latin-1")  # a header's charset
            response.headers.append("Warning", f'299 minipacs "{text}"')
        if failed:
            log.warning("STOW-RS: %d of %d instance(s) refused", len(failed), len(results))
        return response


def stow_routes(backend: WebBackend) -> list[Route]:
    """PS3.18 Table 10.5.1-1: POST /studies and /studies/{study}."""
    stow = _Stow(backend)
    return [Route("/studies", stow.store, methods=["POST"]),
            Route("/studies/{study}", stow.store, methods=["POST"])]
