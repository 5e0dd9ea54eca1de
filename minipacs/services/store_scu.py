"""Storage Service Class as SCU (PS3.4 Annex B): plan contexts, send files, count outcomes.

Rules (documented in README "minipacs store"):
- one presentation context per distinct (SOP class, transfer syntax) of the files, proposing
  exactly the file's own transfer syntax: the data set is sent as it lies in the file, never
  decoded or re-encoded, so a peer that rejects that context fails those files ("peer
  rejected <SOP class> in <transfer syntax>");
- at most 128 contexts per association (odd context IDs 1..255, PS3.8 §9.3.2.2); beyond
  that the files are split over several associations, one after another, grouped so that
  all files of one (SOP class, transfer syntax) go on the same association;
- one C-STORE at a time (no asynchronous operations window);
- `timeout` bounds every wait without progress: each accepted chunk of the data set, then
  the response, restarts it, so a large file is never cut off while it is still moving;
- an association lost in mid-run (A-ABORT, connection reset, timeout) fails the file being
  sent, and the remaining files go on a new association; after MAX_FRUITLESS_LOSSES losses
  in a row without a single response the run stops, as it does when no association can be
  opened: every file not yet sent then counts as failed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import BinaryIO, Final, Generic, TypeAlias, TypeVar

from ..ports import AssociationClosed, Channel, MessageNotEncodable, PeerUnreachable
from ..proto.negotiation import MAX_PRESENTATION_CONTEXTS
from ..proto.sop import name_of
from ..proto.status import StatusCategory, category, describe
from .store_sender import ChunkReader, Storable, store_instance

__all__ = [
    "AssociationPlan",
    "FileOutcome",
    "StoreProgress",
    "StoreSummary",
    "StoreTally",
    "plan_associations",
    "send_all",
]

# Associations lost in a row, with no C-STORE answered in between, before the run stops.
MAX_FRUITLESS_LOSSES: Final = 3
MEGABYTE: Final = 1_000_000  # MB/s in the output are decimal megabytes
SERVICE: Final = "C-STORE"

ContextKey: TypeAlias = tuple[str, str]  # (SOP Class UID, Transfer Syntax UID)
T = TypeVar("T", bound=Storable)


# --- planning ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AssociationPlan(Generic[T]):
    """One association: the contexts to propose and the instances to send over it."""

    contexts: tuple[ContextKey, ...]  # proposed in this order, one transfer syntax each
    items: tuple[T, ...]  # in the order given to `plan_associations`


def context_key(item: Storable) -> ContextKey:
    return item.sop_class_uid, item.transfer_syntax_uid


def plan_associations(items: Iterable[T], max_contexts: int = MAX_PRESENTATION_CONTEXTS
                      ) -> list[AssociationPlan[T]]:
    """Group instances by (SOP class, transfer syntax); at most `max_contexts` per association.

    PS3.8 §9.3.2.2: context IDs are odd integers 1..255, so 128 contexts at most. Contexts
    keep the order in which they are first seen; each association's instances keep theirs.
    """
    if not 0 < max_contexts <= MAX_PRESENTATION_CONTEXTS:
        raise ValueError(f"max_contexts must be 1..{MAX_PRESENTATION_CONTEXTS}")
    ordered = list(items)
    keys = list(dict.fromkeys(map(context_key, ordered)))
    plans: list[AssociationPlan[T]] = []
    for start in range(0, len(keys), max_contexts):
        group = tuple(keys[start:start + max_contexts])
        members = frozenset(group)
        plans.append(AssociationPlan(group, tuple(i for i in ordered
                                                  if context_key(i) in members)))
    return plans


# --- outcomes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """What became of one file."""

    source: str
    category: StatusCategory  # SUCCESS, WARNING or FAILURE (anything else is a failure)
    status: int | None = None  # the peer's DIMSE status, None when it never answered
    reason: str = ""  # empty on success

    @property
    def label(self) -> str:
        """'stored', 'warning' or 'failed'."""
        return {StatusCategory.SUCCESS: "stored",
                StatusCategory.WARNING: "warning"}.get(self.category, "failed")


@dataclass(frozen=True, slots=True)
class StoreProgress:
    """The run so far, reported after every file (and once when the run stops)."""

    total: int  # files to send (DICOM files found, unreadable ones included)
    done: int
    stored: int  # success or warning: the peer kept the instance
    warnings: int  # among `stored`
    failed: int
    skipped: int  # not DICOM files: never sent, not failures
    bytes_sent: int
    elapsed: float
    outcome: FileOutcome | None  # the file just finished, if any


@dataclass(frozen=True, slots=True)
class StoreSummary:
    """The whole run."""

    stored: int  # success or warning; warnings are counted among them
    warnings: int
    failed: int
    skipped: int
    bytes_sent: int  # data-set bytes of the files the peer answered
    elapsed: float  # seconds, scanning included
    associations: int
    problems: tuple[FileOutcome, ...]  # failures and warnings, in order; unsent ones left out
    error: str | None = None  # why the run stopped before sending everything
    unsent: int = 0  # files counted as failed because the run stopped (among `failed`)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.error is None

    @property
    def attempted(self) -> int:
        """Files with an outcome of their own (not just "not sent")."""
        return self.stored + self.failed - self.unsent

    @property
    def instances_per_second(self) -> float:
        return self.stored / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes_sent / MEGABYTE / self.elapsed if self.elapsed > 0 else 0.0


class StoreTally:
    """Counts outcomes as they arrive, reports progress, and builds the summary."""

    def __init__(self, total: int, skipped: int = 0,
                 progress: Callable[[StoreProgress], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 started: float | None = None) -> None:
        self.total = total
        self.skipped = skipped
        self.stored = self.warnings = self.failed = self.unsent = 0
        self.bytes_sent = 0
        self.associations = 0
        self.problems: list[FileOutcome] = []
        self.error: str | None = None
        self._progress = progress
        self._clock = clock
        self._started = clock() if started is None else started

    def record(self, outcome: FileOutcome, bytes_sent: int = 0) -> None:
        self.bytes_sent += bytes_sent
        if outcome.category is StatusCategory.SUCCESS:
            self.stored += 1
        elif outcome.category is StatusCategory.WARNING:
            self.stored += 1
            self.warnings += 1
            self.problems.append(outcome)
        else:
            self.failed += 1
            self.problems.append(outcome)
        self._report(outcome)

    def stop(self, error: str, unsent: int) -> None:
        """The run ends early: `unsent` files will never be sent."""
        self.error = error
        self.unsent += unsent
        self.failed += unsent
        self._report(None)

    def _report(self, outcome: FileOutcome | None) -> None:
        if self._progress is not None:
            self._progress(StoreProgress(
                self.total, self.stored + self.failed, self.stored, self.warnings,
                self.failed, self.skipped, self.bytes_sent, self._clock() - self._started,
                outcome))

    def summary(self) -> StoreSummary:
        return StoreSummary(self.stored, self.warnings, self.failed, self.skipped,
                            self.bytes_sent, self._clock() - self._started, self.associations,
                            tuple(self.problems), self.error, self.unsent)


# --- sending ----------------------------------------------------------------------------


class _Lost(Exception):
    """The association broke while sending `outcome`'s file; `by_peer` if not our fault."""

    def __init__(self, outcome: FileOutcome, *, by_peer: bool) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome
        self.by_peer = by_peer


