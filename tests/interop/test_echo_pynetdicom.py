"""C-ECHO with pynetdicom as the peer, both ways, and the asynchronous operations window."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pynetdicom import VerificationPresentationContexts
from pynetdicom.pdu_primitives import AsynchronousOperationsWindowNegotiation
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from minipacs.net.server import Server
from minipacs.proto.status import Status
from tests.support import LOOPBACK, free_port, pynetdicom_ae, run_minipacs

SCP_AE_TITLE = "PYNETSCP"
OUR_ASYNC_LIMIT = 16  # limits.async_ops_window by default


def echo_with_window(port: int, window: tuple[int, int] | None) -> tuple[int, tuple[int, int]]:
    """C-ECHO from pynetdicom (blocking); returns the status and the window we answered."""
    ae = pynetdicom_ae()
    ae.add_requested_context(Verification)
    ext_neg = []
    if window is not None:
        item = AsynchronousOperationsWindowNegotiation()
        item.maximum_number_operations_invoked, item.maximum_number_operations_performed = window
        ext_neg.append(item)
    assoc = ae.associate(LOOPBACK, port, ext_neg=ext_neg)
    assert assoc.is_established
    try:
        answered = assoc.acceptor.asynchronous_operations
        status = assoc.send_c_echo()
        assert status is not None, "no C-ECHO response"
        return int(status.Status), answered
    finally:
        assoc.release()


async def test_pynetdicom_echo_succeeds(server: Server) -> None:
    status, window = await asyncio.to_thread(echo_with_window, server.port, None)
    assert status == Status.SUCCESS
    assert window == (1, 1)  # no item proposed: none answered, synchronous (PS3.7 D.3.3.3)


@pytest.mark.parametrize(("proposed", "answered"), [
    ((32, 40), (OUR_ASYNC_LIMIT, OUR_ASYNC_LIMIT)),
    ((5, 3), (5, 3)),
    ((0, 2), (OUR_ASYNC_LIMIT, 2)),  # 0 = unlimited, so our limit applies
])
async def test_async_ops_window_is_min_of_proposed_and_ours(
        server: Server, proposed: tuple[int, int], answered: tuple[int, int]) -> None:
    status, window = await asyncio.to_thread(echo_with_window, server.port, proposed)
    assert status == Status.SUCCESS
    assert window == answered


@pytest.fixture(params=[False, True], ids=["any-called-aet", "require-called-aet"])
def pynetdicom_scp(request: pytest.FixtureRequest) -> Iterator[tuple[int, bool]]:
    """A pynetdicom Verification SCP in its own threads; yields (port, called AE enforced)."""
    ae = pynetdicom_ae(SCP_AE_TITLE)
    ae.supported_contexts = VerificationPresentationContexts
    ae.require_called_aet = request.param
    scp = ae.start_server((LOOPBACK, 0), block=False)
    try:
        yield scp.server_address[1], request.param
    finally:
        scp.shutdown()


async def test_minipacs_echo_against_pynetdicom(pynetdicom_scp: tuple[int, bool]) -> None:
    port, _ = pynetdicom_scp
    result = await run_minipacs("echo", LOOPBACK, str(port), "--aec", SCP_AE_TITLE,
                                "--timeout", "5")
    assert result.returncode == 0, result.stderr
    assert "success" in result.stdout
    assert SCP_AE_TITLE in result.stdout


async def test_minipacs_echo_wrong_called_aet_is_rejected(
        pynetdicom_scp: tuple[int, bool]) -> None:
    port, enforced = pynetdicom_scp
    result = await run_minipacs("echo", LOOPBACK, str(port), "--aec", "SOMEONE-ELSE",
                                "--timeout", "5")
    if not enforced:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "called AE title not recognized" in result.stderr


async def test_minipacs_echo_to_closed_port_fails_with_one_line() -> None:
    port = free_port()  # bound and released: nothing listens there now
    result = await run_minipacs("echo", LOOPBACK, str(port), "--timeout", "5")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{LOOPBACK}:{port}" in result.stderr
    assert "refused" in result.stderr.lower()
    assert "Traceback" not in result.stderr
