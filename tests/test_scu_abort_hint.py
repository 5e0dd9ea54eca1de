"""SCU commands against a peer that accepts the association, then aborts the first request.

That is how some PACS (Orthanc among them) refuse a calling AE title they do not know; the
error then says so and names `--aet` (issue 10 item 9). Real sockets, the real CLI.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from minipacs.net.server import Server, ServerLimits
from minipacs.ports import Channel
from minipacs.proto.negotiation import AcceptorPolicy, default_supported
from tests.interop.dicomfiles import write_part10
from tests.support import LOOPBACK, make_ct, run_minipacs

HINT = "the peer may not know our calling AE title 'MINIPACS_SCU' (--aet sets it)"


@contextlib.asynccontextmanager
async def aborting_peer() -> AsyncIterator[int]:
    """A peer that accepts anything, then aborts at the first request."""

    async def serve(channel: Channel) -> None:
        async for _request in channel.requests():
            channel.abort("unknown calling AE")  # type: ignore[attr-defined]
            return

    policy = AcceptorPolicy(ae_title="ORTHANC", supported=default_supported(),
                            scu_role_classes=frozenset(default_supported()))
    server = Server(policy, serve, ServerLimits(artim_timeout=5.0))
    await server.start(LOOPBACK, 0)
    try:
        yield server.port
    finally:
        await server.shutdown(0)


@pytest.mark.parametrize("command", [
    ["echo"],
    ["find", "-k", "PatientID=P1"],
    ["move", "-k", "StudyInstanceUID=1.2.3", "--dest", "WS"],
    ["get", "-k", "StudyInstanceUID=1.2.3", "--out", "{out}"],
    ["store", "{ct}"],
])
async def test_an_abort_on_the_first_request_names_the_calling_ae(
        tmp_path: Path, command: list[str]) -> None:
    write_part10(make_ct(4096), tmp_path / "ct.dcm")
    args = [arg.replace("{out}", str(tmp_path / "out")).replace("{ct}", str(tmp_path / "ct.dcm"))
            for arg in command]
    async with aborting_peer() as port:
        result = await run_minipacs(args[0], "--timeout", "5", LOOPBACK, str(port), *args[1:])
    assert result.returncode == 1, result.stdout + result.stderr
    assert HINT in result.stderr, result.stderr
    assert "A-ABORT" in result.stderr
