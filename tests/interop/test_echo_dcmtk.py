"""C-ECHO with DCMTK as the peer: echoscu against our server, `minipacs echo` against storescp."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from minipacs.net.server import Server
from tests.support import (
    ECHOSCU,
    LOOPBACK,
    WAIT,
    AssociationLog,
    dcmtk_env,
    run_dcmtk,
    run_minipacs,
    serve_process,
    storescp,
)


def test_echoscu_against_minipacs_serve(tmp_path: Path) -> None:
    # The daemon as users run it: `minipacs serve` on a defaults-like config (port 0).
    with serve_process(tmp_path) as served:
        result = subprocess.run([ECHOSCU, "-v", LOOPBACK, str(served.port)],
                                capture_output=True, text=True, timeout=WAIT,
                                env=dcmtk_env(), check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Received Echo Response (Success)" in result.stdout + result.stderr
        line = served.wait_for_line(r"association peer=.* calling='ECHOSCU' ").string
        assert "messages=1 result=released" in line


@pytest.mark.parametrize("max_pdu", [None, 4096], ids=["default-pdu", "pdu-4096"])
async def test_echoscu_against_in_process_server(server: Server, assoc_log: AssociationLog,
                                                 max_pdu: int | None) -> None:
    options = ["--max-pdu", str(max_pdu)] if max_pdu else []
    result = await run_dcmtk("echoscu", "-v", *options, LOOPBACK, str(server.port))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Received Echo Response (Success)" in result.stdout + result.stderr
    (line,) = await assoc_log.wait_for(1)
    assert "calling='ECHOSCU'" in line
    assert line.endswith("messages=1 result=released")


@pytest.mark.parametrize("max_pdu", [None, "4096"], ids=["default-pdu", "pdu-4096"])
async def test_minipacs_echo_against_storescp(tmp_path: Path, max_pdu: str | None) -> None:
    options = ["--max-pdu", max_pdu] if max_pdu else []
    async with storescp(tmp_path) as scp:
        result = await run_minipacs("echo", LOOPBACK, str(scp.port), "--timeout", "5",
                                    *options)
    assert result.returncode == 0, result.stderr
    assert "success" in result.stdout
    assert result.stderr == ""
