"""The HTTP listener lives and dies with the daemon: minipacs keeps the signals (uvicorn's
own handlers are not installed), SIGTERM stops both listeners and the process exits 0."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import requests

from tests.support import LOOPBACK, serve_process


def test_sigterm_stops_http_with_the_daemon(tmp_path: Path) -> None:
    with serve_process(tmp_path, http={"host": LOOPBACK, "port": 0}) as server:
        port = int(server.wait_for_line(r"DICOMweb at http://[^:]+:(\d+)")[1])
        assert requests.get(f"http://{LOOPBACK}:{port}/health/live", timeout=5).ok
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.log
        assert "stopped" in server.log
    with socket.socket() as sock:  # the HTTP port is closed
        assert sock.connect_ex((LOOPBACK, port)) != 0
