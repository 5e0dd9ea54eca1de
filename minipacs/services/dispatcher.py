"""Routes each DIMSE request of an association to the service registered for it (PS3.7 §9, §10).

A handler returns its final response; the dispatcher drains what is left of the request's
data set, sends the response, and turns a handler's exception into a failure status for that
operation only. Requests of one association run concurrently up to the negotiated
asynchronous operations window (PS3.7 D.3.3.3). It counts what the association was used for
(`Channel.usage`, for its summary line) and logs each failed operation once, naming the peer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

from ..ports import (
    NO_METRICS,
    AllowAll,
    AssociationClosed,
    Channel,
    MessageNotEncodable,
    Metrics,
    Permissions,
    Principal,
    Request,
    request_operation,
)
from ..proto.dimse import MESSAGE_TYPES, RESPONSE_BIT, CommandField, CStoreRQ, DimseMessage
from ..proto.sop import name_of
from ..proto.status import Status, StatusCategory, category, describe

log = logging.getLogger("minipacs.services")

# Operations of one association run at once when the peer negotiated "unlimited" (0).
UNLIMITED_WINDOW_CAP: Final = 64


@dataclass(frozen=True, slots=True)
class Outcome:
    """The final response of an operation, with the data set that goes with it, if any."""

    message: DimseMessage
    dataset: bytes | None = None
    duplicate: bool = False  # C-STORE: we already had this instance (it was received again)


Handler = Callable[[Channel, Request], Awaitable[Outcome]]


def sop_class_of(message: DimseMessage) -> str:
    """The SOP class a request is about: Affected for DIMSE-C and N-CREATE/N-EVENT-REPORT,
    Requested for the other DIMSE-N requests (PS3.7 §10.3)."""
    uid = getattr(message, "affected_sop_class_uid", None)
    return uid or getattr(message, "requested_sop_class_uid", "") or ""


def response_for(request: DimseMessage, status: int, comment: str | None = None,
                 **fields: object) -> DimseMessage:
    """The response matching `request`'s command, with the identifying fields PS3.7 asks for."""
    rsp_type = MESSAGE_TYPES[int(request.command_field) | RESPONSE_BIT]
    names = set(rsp_type.__dataclass_fields__)
    values: dict[str, object] = {
        "message_id_being_responded_to": request.message_id,  # type: ignore[union-attr]
        "status": status,
    }
    if "affected_sop_class_uid" in names:
        values["affected_sop_class_uid"] = sop_class_of(request)
    instance = (getattr(request, "affected_sop_instance_uid", None)
                or getattr(request, "requested_sop_instance_uid", None))
    if instance and "affected_sop_instance_uid" in names:
        values["affected_sop_instance_uid"] = instance
    if comment is not None and "error_comment" in names:
        values["error_comment"] = comment[:64]  # LO: at most 64 characters (PS3.5 6.2)
    values.update(fields)
    return rsp_type(**values)


