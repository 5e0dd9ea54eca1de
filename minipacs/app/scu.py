"""SCU commands: C-ECHO, C-STORE and C-FIND to a remote AE (no index involved)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..net.client import PeerAborted, association
from ..ports import AssociationClosed, Channel, PeerUnreachable, QueryLevel
from ..proto.negotiation import build_associate_rq
from ..proto.sop import (
    PROPOSABLE_UNCOMPRESSED,
    VERIFICATION,
)
from ..proto.status import Status, StatusCategory, describe
from ..services.echo import echo as echo_scu
from ..services.find_scu import ROOTS, AnswerError, FindKey, FindReply
from ..services.find_scu import check_level as check_level
from ..services.find_scu import default_keys as default_keys
from ..services.find_scu import find as find_scu
from ..services.find_scu import parse_key as parse_key
from ..services.store_scu import (
    FileOutcome,
    StoreProgress,
    StoreSummary,
    StoreTally,
    plan_associations,
    send_all,
)
from ..storage.files import open_dataset, scan
from . import loop_factory

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger("minipacs")


def explain_abort(message: str, ended: BaseException | None, calling_ae: str) -> str:
    """`message`, plus a hint when the peer aborted before answering anything.

    Some peers (Orthanc among them) accept the association of a calling AE title they do
    not know and abort it on the first request instead of rejecting it (PS3.8 §9.3.4).
    """
    if isinstance(ended, PeerAborted) and ended.early:
        return (f"{message}; the peer may not know our calling AE title {calling_ae!r} "
                "(--aet sets it)")
    return message


def association_lost(where: str, exc: AssociationClosed, calling_ae: str) -> str:
    """'<where>: association lost (<why>)', with the calling-AE hint when it applies."""
    return explain_abort(f"{where}: association lost ({exc})", exc, calling_ae)


def echo(host: str, port: int, *, calling_ae: str, called_ae: str, timeout: float,
         max_pdu: int, tls: ssl.SSLContext | None = None) -> tuple[bool, str]:
    """C-ECHO SCU: (success, one line for the user)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_echo(host, port, calling_ae, called_ae, timeout, max_pdu, tls))


async def _echo(host: str, port: int, calling_ae: str, called_ae: str, timeout: float,
                max_pdu: int, tls: ssl.SSLContext | None = None) -> tuple[bool, str]:
    request = build_associate_rq(calling_ae, called_ae,
                                 [(VERIFICATION, PROPOSABLE_UNCOMPRESSED)],
                                 max_pdu_length=max_pdu)
    where = f"C-ECHO {called_ae}@{host}:{port}"
    started = time.perf_counter()
    try:
        async with association(host, port, request, connect_timeout=timeout,
                               artim_timeout=timeout, tls=tls) as conn:
            async with asyncio.timeout(timeout):
                status = await echo_scu(conn)
            elapsed = (time.perf_counter() - started) * 1000
    except PeerUnreachable as exc:
        return False, str(exc)
    except LookupError as exc:
        return False, f"{where}: {exc}"
    except TimeoutError:
        return False, f"{where}: no response within {timeout:g} s"
    except AssociationClosed as exc:
        return False, association_lost(where, exc, calling_ae)
    if status != Status.SUCCESS:
        return False, f"{where}: {describe(status)}"
    return True, f"{where}: success in {elapsed:.1f} ms"


@dataclass(frozen=True, slots=True)
class FindSummary:
    """How a C-FIND ended: success, the answers received, and one line for the user."""

    ok: bool
    matches: int
    status: int | None  # the final status; None when none arrived
    message: str


