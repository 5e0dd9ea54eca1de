"""Query/Retrieve Service Class, C-FIND SCP (PS3.4 C.4.1, C.6): Patient Root and Study Root.

The identifier is decoded and checked (services/identifier.py), the index is asked page by
page (keyset pages, each its own short read), and one pending response goes out per
matching entity, encoded in the presentation context's transfer syntax; then Success, or
Cancel once a C-CANCEL arrived (PS3.7 §9.1.2, §9.3.2.3).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from pydicom.datadict import keyword_for_tag

from ..ports import (
    NO_AUDIT,
    AssociationClosed,
    Audit,
    Channel,
    Condition,
    DataSetError,
    FindPage,
    JsonDataset,
    Participant,
    QueryIndex,
    QueryPerformed,
    Request,
)
from ..proto.dimse import CFindRQ, DimseMessage
from ..proto.sop import QR_FIND_SOP_CLASSES
from ..proto.status import Status
from .answers import encode_answer
from .dispatcher import Outcome, response_for
from .identifier import (
    MAX_IDENTIFIER_BYTES,
    IdentifierError,
    ParsedQuery,
    decode_identifier,
    model_of,
    parse_identifier,
)

__all__ = [
    "COMBINED_DATE_TIME",
    "PAGE_SIZE",
    "RELATIONAL_QUERIES",
    "SUPPORTED_OPTIONS",
    "FindService",
    "answer_extended_negotiation",
    "negotiated_options",
    "read_identifier",
    "refused",
    "stream_answers",
]

log = logging.getLogger("minipacs.find")

PAGE_SIZE: Final = 100  # answers asked of the index at a time: memory stays flat
# PS3.4 C.5.1.1 Table C.5-1: the C-FIND service-class application information, byte by byte.
RELATIONAL_QUERIES: Final = 0
COMBINED_DATE_TIME: Final = 1
FUZZY_PERSON_NAMES: Final = 2
TIMEZONE_ADJUSTMENT: Final = 3
ENHANCED_MULTIFRAME_CONVERSION: Final = 4
SUPPORTED_OPTIONS: Final = frozenset({RELATIONAL_QUERIES, COMBINED_DATE_TIME})
OPTION_ON: Final = 1


# --- extended negotiation ---------------------------------------------------------------------


def answer_extended_negotiation(info: bytes) -> bytes | None:
    """The SOP Class Extended Negotiation answer for a FIND class (PS3.4 C.5.1.1).

    One byte back per byte proposed: 1 where the option was asked for and is supported
    (relational queries, combined date-time matching), 0 otherwise.
    """
    if not info:
        return None
    return bytes(OPTION_ON if index in SUPPORTED_OPTIONS and value == OPTION_ON else 0
                 for index, value in enumerate(info))


def negotiated_options(channel: Channel, sop_class: str) -> tuple[bool, bool]:
    """(relational queries, combined date-time matching) as agreed on this association."""
    info = channel.info.negotiated.extended.get(sop_class, b"")
    relational = len(info) > RELATIONAL_QUERIES and info[RELATIONAL_QUERIES] == OPTION_ON
    combined = len(info) > COMBINED_DATE_TIME and info[COMBINED_DATE_TIME] == OPTION_ON
    return relational, combined


EXTENDED_NEGOTIATION: Final = {uid: answer_extended_negotiation for uid in QR_FIND_SOP_CLASSES}


# --- the service --------------------------------------------------------------------------


class FindService:
    """The C-FIND handler for the FIND SOP classes; one instance serves every association.

    `strict_hierarchy` False (query.strict_hierarchy, the default) answers a query whose
    unique keys above its level are missing across all entities, as workstations expect;
    True refuses it with 0xA900 (PS3.4 C.4.1.3.1.1).
    """

    def __init__(self, index: QueryIndex, *, ae_title: str, max_results: int = 0,
                 page_size: int = PAGE_SIZE, strict_hierarchy: bool = False,
                 audit: Audit = NO_AUDIT) -> None:
        if max_results < 0 or page_size < 1:
            raise ValueError("max_results must be >= 0 and page_size >= 1")
        self.index = index
        self.ae_title = ae_title
        self.max_results = max_results
        self.page_size = page_size
        self.strict_hierarchy = strict_hierarchy
        self.audit = audit

    async def __call__(self, channel: Channel, request: Request) -> Outcome:
        message = request.message
        assert isinstance(message, CFindRQ)
        try:
            data = await read_identifier(request)
        except IdentifierError as exc:
            return refused(message, exc)
        sop_class = request.context.abstract_syntax
        relational, combined = negotiated_options(channel, sop_class)
        try:
            identifier = decode_identifier(data, request.context.transfer_syntax)
            parsed = parse_identifier(identifier, model_of(sop_class),
                                      matchable=self.index.matchable, relational=relational,
                                      combined_datetime=combined,
                                      strict_hierarchy=self.strict_hierarchy)
        except IdentifierError as exc:
            return refused(message, exc)
        started = time.perf_counter()
        outcome, sent = await self._answer(channel, request, parsed)
        info = channel.info
        status = int(outcome.message.status)  # type: ignore[union-attr]
        self.audit.record(QueryPerformed(
            Participant(info.calling_ae, info.peer_host, info.user), sop_class,
            parsed.query.level.value, keys_asked(parsed.query.conditions), sent, status))
        log.debug("C-FIND %s %s from %s: %d match(es), %s in %.1f ms", parsed.model.value,
                  parsed.query.level.value, channel.info.calling_ae, sent,
                  f"0x{outcome.message.status:04X}",  # type: ignore[union-attr]
                  (time.perf_counter() - started) * 1000)
        return outcome

    async def _answer(self, channel: Channel, request: Request,
                      parsed: ParsedQuery) -> tuple[Outcome, int]:
        message = request.message
        assert isinstance(message, CFindRQ)
        try:
            if self.max_results:
                count = await self.index.count(parsed.query, cap=self.max_results)
                if count > self.max_results:  # refused before any pending (documented A700)
                    return refused(message, IdentifierError(
                        Status.OUT_OF_RESOURCES,
                        f"more than {self.max_results} matches; refine the query")), 0
        except DataSetError as exc:  # the index refused a condition: Unable to process
            return refused(message, IdentifierError(Status.UNABLE_TO_PROCESS, exc.comment)), 0
        except Exception as exc:  # a database error: this operation fails, not the association
            log.exception("C-FIND count failed")
            return refused(message, IdentifierError(
                Status.UNABLE_TO_PROCESS, f"query failed: {type(exc).__name__}")), 0
        transfer_syntax = request.context.transfer_syntax

        def encode(answer: JsonDataset) -> tuple[bytes, bool]:
            return encode_answer(answer, parsed, self.ae_title, transfer_syntax)

        def pages(after: object | None) -> Awaitable[FindPage]:
            return self.index.find(parsed.query, after=after, limit=self.page_size)

        return await stream_answers(channel, request, pages, encode,
                                    warning=bool(parsed.unsupported))


async def stream_answers(channel: Channel, request: Request,
                         pages: Callable[[object | None], Awaitable[FindPage]],
                         encode: Callable[[JsonDataset], tuple[bytes, bool]], *,
                         warning: bool) -> tuple[Outcome, int]:
    """One pending C-FIND response per answer, page by page, then the final response.

    PS3.4 C.4.1.2.3 / K.4.1.2.3: Pending (FF00H), or FF01H when a key was not supported
    (`warning`) or an answer lost a value; Cancel (FE00H) as soon as a C-CANCEL arrived
    (PS3.7 §9.3.2.3); an index error ends the operation with C000H, never the association.
    Returns the final outcome and how many answers were sent.
    """
    message = request.message
    cancelled = Outcome(response_for(message, Status.CANCEL))
    pending = Status.PENDING_WARNING if warning else Status.PENDING
    sent = 0
    try:
        after: object | None = None
        while True:
            if request.cancelled.is_set():
                return cancelled, sent
            page = await pages(after)
            for answer in page.answers:
                if request.cancelled.is_set():  # C-CANCEL (PS3.7 §9.3.2.3): stop, FE00H
                    return cancelled, sent
                data, degraded = encode(answer)
                status = Status.PENDING_WARNING if degraded else pending
                await channel.send(request.context.context_id,
                                   response_for(message, status, has_dataset=True), data)
                sent += 1
                # Let the reader see a C-CANCEL (and other associations run) mid-page.
                await asyncio.sleep(0)
            if page.after is None:
                return Outcome(response_for(message, Status.SUCCESS)), sent
            after = page.after
    except AssociationClosed:
        raise
    except DataSetError as exc:  # the index refused a condition: Unable to process
        return refused(message, IdentifierError(Status.UNABLE_TO_PROCESS, exc.comment)), sent
    except Exception as exc:  # a database error: this operation fails, not the association
        log.exception("C-FIND failed after %d answer(s)", sent)
        return refused(message, IdentifierError(
            Status.UNABLE_TO_PROCESS, f"query failed: {type(exc).__name__}")), sent


def keys_asked(conditions: tuple[Condition, ...]) -> dict[str, str]:
    """The matching keys of a query by keyword, values as sent ('\\' between list values),
    for the audit trail (PS3.15 A.5.3.10 Query: what was asked)."""
    keys: dict[str, str] = {}
    for condition in conditions:
        name = keyword_for_tag(condition.tag) or f"{condition.tag:08X}"
        if condition.items:
            for item, value in keys_asked(condition.items).items():
                keys[f"{name}.{item}"] = value
        else:
            keys[name] = "\\".join(condition.values)
    return keys


async def read_identifier(request: Request) -> bytes:
    """The C-FIND request's identifier; IdentifierError (0xC000) when missing or too large."""
    if request.data is None:  # PS3.7 §9.1.2.1: the identifier is mandatory
        raise IdentifierError(Status.UNABLE_TO_PROCESS, "C-FIND request without identifier")
    try:
        return await request.data.read_all(MAX_IDENTIFIER_BYTES)
    except ValueError:
        raise IdentifierError(Status.UNABLE_TO_PROCESS,
                              f"identifier larger than {MAX_IDENTIFIER_BYTES} bytes") from None


def refused(message: DimseMessage, error: IdentifierError) -> Outcome:
    """The final C-FIND response refusing a query: its status, comment and offending key."""
    log.debug("C-FIND refused: 0x%04X %r", error.status, error.comment)  # logged by the dispatcher
    offending = (error.tag,) if error.tag is not None else None
    return Outcome(response_for(message, error.status, error.comment,
                                offending_element=offending))
