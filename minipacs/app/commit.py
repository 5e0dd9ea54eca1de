"""`minipacs commit`: Storage Commitment SCU composed from files, our requestor and listener."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import generate_uid

from ..net.client import association
from ..net.server import Server, ServerLimits
from ..net.tls import TlsContexts
from ..ports import AssociationClosed, Channel, PeerUnreachable
from ..proto.negotiation import AcceptorPolicy, build_associate_rq
from ..proto.pdu import RoleSelection
from ..proto.sop import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    STORAGE_COMMITMENT_PUSH,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
)
from ..proto.status import Status, describe
from ..services.commitment import describe_reason
from ..services.commitment_scu import CommitReport, ReportWaiter, request_commitment
from ..storage.files import scan
from . import loop_factory
from .scu import association_lost

__all__ = ["CommitOutcome", "InstanceLine", "commit"]

# Our side of both associations: the native syntaxes, Explicit VR first (PS3.5 §10).
_SYNTAXES = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)


@dataclass(frozen=True, slots=True)
class InstanceLine:
    """One instance asked about: where it came from and what the SCP said."""

    source: str
    sop_instance_uid: str
    committed: bool
    reason: str  # in words


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """How `minipacs commit` ended: exit code, per-instance lines, one closing line."""

    code: int  # 0 all committed, 1 otherwise, 2 misuse
    lines: tuple[InstanceLine, ...]
    message: str


def commit(host: str, port: int, paths: Sequence[Path], *, calling_ae: str, called_ae: str,
           timeout: float, max_pdu: int, listen_port: int | None,
           listen_host: str, tls: ssl.SSLContext | None = None,
           listen_tls: TlsContexts | None = None) -> CommitOutcome:
    """Ask host:port to commit the instances in `paths`; wait for the report (PS3.4 J.3).

    `tls` makes our association a TLS one, `listen_tls` the listener for the report.
    """
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_commit(host, port, list(paths), calling_ae, called_ae, timeout,
                                  max_pdu, listen_port, listen_host, tls, listen_tls))


async def _commit(host: str, port: int, paths: list[Path], calling_ae: str, called_ae: str,
                  timeout: float, max_pdu: int, listen_port: int | None,
                  listen_host: str, tls: ssl.SSLContext | None = None,
                  listen_tls: TlsContexts | None = None) -> CommitOutcome:
    found = await asyncio.to_thread(scan, paths)
    if not found.files:
        problems = "; ".join(f"{p.path}: {p.reason}" for p in found.unreadable[:3])
        return CommitOutcome(2, (), "no DICOM instance found in the given paths"
                             + (f" ({problems})" if problems else ""))
    sources = {f.sop_instance_uid: f.source for f in found.files}
    items = list(dict.fromkeys((f.sop_class_uid, f.sop_instance_uid) for f in found.files))
    waiter = ReportWaiter(generate_uid())
    listener: Server | None = None
    if listen_port is not None:
        listener = _listener(calling_ae, max_pdu, timeout, waiter)
        try:
            await listener.start(listen_host, listen_port, tls=listen_tls)
        except OSError as exc:
            return CommitOutcome(2, (), f"cannot listen on {listen_host}:{listen_port}: "
                                        f"{exc.strerror or exc}")
    try:
        return await _run(host, port, calling_ae, called_ae, timeout, max_pdu, items, sources,
                          waiter, same_association=listener is None, tls=tls)
    finally:
        if listener is not None:
            await listener.shutdown(timeout)


def _listener(ae_title: str, max_pdu: int, timeout: float, waiter: ReportWaiter) -> Server:
    policy = AcceptorPolicy(
        ae_title=ae_title,
        supported={STORAGE_COMMITMENT_PUSH: frozenset(UNCOMPRESSED_TRANSFER_SYNTAXES)},
        max_pdu_length=max_pdu,
        # PS3.4 J.3.3.1.3: the SCP opening the association proposes its SCP role.
        scu_role_classes=frozenset({STORAGE_COMMITMENT_PUSH}),
    )
    return Server(policy, waiter.serve, ServerLimits(max_associations=4, artim_timeout=timeout,
                                                     idle_timeout=timeout))


async def _run(host: str, port: int, calling_ae: str, called_ae: str, timeout: float,
               max_pdu: int, items: list[tuple[str, str]], sources: dict[str, str],
               waiter: ReportWaiter, *, same_association: bool,
               tls: ssl.SSLContext | None = None) -> CommitOutcome:
    where = f"{called_ae}@{host}:{port}"
    # Proposing our SCP role lets the SCP report on this association (PS3.7 D.3.3.4).
    roles = ([RoleSelection(STORAGE_COMMITMENT_PUSH, scu_role=True, scp_role=True)]
             if same_association else [])
    request = build_associate_rq(calling_ae, called_ae,
                                 [(STORAGE_COMMITMENT_PUSH, [ts]) for ts in _SYNTAXES],
                                 max_pdu_length=max_pdu, roles=roles)
    started = time.perf_counter()
    try:
        async with association(host, port, request, connect_timeout=timeout,
                               artim_timeout=timeout, tls=tls) as conn:
            contexts = sorted(conn.info.negotiated.contexts)
            if not contexts:
                return CommitOutcome(1, (), f"{where}: Storage Commitment Push Model not "
                                            "accepted")
            report = await _exchange(conn, contexts[0], items, waiter, timeout, where,
                                     same_association=same_association)
        if isinstance(report, CommitOutcome):  # refused: released all the same
            return report
        if not same_association:  # the SCP reports on an association of its own
            async with asyncio.timeout(timeout):
                report = await asyncio.shield(waiter.report)
    except PeerUnreachable as exc:
        return CommitOutcome(1, (), str(exc))
    except TimeoutError:
        return CommitOutcome(1, (), f"{where}: no storage commitment report within "
                                    f"{timeout:g} s (transaction {waiter.transaction_uid})")
    except AssociationClosed as exc:
        return CommitOutcome(1, (), association_lost(where, exc, calling_ae))
    assert report is not None
    return _outcome(report, items, sources, time.perf_counter() - started)


async def _exchange(conn: Channel, context_id: int, items: list[tuple[str, str]],
                    waiter: ReportWaiter, timeout: float, where: str, *,
                    same_association: bool) -> CommitReport | CommitOutcome | None:
    """The N-ACTION, then the report when it comes on this association (else None).

    A CommitOutcome when the N-ACTION is refused.
    """
    serving = asyncio.create_task(waiter.serve(conn)) if same_association else None
    try:
        async with asyncio.timeout(timeout):
            status, comment = await request_commitment(conn, context_id,
                                                       waiter.transaction_uid, items)
        if status != Status.SUCCESS:
            text = f": {comment}" if comment else ""
            return CommitOutcome(1, (), f"N-ACTION {where}: {describe(status)}{text}")
        if serving is None:
            return None
        async with asyncio.timeout(timeout):
            return await asyncio.shield(waiter.report)
    finally:
        if serving is not None:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving


def _outcome(report: CommitReport, items: list[tuple[str, str]], sources: dict[str, str],
             elapsed: float) -> CommitOutcome:
    results = {r.sop_instance_uid: r for r in report.results}
    lines: list[InstanceLine] = []
    for _sop_class, uid in items:
        result = results.get(uid)
        if result is None:
            lines.append(InstanceLine(sources[uid], uid, False, "missing from the report"))
        else:
            lines.append(InstanceLine(sources[uid], uid, result.failure_reason == 0,
                                      describe_reason(result.failure_reason)))
    committed = sum(line.committed for line in lines)
    ok = committed == len(lines)
    return CommitOutcome(0 if ok else 1, tuple(lines),
                         f"{committed} of {len(lines)} instance(s) committed "
                         f"(event type {report.event_type_id}, transaction "
                         f"{report.transaction_uid}, {elapsed * 1000:.0f} ms)")