Connect = Callable[[Sequence[ContextKey]], AbstractAsyncContextManager[Channel]]
ExplainLoss = Callable[[str, AssociationClosed], str]


async def send_all(plans: Sequence[AssociationPlan[T]], connect: Connect,
                   open_dataset: Callable[[T], BinaryIO], tally: StoreTally, *,
                   timeout: float, explain_loss: ExplainLoss = lambda reason, _exc: reason
                   ) -> None:
    """Send every planned instance; outcomes go to `tally`.

    `connect(contexts)` opens an association proposing `contexts` (each with its one
    transfer syntax), raising PeerUnreachable when it cannot; on leaving the block it
    releases the association, or aborts it when the block raised. `explain_loss` may add
    the caller's words to why an association was lost (the CLI's hint about --aet).
    """
    fruitless = 0
    for number, plan in enumerate(plans):
        queue = deque(plan.items)
        while queue:
            answered = False
            try:
                async with connect(plan.contexts) as channel:
                    tally.associations += 1
                    accepted = {(c.abstract_syntax, c.transfer_syntax): c.context_id
                                for c in channel.info.negotiated.contexts.values()
                                if c.scu_role}
                    while queue:
                        outcome, sent = await _send_one(channel, accepted, queue[0],
                                                        open_dataset, timeout, explain_loss)
                        queue.popleft()
                        if outcome.status is not None:
                            answered = True
                            fruitless = 0
                        tally.record(outcome, sent)
            except PeerUnreachable as exc:
                rest = len(queue) + sum(len(p.items) for p in plans[number + 1:])
                tally.stop(str(exc), rest)
                return
            except _Lost as lost:
                queue.popleft()
                tally.record(lost.outcome)
                if lost.by_peer and not answered:
                    fruitless += 1
                    if fruitless >= MAX_FRUITLESS_LOSSES:
                        rest = len(queue) + sum(len(p.items) for p in plans[number + 1:])
                        tally.stop(f"stopped after {fruitless} associations in a row were "
                                   f"lost: {lost.outcome.reason}", rest)
                        return