def find(host: str, port: int, keys: Sequence[FindKey], *, level: str, root: str,
         calling_ae: str, called_ae: str, timeout: float, max_pdu: int,
         on_answer: Callable[[Dataset], None], tls: ssl.SSLContext | None = None
         ) -> FindSummary:
    """C-FIND SCU: one query, each answer handed to `on_answer` as it arrives."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_find(host, port, keys, QueryLevel(level), root, calling_ae,
                                called_ae, timeout, max_pdu, on_answer, tls))


async def _find(host: str, port: int, keys: Sequence[FindKey], level: QueryLevel, root: str,
                calling_ae: str, called_ae: str, timeout: float, max_pdu: int,
                on_answer: Callable[[Dataset], None],
                tls: ssl.SSLContext | None = None) -> FindSummary:
    sop_class = ROOTS[root]
    request = build_associate_rq(calling_ae, called_ae, [(sop_class, PROPOSABLE_UNCOMPRESSED)],
                                 max_pdu_length=max_pdu)
    where = f"C-FIND {called_ae}@{host}:{port}"
    started = time.perf_counter()
    matches = 0
    final: FindReply | None = None
    try:
        async with association(host, port, request, connect_timeout=timeout,
                               artim_timeout=timeout, tls=tls) as conn:
            replies = find_scu(conn, sop_class, level, keys)
            while True:
                async with asyncio.timeout(timeout):  # each response restarts the wait
                    reply = await anext(replies, None)
                if reply is None:
                    break
                if reply.pending:
                    matches += 1
                    if reply.identifier is not None:
                        on_answer(reply.identifier)
                else:
                    final = reply
    except PeerUnreachable as exc:
        return FindSummary(False, 0, None, str(exc))
    except LookupError as exc:
        return FindSummary(False, 0, None, f"{where}: {exc}")
    except AnswerError as exc:  # e.g. a Deflated answer past its bound: said, not cut short
        conn.abort(str(exc))
        return FindSummary(False, matches, None, f"{where}: {exc}")
    except TimeoutError:
        return FindSummary(False, matches, None, f"{where}: no response within {timeout:g} s")
    except AssociationClosed as exc:
        return FindSummary(False, matches, None, association_lost(where, exc, calling_ae))
    assert final is not None
    elapsed = (time.perf_counter() - started) * 1000
    plural = "match" if matches == 1 else "matches"
    if final.status != Status.SUCCESS:
        comment = f": {final.error_comment}" if final.error_comment else ""
        return FindSummary(False, matches, final.status,
                           f"{where}: {describe(final.status, 'C-FIND')}{comment} "
                           f"({matches} {plural} before)")
    return FindSummary(True, matches, final.status,
                       f"{where}: {matches} {plural} in {elapsed:.1f} ms")


def store(host: str, port: int, paths: Sequence[Path | str], *, calling_ae: str,
          called_ae: str, timeout: float, max_pdu: int,
          progress: Callable[[StoreProgress], None] | None = None,
          tls: ssl.SSLContext | None = None) -> StoreSummary:
    """C-STORE SCU: send every DICOM file under `paths` (rules in services/store_scu.py)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_store(host, port, [Path(p) for p in paths], calling_ae, called_ae,
                                 timeout, max_pdu, progress, tls))


async def _store(host: str, port: int, paths: list[Path], calling_ae: str, called_ae: str,
                 timeout: float, max_pdu: int,
                 progress: Callable[[StoreProgress], None] | None,
                 tls: ssl.SSLContext | None = None) -> StoreSummary:
    started = time.monotonic()
    found = await asyncio.to_thread(scan, paths)
    tally = StoreTally(len(found.files) + len(found.unreadable), len(found.skipped), progress,
                       started=started)
    for problem in found.unreadable:
        tally.record(FileOutcome(str(problem.path), StatusCategory.FAILURE, reason=problem.reason))

    def connect(contexts: Sequence[tuple[str, str]]
                ) -> contextlib.AbstractAsyncContextManager[Channel]:
        request = build_associate_rq(calling_ae, called_ae,
                                     [(sop_class, [ts]) for sop_class, ts in contexts],
                                     max_pdu_length=max_pdu)
        return association(host, port, request, connect_timeout=timeout,
                           artim_timeout=timeout, tls=tls)

    await send_all(plan_associations(found.files), connect, open_dataset, tally,
                   timeout=timeout)
    return tally.summary()
