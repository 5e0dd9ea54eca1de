"""Timers and lifecycle: idle associations are aborted; SIGTERM drains, then aborts; twice forces.

The shutdown tests run `minipacs serve` as a subprocess (signals belong to a process), with
pynetdicom holding an association open from this process.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from minipacs.proto.pdu import AAssociateAC
from minipacs.proto.status import Status
from tests.support import (
    LOOPBACK,
    WAIT,
    ServeProcess,
    ServerFactory,
    associate_rq,
    pynetdicom_ae,
    raw_connection,
    read_answer,
    read_pdu,
    serve_process,
)

IDLE = 1.0
GRACE = 1.0
# A-ABORT with source 0 (service user), as our server aborts an association it gives up on.
USER_ABORT = bytes([0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00])


async def test_idle_association_is_aborted(start_server: ServerFactory) -> None:
    server = await start_server(limits={"idle_timeout": IDLE})
    async with raw_connection(server.port) as (reader, writer):
        writer.write(associate_rq())
        assert isinstance(await read_pdu(reader), AAssociateAC)
        started = time.perf_counter()
        answer = await read_answer(reader, timeout=IDLE + 5)  # and then say nothing
        elapsed = time.perf_counter() - started
    assert answer == USER_ABORT
    assert IDLE * 0.8 <= elapsed < IDLE + 3


@pytest.fixture
def held_association(request: pytest.FixtureRequest, tmp_path: Path
                     ) -> Iterator[tuple[ServeProcess, Any]]:
    """`minipacs serve` (limits from the test's parameter) with one pynetdicom association."""
    with serve_process(tmp_path, limits=request.param) as served:
        ae = pynetdicom_ae("HOLDER")
        ae.add_requested_context(Verification)
        assoc = ae.associate(LOOPBACK, served.port)
        assert assoc.is_established
        try:
            yield served, assoc
        finally:
            if assoc.is_alive():
                assoc.abort()


def assert_refused(port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, port), timeout=WAIT).close()


def assert_aborted(assoc: Any) -> None:
    assoc.join(WAIT)  # pynetdicom's association thread ends once the A-ABORT arrives
    assert not assoc.is_alive()
    assert assoc.is_aborted


@pytest.mark.parametrize("held_association", [{"shutdown_grace": GRACE}], indirect=True)
def test_sigterm_stops_accepting_then_aborts_after_grace(
        held_association: tuple[ServeProcess, Any]) -> None:
    served, assoc = held_association
    served.signal(signal.SIGTERM)
    started = time.monotonic()
    served.wait_for_line(r"waiting up to 1 s for 1 association\(s\)")
    assert_refused(served.port)
    # During the grace period the open association is still served.
    assert int(assoc.send_c_echo().Status) == Status.SUCCESS
    assert served.wait() == 0
    elapsed = time.monotonic() - started
    assert GRACE * 0.8 <= elapsed < GRACE + 3
    assert_aborted(assoc)
    assert "aborting 1 association(s) still open after 1 s" in served.log
    line = served.wait_for_line(r"association .*calling='HOLDER' ").string
    assert "result=aborted" in line


def test_sigterm_without_associations_exits_promptly(tmp_path: Path) -> None:
    with serve_process(tmp_path, limits={"shutdown_grace": 30}) as served:
        started = time.monotonic()
        served.signal(signal.SIGTERM)
        assert served.wait() == 0
        assert time.monotonic() - started < 5  # far below the 30 s grace: nothing to wait for
        assert served.lines[-1].endswith("stopped")


@pytest.mark.parametrize("held_association", [{"shutdown_grace": 30}], indirect=True)
def test_second_sigterm_forces_shutdown(held_association: tuple[ServeProcess, Any]) -> None:
    served, assoc = held_association
    served.signal(signal.SIGTERM)
    served.wait_for_line(r"waiting up to 30 s for 1 association\(s\)")
    started = time.monotonic()
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert time.monotonic() - started < 5  # far below the 30 s grace
    assert_aborted(assoc)
    assert "second SIGTERM" in served.log
