"""The one outbound association lifecycle: release, abort, reject, retry (real sockets)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from minipacs.net.client import AssociationRejectedError, PeerAborted, association
from minipacs.net.server import Server, ServerLimits
from minipacs.ports import Channel, PeerUnreachable
from minipacs.proto.dimse import CEchoRQ
from minipacs.proto.negotiation import AcceptorPolicy, build_associate_rq, default_supported
from minipacs.proto.pdu import AAssociateRQ, RejectReason, RejectResult, RejectSource
from minipacs.proto.sop import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
from minipacs.services.echo import handle_echo
from tests.support import LOOPBACK, WAIT, AssociationLog, free_port

OUR_AE = "CLIENT_TEST"
SERVER_AE = "SERVER"
ECHO_CONTEXT = 1

Service = Callable[[Channel], Awaitable[None]]


async def idle_service(channel: Channel) -> None:
    """Serves nothing, waits for the release or abort."""
    async for _request in channel.requests():
        pass


@contextlib.asynccontextmanager
async def serving(service: Service = idle_service, **limits: object
                  ) -> AsyncIterator[Server]:
    policy = AcceptorPolicy(ae_title=SERVER_AE, supported=default_supported(),
                            check_called_ae=True)
    server = Server(policy, service, ServerLimits(**{"artim_timeout": 2.0, **limits}))
    await server.start(LOOPBACK, 0)
    try:
        yield server
    finally:
        await server.shutdown(0)


def echo_request(called: str = SERVER_AE) -> AAssociateRQ:
    return build_associate_rq(OUR_AE, called, [(VERIFICATION, [IMPLICIT_VR_LITTLE_ENDIAN])])


async def test_leaving_the_block_releases(assoc_log: AssociationLog) -> None:
    async with serving() as server:
        async with association(LOOPBACK, server.port, echo_request(), artim_timeout=WAIT) as conn:
            assert conn.transport.assoc.established
        assert conn.transport.outcome == "released"
        (line,) = await assoc_log.wait_for(1)
    assert line.endswith("result=released"), line


async def test_an_exception_in_the_block_aborts(assoc_log: AssociationLog) -> None:
    async with serving() as server:
        with pytest.raises(LookupError):
            async with association(LOOPBACK, server.port, echo_request()) as conn:
                raise LookupError("no context")
        assert conn.transport.outcome == "aborted"
        (line,) = await assoc_log.wait_for(1)
    assert "result=aborted (peer: A-ABORT by the service user)" in line, line


async def test_cancelling_the_block_aborts(assoc_log: AssociationLog) -> None:
    entered = asyncio.Event()

    async def hold(port: int) -> None:
        async with association(LOOPBACK, port, echo_request()):
            entered.set()
            await asyncio.Event().wait()

    async with serving() as server:
        task = asyncio.create_task(hold(server.port))
        async with asyncio.timeout(WAIT):
            await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (line,) = await assoc_log.wait_for(1)
    assert "result=aborted" in line, line


async def test_a_rejection_is_one_exception_with_its_words() -> None:
    async with serving() as server:
        with pytest.raises(AssociationRejectedError) as caught:
            async with association(LOOPBACK, server.port, echo_request("SOMEONE_ELSE")):
                pytest.fail("the block must not run")
    assert isinstance(caught.value, PeerUnreachable)
    reject = caught.value.reject
    assert (reject.result, reject.source, reject.reason) == (
        RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.CALLED_AE_NOT_RECOGNIZED)
    assert str(caught.value) == ("association rejected: permanent, service user, "
                                 "called AE title not recognized")
    assert not caught.value.transient


async def test_a_refused_connection_is_peer_unreachable() -> None:
    port = free_port()  # nobody listens there
    with pytest.raises(PeerUnreachable) as caught:
        async with association(LOOPBACK, port, echo_request()):
            pytest.fail("the block must not run")
    assert str(caught.value) == f"cannot connect to {LOOPBACK}:{port}: Connection refused"


async def test_transient_rejections_are_retried_then_reported(
        assoc_log: AssociationLog) -> None:
    """PS3.8 §9.3.4: transient means "try again later"; every attempt is one association."""
    async with serving(max_associations=1) as server:
        held = association(LOOPBACK, server.port, echo_request())
        async with held:
            with pytest.raises(AssociationRejectedError) as caught:
                async with association(LOOPBACK, server.port, echo_request(), attempts=3,
                                       backoff=0.01):
                    pytest.fail("the block must not run")
            assert caught.value.transient
            rejected = await assoc_log.wait_for(3)
    assert [("over the limit" in line) for line in rejected[:3]] == [True] * 3


async def test_a_peer_aborting_before_any_answer_is_early(assoc_log: AssociationLog) -> None:
    """How some peers refuse an unknown calling AE: accept, then abort the first request."""

    async def abort_at_once(channel: Channel) -> None:
        async for _request in channel.requests():
            channel.abort("who are you?")  # type: ignore[attr-defined]
            return

    async with serving(abort_at_once) as server:
        with pytest.raises(PeerAborted) as caught:
            async with association(LOOPBACK, server.port, echo_request()) as conn:
                message = CEchoRQ(message_id=conn.next_message_id(),
                                  affected_sop_class_uid=VERIFICATION)
                async with asyncio.timeout(WAIT):
                    async for _reply in conn.request(ECHO_CONTEXT, message):
                        pass
    assert caught.value.early
    assert str(caught.value) == "peer: A-ABORT by the service user"


async def test_a_peer_aborting_after_an_answer_is_not_early() -> None:
    async def answer_then_abort(channel: Channel) -> None:
        async for request in channel.requests():
            outcome = await handle_echo(channel, request)
            await channel.send(request.context.context_id, outcome.message)
            channel.abort("enough")  # type: ignore[attr-defined]
            return

    async with serving(answer_then_abort) as server:
        with pytest.raises(PeerAborted) as caught:
            async with association(LOOPBACK, server.port, echo_request()) as conn:
                for _ in range(2):
                    message = CEchoRQ(message_id=conn.next_message_id(),
                                      affected_sop_class_uid=VERIFICATION)
                    async with asyncio.timeout(WAIT):
                        async for _reply in conn.request(ECHO_CONTEXT, message):
                            pass
    assert not caught.value.early