class Dispatcher:
    """A `Callable[[Channel], Awaitable[None]]` the server runs for each association."""

    def __init__(self, metrics: Metrics = NO_METRICS,
                 permissions: Permissions | None = None) -> None:
        self.metrics = metrics
        self.permissions: Permissions = permissions or AllowAll()
        self._routes: dict[tuple[CommandField, str], Handler] = {}
        self._commands: set[CommandField] = set()

    def register(self, command: CommandField, sop_classes: Iterable[str],
                 handler: Handler) -> None:
        for uid in sop_classes:
            self._routes[(command, uid)] = handler
        self._commands.add(command)

    async def __call__(self, channel: Channel) -> None:
        window = channel.info.negotiated.async_invoked or UNLIMITED_WINDOW_CAP
        slots = asyncio.Semaphore(window)
        running: set[asyncio.Task[None]] = set()
        try:
            async for request in channel.requests():
                await slots.acquire()
                task = asyncio.create_task(self._run(channel, request, slots))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _route(self, channel: Channel, request: Request) -> Handler | Outcome:
        message = request.message
        command = message.command_field
        sop_class = sop_class_of(message)
        if sop_class != request.context.abstract_syntax:
            # A presentation context carries one abstract syntax (PS3.8 §7.1.1.13): a request
            # naming another SOP class is refused rather than routed by its command alone.
            return Outcome(response_for(message, Status.SOP_CLASS_NOT_SUPPORTED,
                                        "SOP class differs from the presentation context"))
        operation = request_operation(command, sop_class)
        if operation is not None and not self.permissions.allowed(
                principal(channel), operation, sop_class):
            # PS3.7 Annex C general status 0124H Refused: Not Authorized; `account` logs it,
            # naming the peer. The association goes on for what it may do.
            return Outcome(response_for(message, Status.NOT_AUTHORIZED,
                                        f"{operation.value!r} is not permitted"))
        handler = self._routes.get((command, sop_class))
        if handler is not None:
            return handler
        if command not in self._commands:
            # PS3.7 C.5.20 (0211H): the operation is not one this AE performs.
            return Outcome(response_for(message, Status.UNRECOGNIZED_OPERATION,
                                        f"{CommandField(command).name} not supported"))
        # PS3.7 C.5.19 (0122H): the SOP class is not supported for this operation.
        return Outcome(response_for(message, Status.SOP_CLASS_NOT_SUPPORTED,
                                    f"{name_of(sop_class)} not supported"))

    async def _run(self, channel: Channel, request: Request,
                   slots: asyncio.Semaphore) -> None:
        """One operation: its handler, then its one final response, or an A-ABORT.

        Whatever goes wrong while answering, the requestor is never left waiting for a
        response that will not come: if none can be sent, the association is aborted.
        """
        started = time.perf_counter()
        try:
            outcome = await self._outcome(channel, request)
            if outcome is None:
                return  # the association ended under the handler: nobody to answer
            if request.data is not None:
                await request.data.drain()  # PS3.4 B.2.3: take the whole message, then answer
            account(channel, request.message, outcome)
            await self._answer(channel, request, outcome)
            self.metrics.dimse_operation(CommandField(request.message.command_field).name,
                                         int(getattr(outcome.message, "status", 0)),
                                         time.perf_counter() - started)
        except AssociationClosed:
            pass
        except Exception:
            log.exception("%s from %s: no response can be sent; aborting the association",
                          label(request.message), peer(channel))
            channel.abort("no response could be sent")
        finally:
            slots.release()

    async def _outcome(self, channel: Channel, request: Request) -> Outcome | None:
        """The handler's final response; a handler's exception is 0110 for this operation."""
        try:
            route = self._route(channel, request)
            return route if isinstance(route, Outcome) else await route(channel, request)
        except AssociationClosed:
            return None
        except Exception as exc:
            log.exception("%s from %s failed", label(request.message), peer(channel))
            return Outcome(response_for(request.message, Status.PROCESSING_FAILURE,
                                        f"internal error: {type(exc).__name__}"))

    @staticmethod
    async def _answer(channel: Channel, request: Request, outcome: Outcome) -> None:
        """Send the final response; without the fields it echoes when those cannot go back.

        A request may carry a UID over 64 bytes or a byte outside the default repertoire
        (PS3.5 §6.2) that our response would echo. The echoed fields are all optional in a
        response (U(=), PS3.7 §9.3, §10.3): it then goes with its status alone.
        """
        context_id = request.context.context_id
        try:
            await channel.send(context_id, outcome.message, outcome.dataset)
        except MessageNotEncodable as exc:
            log.warning("%s from %s: answered without its identifying fields (%s)",
                        label(request.message), peer(channel), exc)
            await channel.send(context_id, bare(outcome.message), outcome.dataset)


def bare(message: DimseMessage) -> DimseMessage:
    """`message` without its text fields (UIDs, Error Comment): what must encode is left."""
    texts = {f.name: None for f in dataclasses.fields(message)  # type: ignore[arg-type]
             if isinstance(getattr(message, f.name), str)}
    return dataclasses.replace(message, **texts)  # type: ignore[type-var]


def label(message: DimseMessage) -> str:
    """'C-STORE', 'N-ACTION': the operation a request asks for (PS3.7 Table E.1-1)."""
    return CommandField(message.command_field).label.removesuffix("-RQ")


def principal(channel: Channel) -> Principal:
    """Who sends the requests of `channel`, as the permission policy sees it."""
    info = channel.info
    return Principal(info.peer_host, info.user, info.calling_ae, info.tls)


def peer(channel: Channel) -> str:
    """"'CALLING_AE' at host:port", for log lines (the AE title escaped: it is the peer's)."""
    info = channel.info
    return f"{info.calling_ae!r} at {info.peer_host}:{info.peer_port}"


def account(channel: Channel, request: DimseMessage, outcome: Outcome) -> None:
    """Count the operation for the association's summary; log it when it failed."""
    usage = channel.usage
    usage.requests[sop_class_of(request)] += 1
    status = int(getattr(outcome.message, "status", Status.PROCESSING_FAILURE))
    failed = category(status) is StatusCategory.FAILURE
    if isinstance(request, CStoreRQ):
        if failed:
            usage.failed += 1
        elif outcome.duplicate:
            usage.duplicates += 1
        else:
            usage.stored += 1
    if failed:
        service = label(request)
        instance = getattr(request, "affected_sop_instance_uid", None) \
            or getattr(request, "requested_sop_instance_uid", None)
        comment = getattr(outcome.message, "error_comment", None)
        log.warning("%s%s from %s: %s%s", service, f" {instance!r}" if instance else "",
                    peer(channel), describe(status, service), f" ({comment!r})" if comment else "")
