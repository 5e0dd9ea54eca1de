"""Storage Commitment Push Model SCP (PS3.4 Annex J): N-ACTION in, N-EVENT-REPORT out.

The N-ACTION (Action Type ID 1) is checked, persisted and answered at once (J.3.2.1.3); a
worker task then checks every referenced instance (in the index, its file present with the
size and checksum recorded at ingest) and reports the result (J.3.3): on the requestor's
association while it is open when so configured, else on a new association to its `peers`
entry, proposing the SCP role (J.3.3.1.3). A failed delivery is retried with exponential
backoff, bounded by attempts and time; pending transactions are taken up again at start.

Several processes may share the index: the worker attempts only transactions it has claimed
there (`ports.CommitmentIndex.claim`): its own N-ACTIONs at once, then whatever is due and
free, including the work of a process that died, so each report is delivered by one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Final

from ..ports import (
    AssociationClosed,
    Channel,
    CommitmentIndex,
    CommitmentItem,
    CommitmentPolicy,
    CommitmentState,
    CommitmentTransaction,
    Peers,
    PeerUnreachable,
    Request,
    Storage,
)
from ..proto.dimse import NActionRQ, NEventReportRQ
from ..proto.negotiation import AcceptedContext
from ..proto.pdu import RoleSelection
from ..proto.sop import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    STORAGE_COMMITMENT_PUSH,
    STORAGE_COMMITMENT_PUSH_INSTANCE,
)
from ..proto.status import Status, StatusCategory, category, describe
from .commitment_rules import (
    ACTION_REQUEST_COMMITMENT,
    EVENT_ALL_COMMITTED,
    EVENT_FAILURES_EXIST,
    MAX_ACTION_BYTES,
    ActionError,
    FailureReason,
    build_report,
    describe_reason,
    file_intact,
    parse_action,
)
from .dispatcher import Outcome, response_for

__all__ = [
    "ACTION_REQUEST_COMMITMENT",
    "EVENT_ALL_COMMITTED",
    "EVENT_FAILURES_EXIST",
    "ActionError",
    "CommitmentPolicy",
    "CommitmentService",
    "FailureReason",
    "build_report",
    "describe_reason",
    "file_intact",
    "parse_action",
]

log = logging.getLogger("minipacs.commitment")

# The report goes out in whichever native syntax the requestor accepts (PS3.4 J.3.3).
_REPORT_SYNTAXES: Final = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
# Deliveries one process attempts at once (each claims its transaction).
MAX_RUNNING: Final = 16


class DeliveryError(Exception):
    """One delivery attempt failed; str() is one line for the log."""


class CommitmentService:
    """The N-ACTION handler and the worker that checks and reports transactions."""

    def __init__(self, index: CommitmentIndex, storage: Storage, peers: Peers, *,
                 ae_title: str, storage_classes: frozenset[str],
                 policy: CommitmentPolicy | None = None) -> None:
        self.index = index
        self.storage = storage
        self.peers = peers
        self.ae_title = ae_title
        self.storage_classes = storage_classes
        self.policy = policy or CommitmentPolicy()
        self._live: dict[str, tuple[Channel, int]] = {}  # transaction UID → its association
        self._claimed: set[str] = set()  # claimed in the index, not attempted yet
        self._running: dict[str, asyncio.Task[None]] = {}
        self._scan_at = 0.0  # loop time of the next claim in the index
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker: it first takes up every report still owed that no live process
        holds, each tried at once."""
        self._worker = asyncio.create_task(self._work(), name="commitment-worker")

    async def aclose(self) -> None:
        """Stop at once: transactions in progress stay pending, claimed by this process until
        its registration goes (index/processes.py), and are taken up again."""
        tasks = [t for t in (self._worker, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._worker = None

    # --- N-ACTION ---------------------------------------------------------------------------

    async def handle(self, channel: Channel, request: Request) -> Outcome:
        """Storage Commitment Request (PS3.4 J.3.2): validate, persist, answer at once."""
        message = request.message
        assert isinstance(message, NActionRQ)
        try:
            transaction_uid, items = await self._read_action(request)
        except ActionError as exc:
            log.warning("storage commitment N-ACTION from %s refused: %s (%s)",
                        channel.info.calling_ae, exc.comment, describe(exc.status))
            return Outcome(response_for(message, exc.status, exc.comment))
        info = channel.info
        txn = CommitmentTransaction(transaction_uid, info.calling_ae, info.called_ae, items,
                                    datetime.now(UTC))
        added = await self.index.add_transaction(txn)  # claimed by this process
        if not added:
            known = await self.index.transaction(transaction_uid)
            if not _same_request(known, txn):
                # PS3.3 C.14.1.1 (0131H): the Transaction UID is already in use; the request
                # is refused rather than answered with a report under someone else's UID.
                return Outcome(response_for(message, Status.PROCESSING_FAILURE,
                                            "Transaction UID already in use"))
            log.info("storage commitment %s: request repeated, one report will follow",
                     transaction_uid)
        else:
            log.info("storage commitment %s: %d instance(s) from %s", transaction_uid,
                     len(items), info.calling_ae)
        if added and self.policy.same_association:
            self._live[transaction_uid] = (channel, request.context.context_id)
        # Woken on the next loop turn: the dispatcher writes this handler's response without
        # yielding, and the check needs thread hops first, so the N-ACTION-RSP goes first.
        # A repeated request is the claim's holder's, or due work for whoever claims it.
        if added:
            self._claimed.add(transaction_uid)
        self._scan_soon(0.0 if not added else None)
        return Outcome(response_for(message, Status.SUCCESS,
                                    action_type_id=ACTION_REQUEST_COMMITMENT))

    async def _read_action(self, request: Request) -> tuple[str, tuple[CommitmentItem, ...]]:
        message = request.message
        assert isinstance(message, NActionRQ)
        if message.requested_sop_instance_uid.strip("\0 ") != STORAGE_COMMITMENT_PUSH_INSTANCE:
            # PS3.4 J.3.5: the only instance is the well-known one.
            raise ActionError(Status.NO_SUCH_SOP_INSTANCE,
                              "not the well-known Storage Commitment instance")
        if message.action_type_id != ACTION_REQUEST_COMMITMENT:
            raise ActionError(Status.NO_SUCH_ACTION,
                              f"Action Type ID {message.action_type_id} is not 1")
        if request.data is None:
            raise ActionError(Status.INVALID_ARGUMENT_VALUE, "no Action Information")
        try:
            data = await request.data.read_all(MAX_ACTION_BYTES)
        except ValueError:
            raise ActionError(Status.RESOURCE_LIMITATION,
                              f"Action Information over {MAX_ACTION_BYTES >> 20} MiB") from None
        return parse_action(data, request.context.transfer_syntax)

    # --- the worker ---------------------------------------------------------------------------

    def _scan_soon(self, delay: float | None) -> None:
        """Wake the worker; with `delay`, claim from the index no later than that."""
        if delay is not None:
            self._scan_at = min(self._scan_at, asyncio.get_running_loop().time() + delay)
        self._wake.set()

    def _retry_later(self, transaction_uid: str) -> None:
        """Attempt a transaction whose claim this process still holds again, after the
        retry delay (its outcome could not be recorded)."""
        def again() -> None:
            self._claimed.add(transaction_uid)
            self._wake.set()

        asyncio.get_running_loop().call_later(self.policy.retry_delay, again)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        try:  # the reports still owed that no live process holds: tried at once
            if taken := await self.index.make_due():
                log.info("storage commitment: %d pending transaction(s) taken up", taken)
        except Exception as exc:  # they become due on their own schedule
            log.warning("storage commitment: cannot take up pending reports: %s", exc)
        while True:
            self._wake.clear()
            if loop.time() >= self._scan_at and len(self._running) < MAX_RUNNING:
                await self._scan(loop)
            for uid in sorted(self._claimed - set(self._running)):
                if len(self._running) >= MAX_RUNNING:
                    break
                self._claimed.discard(uid)
                task = asyncio.create_task(self._attempt(uid), name=f"commitment-{uid}")
                self._running[uid] = task
                task.add_done_callback(lambda _t, uid=uid: self._finished(uid))
            # Every slot busy: a finished attempt wakes the worker.
            timeout = (None if len(self._running) >= MAX_RUNNING
                       else max(0.0, self._scan_at - loop.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _scan(self, loop: asyncio.AbstractEventLoop) -> None:
        """Claim what is due and free in the index; plan the next look."""
        try:
            claim = await self.index.claim(MAX_RUNNING - len(self._running))
        except Exception as exc:  # the index is unreachable: look again later
            log.warning("storage commitment: cannot claim pending reports: %s", exc)
            self._scan_at = loop.time() + self.policy.retry_delay
            return
        self._claimed.update(claim.transaction_uids)
        self._scan_at = loop.time() + claim.rescan_in

    def _finished(self, transaction_uid: str) -> None:
        self._running.pop(transaction_uid, None)
        self._wake.set()  # a slot is free: more may be claimed

    async def _attempt(self, transaction_uid: str) -> None:
        """One check-and-deliver; nothing escapes the task but cancellation."""
        try:
            await self._attempt_once(transaction_uid)
        except asyncio.CancelledError:
            raise
        except Exception:  # e.g. the index could not record the outcome: try again later
            log.exception("storage commitment %s: attempt failed; retrying", transaction_uid)
            self._retry_later(transaction_uid)  # the claim is still ours

    async def _attempt_once(self, transaction_uid: str) -> None:
        try:
            txn = await self.index.transaction(transaction_uid)
            if txn is None or txn.state is not CommitmentState.PENDING:
                return
            if not txn.checked:
                txn = await self._check(txn)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("storage commitment %s: check failed; retrying", transaction_uid)
            self._retry_later(transaction_uid)  # the claim is still ours
            return
        attempts = txn.attempts + 1
        try:
            where = await self._deliver(txn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(txn, attempts, str(exc) if isinstance(exc, DeliveryError)
                               else f"internal error: {type(exc).__name__}: {exc}")
            return
        if not await self.index.record_attempt(transaction_uid, state=CommitmentState.DELIVERED,
                                               attempts=attempts, retry_in=None, error=None):
            _taken_over(transaction_uid)
        failed = sum(1 for item in txn.items if item.failure_reason)
        log.info("storage commitment %s: report delivered to %s %s (attempt %d): "
                 "%d committed, %d failed", transaction_uid, txn.requestor_ae_title, where,
                 attempts, len(txn.items) - failed, failed)

    async def _failed(self, txn: CommitmentTransaction, attempts: int, error: str) -> None:
        policy = self.policy
        uid = txn.transaction_uid
        age = (datetime.now(UTC) - txn.received_at).total_seconds()
        if attempts >= policy.max_attempts or (policy.give_up_after
                                               and age >= policy.give_up_after):
            if not await self.index.record_attempt(uid, state=CommitmentState.FAILED,
                                                   attempts=attempts, retry_in=None,
                                                   error=error):
                _taken_over(uid)
            log.error("storage commitment %s: report to %s not delivered after %d attempt(s) "
                      "in %.0f s, giving up: %s", uid, txn.requestor_ae_title, attempts, age,
                      error)
            return
        delay = min(policy.retry_delay * 2 ** (attempts - 1), policy.max_retry_delay)
        if not await self.index.record_attempt(uid, state=CommitmentState.PENDING,
                                               attempts=attempts, retry_in=delay, error=error):
            _taken_over(uid)
            return
        log.warning("storage commitment %s: report to %s, attempt %d of %d failed: %s; "
                    "retrying in %g s", uid, txn.requestor_ae_title, attempts,
                    policy.max_attempts, error, delay)
        self._scan_soon(delay)

    async def _check(self, txn: CommitmentTransaction) -> CommitmentTransaction:
        """Each item's failure reason (PS3.3 C.14.1.1), recorded before any report."""
        found = await self.index.locate([item.sop_instance_uid for item in txn.items])
        reasons: list[int] = []
        verified: dict[str, bool] = {}
        for item in txn.items:
            copy = found.get(item.sop_instance_uid)
            if item.sop_class_uid not in self.storage_classes:
                reason: int = FailureReason.REFERENCED_SOP_CLASS_NOT_SUPPORTED
            elif copy is None:
                reason = FailureReason.NO_SUCH_OBJECT_INSTANCE
            elif copy.sop_class_uid != item.sop_class_uid:
                reason = FailureReason.CLASS_INSTANCE_CONFLICT
            else:
                if item.sop_instance_uid not in verified:
                    verified[item.sop_instance_uid] = await asyncio.to_thread(
                        file_intact, self.storage, copy)
                ok = verified[item.sop_instance_uid]
                reason = 0 if ok else FailureReason.PROCESSING_FAILURE
            reasons.append(int(reason))
        await self.index.record_results(txn.transaction_uid, reasons)
        items = tuple(CommitmentItem(i.sop_class_uid, i.sop_instance_uid, r)
                      for i, r in zip(txn.items, reasons, strict=True))
        return CommitmentTransaction(txn.transaction_uid, txn.requestor_ae_title,
                                     txn.called_ae_title, items, txn.received_at, txn.state,
                                     txn.attempts, txn.next_attempt_at, txn.last_error)

    async def _deliver(self, txn: CommitmentTransaction) -> str:
        """Send the report; returns where it went. Raises DeliveryError."""
        live = self._live.pop(txn.transaction_uid, None)
        if live is not None:
            channel, context_id = live
            context = channel.info.negotiated.contexts.get(context_id)
            try:
                if context is not None:
                    await self._report(channel, context, txn)
                    return "on the same association"
            except AssociationClosed:
                log.info("storage commitment %s: the requestor's association has ended; "
                         "reporting on a new one", txn.transaction_uid)
        if self.peers.address(txn.requestor_ae_title) is None:
            raise DeliveryError(f"{txn.requestor_ae_title!r} is not a configured peer: "
                                "add it under `peers` to receive its report")
        contexts = [(STORAGE_COMMITMENT_PUSH, ts) for ts in _REPORT_SYNTAXES]
        # PS3.4 J.3.3.1.3: as association requestor we propose the SCP role only.
        roles = [RoleSelection(STORAGE_COMMITMENT_PUSH, scu_role=False, scp_role=True)]
        try:
            async with self.peers.connect(txn.requestor_ae_title, contexts, roles=roles,
                                          calling_ae=txn.called_ae_title) as channel:
                accepted = sorted(
                    (c for c in channel.info.negotiated.contexts.values()
                     if c.abstract_syntax == STORAGE_COMMITMENT_PUSH),
                    key=lambda c: c.context_id)
                if not accepted:
                    raise DeliveryError("the requestor rejected the Storage Commitment context")
                await self._report(channel, accepted[0], txn)
        except PeerUnreachable as exc:
            raise DeliveryError(exc.reason) from None
        except AssociationClosed as exc:
            raise DeliveryError(f"association lost: {exc}") from None
        return f"at {self.peers.address(txn.requestor_ae_title)}"

    async def _report(self, channel: Channel, context: AcceptedContext,
                      txn: CommitmentTransaction) -> None:
        """One N-EVENT-REPORT (PS3.4 J.3.3); raises DeliveryError unless answered Success."""
        event, data = build_report(txn, self.ae_title, context.transfer_syntax)
        message = NEventReportRQ(
            message_id=channel.next_message_id(),
            affected_sop_class_uid=STORAGE_COMMITMENT_PUSH,
            affected_sop_instance_uid=STORAGE_COMMITMENT_PUSH_INSTANCE,
            event_type_id=event, has_dataset=True)
        status: int | None = None
        try:
            async with asyncio.timeout(self.policy.timeout):
                async for reply in channel.request(context.context_id, message, data):
                    status = reply.message.status
        except TimeoutError:
            raise DeliveryError(f"no N-EVENT-REPORT response within "
                                f"{self.policy.timeout:g} s") from None
        if status is None or category(status) is not StatusCategory.SUCCESS:
            text = "none" if status is None else f"0x{status:04X} {describe(status)}"
            raise DeliveryError(f"N-EVENT-REPORT answered with status {text}")


def _same_request(known: CommitmentTransaction | None, new: CommitmentTransaction) -> bool:
    """A repeated N-ACTION (e.g. after a lost response) of a transaction still pending."""
    if known is None or known.state is not CommitmentState.PENDING:
        return False
    pairs = [(i.sop_class_uid, i.sop_instance_uid) for i in known.items]
    return (known.requestor_ae_title == new.requestor_ae_title
            and pairs == [(i.sop_class_uid, i.sop_instance_uid) for i in new.items])


def _taken_over(transaction_uid: str) -> None:
    log.warning("storage commitment %s: another process had taken the transaction over (this "
                "one was silent past its lease); the outcome of this attempt is not recorded",
                transaction_uid)
