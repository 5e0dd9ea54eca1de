"""Verification Service Class (PS3.4 Annex A): C-ECHO as SCP and as SCU."""

from __future__ import annotations

from ..ports import Channel, Request
from ..proto.dimse import CEchoRQ
from ..proto.sop import VERIFICATION
from ..proto.status import Status
from .dispatcher import Outcome, response_for


async def handle_echo(channel: Channel, request: Request) -> Outcome:
    """C-ECHO SCP: success whenever the association is up (PS3.4 A.4)."""
    return Outcome(response_for(request.message, Status.SUCCESS))


async def echo(channel: Channel) -> int:
    """C-ECHO SCU over an established association; returns the peer's status."""
    context = next((c for c in channel.info.negotiated.contexts.values()
                    if c.abstract_syntax == VERIFICATION and c.scu_role), None)
    if context is None:
        raise LookupError("the peer did not accept the Verification SOP class")
    message = CEchoRQ(message_id=channel.next_message_id(), affected_sop_class_uid=VERIFICATION)
    status = -1
    async for reply in channel.request(context.context_id, message):
        status = reply.message.status  # type: ignore[union-attr]
    return status
