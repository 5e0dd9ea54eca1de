"""Metrics, health, CORS and permissions of the HTTP side, on the whole server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from minipacs.app.daemon import prepare, storage_classes
from minipacs.app.web import build_http_server
from minipacs.index import AttributeReader, SqlIndex
from minipacs.index.engine import make_engine
from minipacs.ports import Operation, Principal
from minipacs.services.store import StoreService
from minipacs.web.server import HttpServer
from tests.interop.storecheck import CALLING
from tests.support import LOOPBACK, association_log, make_config
from tests.web.webdata import ROOT, call, image, web_server

ORIGIN = "http://viewer.example:3000"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_count_dimse_and_http(tmp_path: Path) -> None:
    async with web_server(tmp_path, storage={"min_free_mb": 1}) as web:
        with association_log() as associations:
            await web.store([image(1, 1, n) for n in (1, 2)])
            await associations.wait_for(1)  # the association has ended and been counted
        assert len(await call(web.client().search_for_studies)) == 1
        text = (await call(requests.get, f"http://{LOOPBACK}:{web.http_port}/metrics",
                           timeout=10)).text
    got = samples(text)
    assert got[("minipacs_instances_stored_total", ())] == 2
    assert got[("minipacs_stored_bytes_total", ())] > 2 * 32 * 32 * 2
    assert got[("minipacs_dimse_operations_total",
                (("command", "C_STORE_RQ"), ("status", "0x0000")))] == 2
    assert got[("minipacs_dimse_operation_duration_seconds_count",
                (("command", "C_STORE_RQ"),))] == 2
    assert got[("minipacs_associations_total",
                (("calling_ae", CALLING), ("outcome", "released")))] == 1
    assert got[("minipacs_associations_active", ())] == 0
    for level, count in (("patient", 1), ("study", 1), ("series", 1), ("instance", 2)):
        assert got[("minipacs_index_entities", (("level", level),))] == count
    assert got[("minipacs_store_filesystem_bytes", (("kind", "free"),))] > 0
    assert got[("minipacs_store_free_watermark_bytes", ())] == 1 << 20
    assert got[("minipacs_commitment_pending_transactions", ())] == 0
    assert got[("minipacs_http_requests_total", (("method", "GET"),
                ("route", "/dicom-web/studies"), ("status", "200")))] == 1


async def test_health(tmp_path: Path) -> None:
    async with web_server(tmp_path / "a") as web:
        base = f"http://{LOOPBACK}:{web.http_port}"
        live = await call(requests.get, f"{base}/health/live", timeout=10)
        ready = await call(requests.get, f"{base}/health/ready", timeout=10)
    assert live.status_code == 200 and live.json()["status"] == "ok"
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"index": "ok", "store_writable": "ok", "free_space": "ok"}
    # A watermark no disk meets: not ready, and the answer says why.
    async with web_server(tmp_path / "b", storage={"min_free_mb": 1 << 30}) as web:
        ready = await call(requests.get, f"http://{LOOPBACK}:{web.http_port}/health/ready",
                           timeout=10)
    assert ready.status_code == 503
    assert ready.json()["checks"]["free_space"].startswith("failed")


async def test_no_cors_unless_configured(tmp_path: Path) -> None:
    async with web_server(tmp_path) as web:
        response = await call(requests.get, f"{web.url}/studies", timeout=10,
                              headers={"Origin": ORIGIN})
        preflight = await call(requests.options, f"{web.url}/studies", timeout=10, headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in preflight.headers


async def test_cors_for_configured_origins(tmp_path: Path) -> None:
    async with web_server(tmp_path, http={"cors_origins": [ORIGIN]}) as web:
        allowed = await call(requests.get, f"{web.url}/studies", timeout=10,
                             headers={"Origin": ORIGIN})
        other = await call(requests.get, f"{web.url}/studies", timeout=10,
                           headers={"Origin": "http://elsewhere.example"})
        preflight = await call(requests.options, f"{web.url}/studies", timeout=10, headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization"})
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-origin" not in other.headers
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]


class OnlyFind:
    """A policy allowing searches and nothing else (what the security work will provide)."""

    def __init__(self) -> None:
        self.asked: list[tuple[Principal, Operation]] = []

    def allowed(self, who: Principal, operation: Operation, sop_class: str | None = None
                ) -> bool:
        self.asked.append((who, operation))
        return operation is Operation.FIND


@contextlib.asynccontextmanager
async def http_with_policy(directory: Path, policy: Any) -> AsyncIterator[str]:
    config = make_config(directory, http={"host": LOOPBACK, "port": 0})
    storage = prepare(config)
    engine = make_engine(config.database.url)
    index = SqlIndex(engine)
    await index.start()
    server = build_http_server(config, storage, index,
                               ingest=StoreService(storage, index, AttributeReader()),
                               storage_classes=storage_classes(config), permissions=policy)
    assert isinstance(server, HttpServer)
    await server.start()
    try:
        yield f"http://{LOOPBACK}:{server.port}/dicom-web"
    finally:
        await server.shutdown(0)
        await index.aclose()
        engine.dispose()


@pytest.mark.parametrize(("method", "path", "operation"), [
    ("GET", "/studies", Operation.FIND),
    ("GET", f"/studies/{ROOT}.1", Operation.GET),
    ("GET", f"/studies/{ROOT}.1/metadata", Operation.GET),
    ("POST", "/studies", Operation.STORE),
])
async def test_permissions_are_asked_per_request(tmp_path: Path, method: str, path: str,
                                                 operation: Operation) -> None:
    policy = OnlyFind()
    async with http_with_policy(tmp_path, policy) as url:
        headers = {"Content-Type": "multipart/related; type=application/dicom; boundary=x"}
        response = await call(requests.request, method, url + path, timeout=10,
                              headers=headers, data=b"--x--\r\n" if method == "POST" else None)
    assert policy.asked and policy.asked[-1][1] is operation
    assert policy.asked[-1][0].peer_host == LOOPBACK
    expected = 200 if operation is Operation.FIND else 403
    assert response.status_code == expected, response.text
    if expected == 403:
        assert operation.value in response.text
