"""Connection exhaustion: silent sockets, slow handshakes and one greedy host do not lock
real clients out (issue 13 item 3). Real sockets on the loopback, the whole server."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator
from typing import Final

import pytest

from minipacs.net.client import association
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.pdu import (
    PRESENTATION_LOCAL_LIMIT_EXCEEDED,
    AAssociateAC,
    AAssociateRJ,
    RejectResult,
    RejectSource,
)
from minipacs.proto.sop import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
from tests.support import (
    LOOPBACK,
    WAIT,
    AssociationLog,
    ServerFactory,
    assert_echo_works,
    associate_rq,
    read_pdu,
)

SILENT: Final = 1000
IDLE: Final = 200
OTHER_HOST: Final = "127.0.0.2"  # the loopback is all of 127/8 (Linux): a second "host"
LONG: Final = {"artim_timeout": 60, "idle_timeout": 60, "handshake_timeout": 60}


def ensure_descriptors(wanted: int) -> None:
    """This test holds both ends of every connection: raise the soft limit if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.fail(f"needs {wanted} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@contextlib.asynccontextmanager
async def sockets(port: int, count: int, host: str = LOOPBACK
                  ) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    """`count` TCP connections from `host` that send nothing; closed on the way out."""
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        async with asyncio.timeout(WAIT * 3):
            for _ in range(count):
                held.append(await asyncio.open_connection(LOOPBACK, port,
                                                          local_addr=(host, 0)))
        yield held
    finally:
        for _, writer in held:
            writer.close()


async def test_silent_sockets_and_idle_associations_leave_room_for_a_c_echo(
        start_server: ServerFactory) -> None:
    """The target of the issue: 1,000 silent sockets and 200 idle associations held, and a
    new client's C-ECHO answered in under a second, with the default limits."""
    ensure_descriptors(2 * (SILENT + IDLE) + 512)
    server = await start_server(limits=LONG)
    request = build_associate_rq("IDLER", "ANY-SCP",
                                 [(VERIFICATION, [IMPLICIT_VR_LITTLE_ENDIAN])])
    async with sockets(server.port, SILENT), contextlib.AsyncExitStack() as idle:
        async with asyncio.timeout(WAIT * 3):
            for _ in range(IDLE):
                await idle.enter_async_context(association(LOOPBACK, server.port, request))
        took = await assert_echo_works(server.port)
    assert took < 1.0, f"C-ECHO took {took:.3f} s"


async def test_a_full_handshake_pool_makes_room_by_closing_the_oldest(
        start_server: ServerFactory, assoc_log: AssociationLog) -> None:
    server = await start_server(limits={**LONG, "max_handshakes": 3})
    async with sockets(server.port, 3) as silent:
        await assert_echo_works(server.port)
        (oldest_reader, _), *_ = silent
        async with asyncio.timeout(WAIT):
            assert await oldest_reader.read(1) == b""  # closed by the server
        lines = await assoc_log.wait_for(2)
    dropped = [line for line in lines if "result=dropped" in line]
    assert len(dropped) == 1, lines
    assert "3 connections were waiting for their A-ASSOCIATE-RQ" in dropped[0]


async def test_a_handshake_has_its_own_short_deadline(
        start_server: ServerFactory, assoc_log: AssociationLog) -> None:
    """A client dripping its A-ASSOCIATE-RQ is closed after handshake_timeout, not ARTIM."""
    server = await start_server(limits={"artim_timeout": 60, "handshake_timeout": 0.5})
    reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
    try:
        started = time.monotonic()
        writer.write(associate_rq()[:1])  # the first byte of a request that never completes
        async with asyncio.timeout(WAIT):
            assert await reader.read(1024) == b""
        assert time.monotonic() - started < 5
    finally:
        writer.close()
    (line,) = await assoc_log.wait_for(1)
    assert "result=timeout (no A-ASSOCIATE-RQ within 0.5 s)" in line, line


async def raw_associate(port: int, host: str) -> tuple[object, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(host, 0))
    writer.write(associate_rq(f"FROM_{host[-1]}"))
    return await read_pdu(reader), writer


async def test_one_host_cannot_take_every_association(start_server: ServerFactory) -> None:
    server = await start_server(limits={**LONG, "max_associations_per_address": 2})
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(2):
            answer, writer = await raw_associate(server.port, OTHER_HOST)
            writers.append(writer)
            assert isinstance(answer, AAssociateAC)
        refused, writer = await raw_associate(server.port, OTHER_HOST)
        writers.append(writer)
        assert refused == AAssociateRJ(RejectResult.TRANSIENT,
                                       RejectSource.SERVICE_PROVIDER_PRESENTATION,
                                       PRESENTATION_LOCAL_LIMIT_EXCEEDED)
        await assert_echo_works(server.port)  # another address still gets in
    finally:
        for writer in writers:
            writer.close()
