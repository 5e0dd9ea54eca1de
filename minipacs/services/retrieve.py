"""Query/Retrieve C-GET and C-MOVE SCP (PS3.4 C.4.2, C.4.3): C-STORE sub-operations.

C-GET sends its sub-operations on the requestor's own association, over the contexts it
proposed with the SCP role (PS3.7 D.3.3.4); C-MOVE opens a new association to the Move
Destination (C.4.2.3) proposing one context per (SOP class, stored transfer syntax) plus
Explicit and Implicit VR LE per SOP class, at most 128 per association (retrieve_routes).
Data sets stream from the file as stored, never decoded (DESIGN 7), when a context carries
the stored syntax; otherwise they are converted in bounded pieces in worker threads
(transcode), and an instance no context can carry fails. Counts go out in pending responses at a
bounded rate; the final status follows C.4.2.1.5 / C.4.3.1.5 (see docs/conformance.md
"C-MOVE and C-GET").
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import BinaryIO, Final

from pydicom.dataset import Dataset

from ..ports import (
    NO_AUDIT,
    AssociationClosed,
    Audit,
    Channel,
    FindQuery,
    InstanceLocation,
    InstancesRetrieved,
    MessageNotEncodable,
    Participant,
    PatientIssuers,
    Peers,
    PeerUnreachable,
    QueryLevel,
    Request,
    RetrieveIndex,
    RetrievePolicy,
    Storage,
    StorageError,
)
from ..proto.dimse import CGetRQ, CMoveRQ
from ..proto.negotiation import MAX_PRESENTATION_CONTEXTS
from ..proto.sop import dataset_encoding, name_of
from ..proto.status import Status, StatusCategory, category, describe
from .dataset_codec import encode_dataset_bytes
from .dispatcher import Outcome, response_for
from .identifier import MAX_IDENTIFIER_BYTES, decode_identifier
from .matching import IdentifierError, describe_tag
from .retrieve_keys import RETRIEVE_MODELS, RetrieveSelection, parse_retrieve_identifier
from .retrieve_routes import GetRoutes, Key, MoveRoutes, Route, SubOperationRoutes, plan_move
from .store_sender import ChunkReader, store_instance
from .transcode import MAX_INFLATED, TranscodeError, open_converted

__all__ = [
    "ISSUER_RULES",
    "PAGE_SIZE",
    "PENDING_INTERVAL",
    "RetrieveService",
    "encode_failed_list",
    "final_status",
]

log = logging.getLogger("minipacs.retrieve")

PAGE_SIZE: Final = 100  # instances asked of the index at a time: memory stays flat
PENDING_INTERVAL: Final = 0.1  # seconds between pending responses, at most one per interval
SUBOP_TIMEOUT: Final = RetrievePolicy().timeout  # without progress on one C-STORE
MAX_COUNT: Final = 1 << 40  # "no cap" when counting the instances to send
ISSUER_RULES: Final = tuple(PatientIssuers)  # retrieve.patient_issuers
MAX_SHORT_VALUE: Final = 0xFFFE  # explicit VR UI: a 16-bit, even value length (PS3.5 7.1.2)


class _Lost(Exception):
    """The sub-association broke: every instance not yet sent fails."""


@dataclass(slots=True)
class _Tally:
    """Sub-operation counts of one C-MOVE/C-GET (PS3.4 C.4.2.1.4-6)."""

    total: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    first_problem: str | None = None

    @property
    def done(self) -> int:
        return self.completed + self.failed + self.warning

    @property
    def remaining(self) -> int:
        return max(self.total - self.done, 0)

    def record(self, uid: str, kind: StatusCategory, problem: str | None = None) -> None:
        if kind is StatusCategory.SUCCESS:
            self.completed += 1
        elif kind is StatusCategory.WARNING:
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(uid)
        if problem and self.first_problem is None:
            self.first_problem = problem
        self.total = max(self.total, self.done)  # an instance stored meanwhile is counted

    def counts(self, *, remaining: bool) -> dict[str, int]:
        """Number of ... Sub-operations; Remaining only in pending and cancel responses."""
        out = {"number_of_completed_suboperations": self.completed,
               "number_of_failed_suboperations": self.failed,
               "number_of_warning_suboperations": self.warning}
        if remaining:
            out["number_of_remaining_suboperations"] = self.remaining
        return out


def final_status(tally: _Tally, *, cancelled: bool) -> Status:
    """PS3.4 C.4.2.1.5 / C.4.3.1.5: the status of the final response."""
    if cancelled:
        return Status.CANCEL
    if tally.failed == 0 and tally.warning == 0:
        return Status.SUCCESS
    if tally.completed == 0 and tally.warning == 0:
        return Status.OUT_OF_RESOURCES_SUBOPERATIONS  # every sub-operation failed
    return Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES


def encode_failed_list(uids: list[str], transfer_syntax: str) -> bytes:
    """The identifier of a final response: Failed SOP Instance UID List (0008,0058)."""
    implicit, _, _ = dataset_encoding(transfer_syntax)
    kept = uids
    if not implicit:  # a 16-bit length holds about a thousand UIDs; the rest are logged
        size, kept = 0, []
        for uid in uids:
            size += len(uid) + 1
            if size > MAX_SHORT_VALUE:
                break
            kept.append(uid)
    ds = Dataset()
    ds.FailedSOPInstanceUIDList = kept
    return encode_dataset_bytes(ds, transfer_syntax)


class _Run:
    """One C-MOVE/C-GET in progress: its counts, pending responses and log line."""

    def __init__(self, channel: Channel, request: Request, total: int, interval: float,
                 service: str, clock: Callable[[], float]) -> None:
        self.channel = channel
        self.request = request
        self.tally = _Tally(total)
        self.interval = interval
        self.service = service
        self.clock = clock
        self.last_pending: float | None = None
        self.cancelled = False
        self.lost: str | None = None  # why nothing more can be sent
        self.missing: set[Key] = set()  # (class, syntax) pairs already logged as unusable
        self.routes: dict[Key, Route | None] = {}  # per (class, stored syntax), on this channel

    async def pending(self, *, force: bool = False) -> None:
        """A pending response (0xFF00) with the counts, at most one per `interval`."""
        now = self.clock()
        if not force and self.last_pending is not None and \
                now - self.last_pending < self.interval:
            return
        if self.tally.remaining == 0:
            return  # the final response follows at once
        self.last_pending = now
        rsp = response_for(self.request.message, Status.PENDING,
                           **self.tally.counts(remaining=True))
        await self.channel.send(self.request.context.context_id, rsp)

    def fail(self, loc: InstanceLocation, problem: str) -> None:
        self.tally.record(loc.sop_instance_uid, StatusCategory.FAILURE, problem)

    def final(self) -> Outcome:
        tally = self.tally
        status = final_status(tally, cancelled=self.cancelled)
        comment = None
        if status in (Status.OUT_OF_RESOURCES_SUBOPERATIONS,
                      Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES):
            comment = self.lost or tally.first_problem
        fields = tally.counts(remaining=self.cancelled)
        data = None
        if tally.failed_uids and status != Status.SUCCESS:
            data = encode_failed_list(tally.failed_uids, self.request.context.transfer_syntax)
        return Outcome(response_for(self.request.message, status, comment,
                                    has_dataset=data is not None, **fields), data)


class RetrieveService:
    """C-GET and C-MOVE handlers (`get`, `move`); one instance serves every association."""

    def __init__(self, index: RetrieveIndex, storage: Storage, peers: Peers, *,
                 ae_title: str, patient_issuers: str = PatientIssuers.ALL,
                 page_size: int = PAGE_SIZE,
                 pending_interval: float = PENDING_INTERVAL,
                 timeout: float = SUBOP_TIMEOUT,
                 max_contexts: int = MAX_PRESENTATION_CONTEXTS,
                 clock: Callable[[], float] = time.monotonic,
                 strict_hierarchy: bool = False, max_inflated: int = MAX_INFLATED,
                 audit: Audit = NO_AUDIT) -> None:
        if patient_issuers not in ISSUER_RULES:
            raise ValueError(f"patient_issuers must be one of {', '.join(ISSUER_RULES)}")
        if page_size < 1 or not 0 < max_contexts <= MAX_PRESENTATION_CONTEXTS:
            raise ValueError("page_size must be >= 1, max_contexts 1..128")
        self.index = index
        self.storage = storage
        self.peers = peers
        self.ae_title = ae_title
        self.patient_issuers = patient_issuers
        self.page_size = page_size
        self.pending_interval = pending_interval
        self.timeout = timeout
        self.max_contexts = max_contexts
        self.clock = clock
        self.strict_hierarchy = strict_hierarchy  # False: PATIENT level on Study Root too
        self.max_inflated = max_inflated  # a conversion's inflated or decoded bound
        self.audit = audit

    # --- the two handlers ---------------------------------------------------------------

    async def get(self, channel: Channel, request: Request) -> Outcome:
        """C-GET SCP (PS3.4 C.4.3.3): sub-operations on the requestor's association."""
        message = request.message
        assert isinstance(message, CGetRQ)
        started = self.clock()
        selection = await self._selection(request, "C-GET")
        if isinstance(selection, Outcome):
            return selection
        query = _instances(selection)
        run = _Run(channel, request, await self.index.count(query, cap=MAX_COUNT),
                   self.pending_interval, "C-GET", self.clock)
        if run.tally.total:
            await run.pending(force=True)
        try:
            await self._send(run, channel, self._each(query), GetRoutes(channel, self.timeout),
                             None)
        except AssociationClosed:
            # The requestor went away mid-get: still log the one summary line (issue 5,
            # diagnosis), then let the dispatcher end the operation.
            run.lost = "the requestor's association ended"
            self._finish(run, selection, "same association (ended)", started,
                         channel.info.calling_ae)
            raise
        return self._finish(run, selection, "same association", started,
                            channel.info.calling_ae)

    async def move(self, channel: Channel, request: Request) -> Outcome:
        """C-MOVE SCP (PS3.4 C.4.2.3): sub-operations on a new association to the destination.

        One sub-association per plan of at most 128 contexts (retrieve_routes.plan_move),
        one after another; each reads only its own instances, so the selection is read once.
        """
        message = request.message
        assert isinstance(message, CMoveRQ)
        started = self.clock()
        destination = message.move_destination.strip(" ")
        address = self.peers.address(destination)
        if address is None:  # PS3.4 C.4.2.1.5: A801 Move destination unknown
            log.debug("C-MOVE destination %r is not a configured peer", destination)
            return Outcome(response_for(message, Status.MOVE_DESTINATION_UNKNOWN,
                                        f"unknown move destination {destination[:16]!r}"))
        selection = await self._selection(request, "C-MOVE")
        if isinstance(selection, Outcome):
            return selection
        query = _instances(selection)
        run = _Run(channel, request, await self.index.count(query, cap=MAX_COUNT),
                   self.pending_interval, "C-MOVE", self.clock)
        where = f"{destination} ({address})"
        if not run.tally.total:
            return self._finish(run, selection, where, started, destination)
        await run.pending(force=True)
        plans = plan_move(await self.index.instance_kinds(query), self.max_contexts)
        originator = (channel.info.calling_ae, message.message_id)
        unsent: frozenset[Key] = frozenset()  # pairs of the plans the destination never got
        for number, plan in enumerate(plans):
            if run.cancelled:
                break
            try:
                async with self.peers.connect(destination, plan.contexts) as sub:
                    routes = MoveRoutes(sub, plan, destination)
                    # One plan holds every instance: no need to narrow the selection.
                    kinds = plan.members if len(plans) > 1 else None
                    await self._send(run, sub, self._each(query, kinds), routes, originator)
                    if run.lost is not None:
                        raise _Lost(run.lost)  # abort the sub-association on the way out
            except PeerUnreachable as exc:
                run.lost = f"{destination}: {exc}"
                log.warning("C-MOVE from %r to %s: %s", channel.info.calling_ae, where, exc)
                unsent = unsent.union(*(p.members for p in plans[number:]))
                break
            except _Lost:
                unsent = unsent.union(*(p.members for p in plans[number + 1:]))
                break
        if unsent and not run.cancelled:
            async for loc in self._each(query, unsent):  # out of reach: each one failed
                run.fail(loc, run.lost or "not sent")
        return self._finish(run, selection, where, started, destination)

    async def _send(self, run: _Run, channel: Channel, locations: AsyncIterator[InstanceLocation],
                    routes: SubOperationRoutes, originator: tuple[str, int] | None) -> None:
        """The send loop of C-GET and C-MOVE: a C-STORE sub-operation per instance, counted.

        Stops at a C-CANCEL (PS3.4 C.4.2.3.1, C.4.3.3.1: the final status is then Cancel);
        once the sub-operations' association is lost, every instance left fails.
        """
        async for loc in locations:
            if run.request.cancelled.is_set():
                run.cancelled = True
                break
            if run.lost is not None:
                run.fail(loc, run.lost)
                continue
            found = routes.route(loc)
            if isinstance(found, str):
                run.fail(loc, found)
            else:
                try:
                    await self._sub_operation(run, channel, found, loc, originator)
                except routes.losses as exc:
                    run.lost = routes.lost(exc)
                    log.warning("%s: %s", run.service, run.lost)
                    run.fail(loc, run.lost)
            await run.pending()

    # --- shared steps -------------------------------------------------------------------

    async def _selection(self, request: Request, service: str) -> RetrieveSelection | Outcome:
        """Decode and check the identifier; an Outcome when the request is refused."""
        message = request.message
        try:
            if request.data is None:  # PS3.7 §9.1.3.1, §9.1.4.1: the identifier is mandatory
                raise IdentifierError(Status.UNABLE_TO_PROCESS, f"{service} without identifier")
            try:
                data = await request.data.read_all(MAX_IDENTIFIER_BYTES)
            except ValueError:
                raise IdentifierError(Status.UNABLE_TO_PROCESS,
                                      f"identifier over {MAX_IDENTIFIER_BYTES} bytes") from None
            identifier = decode_identifier(data, request.context.transfer_syntax)
            selection = parse_retrieve_identifier(
                identifier, RETRIEVE_MODELS[request.context.abstract_syntax],
                strict_hierarchy=self.strict_hierarchy)
            if selection.nonstandard:
                log.info("%s: non-standard level %s served on %s (query.strict_hierarchy: "
                         "false)", service, selection.level.value, selection.model.value)
            if selection.ignored:
                log.debug("%s identifier: ignored %s", service,
                          ", ".join(describe_tag(t) for t in selection.ignored))
            await self._check_issuers(selection)
        except IdentifierError as exc:
            # The dispatcher logs the refusal once, with the peer and the status in words.
            log.debug("%s refused: %s %r", service, describe(exc.status, service), exc.comment)
            offending = (exc.tag,) if exc.tag is not None else None
            return Outcome(response_for(message, exc.status, exc.comment,
                                        offending_element=offending))
        return selection

    async def _check_issuers(self, selection: RetrieveSelection) -> None:
        """The several-issuers rule for a PATIENT-level retrieve (retrieve.patient_issuers)."""
        if selection.level is not QueryLevel.PATIENT or selection.issuer is not None \
                or self.patient_issuers == "all":
            return
        patients = FindQuery(QueryLevel.PATIENT, selection.query.conditions)
        if await self.index.count(patients, cap=1) > 1:
            raise IdentifierError(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                                  f"PatientID {(selection.patient_id or '')[:16]!r} has "
                                  "several issuers; give IssuerOfPatientID")

    async def _each(self, query: FindQuery, kinds: frozenset[Key] | None = None
                    ) -> AsyncIterator[InstanceLocation]:
        """Every selected instance (of `kinds`), a keyset page at a time (memory stays flat)."""
        after: object | None = None
        while True:
            page = await self.index.instances(query, after=after, limit=self.page_size,
                                              kinds=kinds)
            for loc in page.instances:
                yield loc
            if page.after is None:
                return
            after = page.after

    async def _sub_operation(self, run: _Run, channel: Channel, found: Route,
                             loc: InstanceLocation, originator: tuple[str, int] | None) -> None:
        """One C-STORE sub-operation, counted. Raises TimeoutError or AssociationClosed."""
        chunks: ChunkReader | None = None
        data: AsyncIterable[bytes]
        try:
            if found.convert:  # converted in bounded pieces, each in a worker thread
                data = chunks = await ChunkReader.open(
                    lambda: open_converted(self._open(loc), loc.transfer_syntax_uid,
                                           found.transfer_syntax,
                                           max_inflated=self.max_inflated))
            else:
                data = chunks = await ChunkReader.open(lambda: self._open(loc))
        except (OSError, StorageError) as exc:
            log.error("%s: cannot read %r (%s): %s", run.service, loc.sop_instance_uid,
                      loc.storage_key, exc)
            run.fail(loc, "cannot read the stored file")
            return
        except TranscodeError as exc:
            log.warning("%s: cannot convert %r from %s to %s: %s", run.service,
                        loc.sop_instance_uid, name_of(loc.transfer_syntax_uid),
                        name_of(found.transfer_syntax), exc)
            run.fail(loc, f"conversion failed: {exc}")
            return
        try:
            status, comment = await store_instance(channel, found.context_id, loc, data,
                                                   timeout=self.timeout, originator=originator)
        except MessageNotEncodable as exc:  # e.g. a stored UID over 64 bytes: nothing sent
            log.warning("%s: cannot send %r: %s", run.service, loc.sop_instance_uid, exc)
            run.fail(loc, "its C-STORE request cannot be encoded")
            return
        finally:
            if chunks is not None:
                chunks.close()
        kind = category(status)
        if kind not in (StatusCategory.SUCCESS, StatusCategory.WARNING):
            kind = StatusCategory.FAILURE  # PS3.4 B.2.3: anything else means not stored
        problem = None
        if kind is not StatusCategory.SUCCESS:
            problem = describe(status, "C-STORE") + (f" ({comment})" if comment else "")
            log.info("%s: C-STORE of %r: %s", run.service, loc.sop_instance_uid, problem)
        run.tally.record(loc.sop_instance_uid, kind, problem)

    def _open(self, loc: InstanceLocation) -> BinaryIO:
        return self.storage.open_dataset(loc.storage_key, loc.dataset_offset)


    def _finish(self, run: _Run, selection: RetrieveSelection, where: str,
                started: float, destination: str) -> Outcome:
        outcome = run.final()
        tally = run.tally
        status = int(outcome.message.status)  # type: ignore[union-attr]
        info = run.channel.info
        self.audit.record(InstancesRetrieved(
            Participant(info.calling_ae, info.peer_host, info.user), run.service, destination,
            selection.level.value, selection.uids, tally.completed, tally.failed,
            tally.warning, status))
        log.info("%s from %r to %s, %s %s x%d: %d completed, %d failed, %d warning, "
                 "%d remaining in %.2f s: %s", run.service, run.channel.info.calling_ae,
                 where, selection.model.value, selection.level.value, selection.entities,
                 tally.completed, tally.failed, tally.warning, tally.remaining,
                 self.clock() - started, describe(status, run.service))
        if tally.failed_uids and outcome.dataset is not None:
            log.debug("%s failed SOP instances: %s", run.service, ", ".join(tally.failed_uids))
        return outcome


def _instances(selection: RetrieveSelection) -> FindQuery:
    return FindQuery(QueryLevel.IMAGE, selection.query.conditions)

