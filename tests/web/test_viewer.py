"""`http.viewer_root`: a static bundle at the root with SPA fallback, and minipacs' own
app-config.js pointing the viewer at /dicom-web (the browser test runs the real OHIF)."""

from __future__ import annotations

from pathlib import Path

import requests

from tests.support import LOOPBACK
from tests.web.webdata import call, web_server


async def test_static_files_spa_fallback_and_app_config(tmp_path: Path) -> None:
    bundle = tmp_path / "dist"
    (bundle / "assets").mkdir(parents=True)
    (bundle / "index.html").write_text("<html>viewer</html>")
    (bundle / "app.bundle.js").write_text("console.log('app')")
    (bundle / "assets" / "logo.svg").write_text("<svg/>")
    (bundle / "app-config.js").write_text("window.config = {demo: true};")
    async with web_server(tmp_path / "server", http={"viewer_root": str(bundle)}) as web:
        origin = f"http://{LOOPBACK}:{web.http_port}"

        async def get(path: str) -> requests.Response:
            return await call(requests.get, origin + path, timeout=10)

        root, script, asset = await get("/"), await get("/app.bundle.js"), \
            await get("/assets/logo.svg")
        route = await get("/viewer?StudyInstanceUIDs=1.2.3")
        nested = await get("/viewer/dicomweb")
        missing = await get("/missing.js")
        config = await get("/app-config.js")
        escape = await get("/../minipacs.yaml")
        api = await get("/dicom-web/studies")
    assert root.text == "<html>viewer</html>"
    assert script.text == "console.log('app')"
    assert "javascript" in script.headers["content-type"]
    assert asset.text == "<svg/>"
    assert route.status_code == 200 and route.text == "<html>viewer</html>"  # SPA fallback
    assert nested.status_code == 200 and nested.text == "<html>viewer</html>"
    assert missing.status_code == 404  # a file the bundle lacks is not the app
    assert config.status_code == 200 and "demo" not in config.text  # ours, not the bundle's
    assert 'window.location.origin + "/dicom-web"' in config.text
    assert 'imageRendering: "wadors"' in config.text
    assert 'thumbnailRendering: "wadors"' in config.text
    assert "minipacs.yaml" not in escape.text and "storage" not in escape.text
    assert api.status_code == 200 and api.json() == []