async def _send_one(channel: Channel, accepted: dict[ContextKey, int], item: T,
                    open_dataset: Callable[[T], BinaryIO], timeout: float,
                    explain_loss: ExplainLoss) -> tuple[FileOutcome, int]:
    """Send one file; (outcome, data-set bytes sent). Raises _Lost if the association broke."""
    context_id = accepted.get(context_key(item))
    if context_id is None:
        return FileOutcome(item.source, StatusCategory.FAILURE, None,
                           f"peer rejected {name_of(item.sop_class_uid)} in "
                           f"{name_of(item.transfer_syntax_uid)}"), 0
    try:
        chunks = await ChunkReader.open(lambda: open_dataset(item))
    except OSError as exc:
        return FileOutcome(item.source, StatusCategory.FAILURE, None,
                           f"cannot read: {exc.strerror or exc}"), 0
    try:
        status, comment = await store_instance(channel, context_id, item, chunks,
                                               timeout=timeout)
    except TimeoutError:
        raise _Lost(FileOutcome(item.source, StatusCategory.FAILURE, None,
                                f"no progress for {timeout:g} s: association aborted"),
                    by_peer=True) from None
    except AssociationClosed as exc:
        raise _Lost(FileOutcome(item.source, StatusCategory.FAILURE, None,
                                explain_loss(f"association lost: {exc}", exc)),
                    by_peer=True) from None
    except MessageNotEncodable as exc:  # e.g. a SOP Instance UID over 64 bytes: not sent
        return FileOutcome(item.source, StatusCategory.FAILURE, None,
                           f"cannot be sent: {exc}"), 0
    except OSError as exc:  # a read error in mid-file: the message cannot be completed
        raise _Lost(FileOutcome(item.source, StatusCategory.FAILURE, None,
                                f"read error: {exc.strerror or exc}; association aborted"),
                    by_peer=False) from None
    finally:
        chunks.close()
    kind = category(status)
    if kind is StatusCategory.SUCCESS:
        return FileOutcome(item.source, kind, status), item.dataset_size
    if kind is not StatusCategory.WARNING:
        kind = StatusCategory.FAILURE  # PS3.4 B.2.3: anything else means not stored
    reason = describe(status, SERVICE)
    if comment:
        reason += f" ({comment})"
    return FileOutcome(item.source, kind, status, reason), item.dataset_size
