"""A static web viewer (the OHIF bundle) at the root of the origin, beside /dicom-web.

Files come from `http.viewer_root`; a path with no file extension that names no file is a
route of the single-page application and gets index.html (the SPA fallback). minipacs
writes the viewer's `app-config.js` itself so that it points at this server's DICOMweb
service, whatever origin the browser used, with WADO-RS rendering (frames and thumbnails).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from .common import PREFIX

__all__ = ["APP_CONFIG", "viewer_routes"]

# The OHIF v3 configuration (its `window.config`): one DICOMweb data source, this origin.
APP_CONFIG: Final = """\
/* Written by minipacs: OHIF's data source is this server's DICOMweb service. */
(function () {
  var root = window.location.origin + "@PREFIX@";
  window.config = {
    name: "minipacs",
    routerBasename: "/",
    extensions: [],
    modes: [],
    customizationService: {},
    showStudyList: true,
    maxNumberOfWebWorkers: 3,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: false,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    maxNumRequests: { interaction: 100, thumbnail: 10, prefetch: 25 },
    defaultDataSourceName: "minipacs",
    dataSources: [{
      namespace: "@ohif/extension-default.dataSourcesModule.dicomweb",
      sourceName: "minipacs",
      configuration: {
        friendlyName: "minipacs",
        name: "minipacs",
        wadoUriRoot: root,
        qidoRoot: root,
        wadoRoot: root,
        qidoSupportsIncludeField: true,
        imageRendering: "wadors",
        thumbnailRendering: "wadors",
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: "bulkdata,video",
        bulkDataURI: { enabled: true },
        omitQuotationForMultipartRequest: true
      }
    }]
  };
})();
""".replace("@PREFIX@", PREFIX)


class _SinglePageApp(StaticFiles):
    """StaticFiles (path checks included) with index.html for the application's routes."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            last = path.rsplit("/", 1)[-1]
            if exc.status_code != 404 or "." in last or scope["method"] not in ("GET", "HEAD"):
                raise
        assert self.directory is not None
        return FileResponse(Path(self.directory) / "index.html")


def viewer_routes(root: Path) -> list[BaseRoute]:
    """The viewer's own app-config.js, then every file of the bundle, with SPA fallback."""
    async def app_config(request: Request) -> Response:
        return Response(APP_CONFIG, media_type="text/javascript",
                        headers={"Cache-Control": "no-cache"})

    return [Route("/app-config.js", app_config, methods=["GET"]),
            Mount("/", app=_SinglePageApp(directory=root, html=True, check_dir=False))]
