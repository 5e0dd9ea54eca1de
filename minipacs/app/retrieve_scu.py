"""SCU commands of retrieval: C-MOVE, C-GET, and `peers check` (C-ECHO to configured peers).

Ctrl-C during a C-MOVE/C-GET sends one C-CANCEL and waits for the final response; a second
Ctrl-C aborts the association (PS3.7 §9.3.3.3, §9.3.4.3; PS3.8 §7.3 A-ABORT).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, PeerConfig
from ..net.client import association
from ..net.router import Router
from ..ports import AssociationClosed, PeerUnreachable, QueryLevel, StorageError
from ..proto.negotiation import build_associate_rq
from ..proto.pdu import AAssociateRQ
from ..proto.sop import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    PROPOSABLE_UNCOMPRESSED,
    VERIFICATION,
)
from ..proto.status import Status, describe
from ..proto.uid import is_valid_uid
from ..services.echo import echo as echo_scu
from ..services.find_scu import FindKey
from ..services.retrieve_scu import (
    GET_ROOTS,
    MOVE_ROOTS,
    RetrieveOutcome,
    RetrieveProgress,
    get_contexts,
)
from ..services.retrieve_scu import check_keys as _check_keys
from ..services.retrieve_scu import get as get_scu
from ..services.retrieve_scu import move as move_scu
from ..storage.folder import FolderWriter
from . import loop_factory
from .scu import explain_abort
from .tls import build_tls

__all__ = ["PeerCheck", "RetrieveOutcome", "RetrieveProgress", "RetrieveUsageError",
           "check_keys", "describe_status", "get", "move", "peers_check"]

Notify = Callable[[str], None]
Progress = Callable[[RetrieveProgress], None]


class RetrieveUsageError(Exception):
    """The command cannot run as asked (bad --out folder, too many --sop-class)."""


# --- peers check ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerCheck:
    """One configured peer, C-ECHOed: reachable or why not, in words."""

    ae_title: str
    host: str
    port: int
    ok: bool
    associate_ms: float | None = None  # TCP connect + A-ASSOCIATE-RQ/AC
    echo_ms: float | None = None  # C-ECHO-RQ/RSP
    problem: str | None = None
    tls: bool = False  # reached over DICOM TLS (peers.<AE>.tls)


def peers_check(config: Config, only: str | None = None) -> list[PeerCheck]:
    """C-ECHO each configured peer (or `only`) concurrently, once each (no retries); over
    TLS to the peers marked `tls`. ConfigError when the TLS files cannot be used."""
    peers = dict(config.peers)
    if only is not None:
        peer = config.peer(only)
        if peer is None:
            raise RetrieveUsageError(f"{only!r} is not a configured peer "
                                     f"(configured: {', '.join(peers) or 'none'})")
        peers = {only.strip(" "): peer}
    contexts = build_tls(config, server=False) if any(p.tls for p in peers.values()) else None
    tls = contexts.client if contexts is not None else None
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_check_all(config, peers, tls))


async def _check_all(config: Config, peers: dict[str, PeerConfig],
                     tls: ssl.SSLContext | None) -> list[PeerCheck]:
    return list(await asyncio.gather(*(_check(config, title, peer,
                                              tls if peer.tls else None)
                                       for title, peer in peers.items())))


async def _check(config: Config, title: str, peer: PeerConfig,
                 tls: ssl.SSLContext | None) -> PeerCheck:
    """Open an association as C-MOVE would (our AE title, the connect timeout) and C-ECHO."""
    limit = config.limits.artim_timeout
    request = build_associate_rq(config.ae_title, title, [(VERIFICATION, PROPOSABLE_UNCOMPRESSED)],
                                 max_pdu_length=config.limits.max_pdu_length)
    failed = functools.partial(PeerCheck, title, peer.host, peer.port, False, tls=peer.tls)
    started = time.perf_counter()
    associated: float | None = None
    try:
        async with association(peer.host, peer.port, request,
                               connect_timeout=config.retrieve.connect.connect_timeout,
                               artim_timeout=limit, tls=tls) as conn:
            associated = time.perf_counter()
            async with asyncio.timeout(limit):
                status = await echo_scu(conn)
            echo_ms = (time.perf_counter() - associated) * 1000
    except PeerUnreachable as exc:
        return failed(problem=str(exc))
    except (LookupError, TimeoutError, AssociationClosed) as exc:
        assert associated is not None
        assoc_ms = (associated - started) * 1000
        if isinstance(exc, TimeoutError):
            return failed(assoc_ms, problem=f"no C-ECHO response within {limit:g} s")
        if isinstance(exc, AssociationClosed):
            return failed(assoc_ms, problem=explain_abort(f"association aborted ({exc})", exc,
                                                          config.ae_title))
        return failed(assoc_ms, problem=str(exc))
    assoc_ms = (associated - started) * 1000
    if status != Status.SUCCESS:
        return failed(assoc_ms, echo_ms, problem=f"C-ECHO answered {describe(status, 'C-ECHO')}")
    return PeerCheck(title, peer.host, peer.port, True, assoc_ms, echo_ms, tls=peer.tls)


# --- C-MOVE and C-GET -------------------------------------------------------------------------


def check_keys(level: str, keys: Sequence[FindKey]) -> None:
    """ValueError unless every key has a value and the level's unique key is given."""
    _check_keys(QueryLevel(level), keys)


def move(host: str, port: int, keys: Sequence[FindKey], *, level: str, root: str,
         destination: str, calling_ae: str, called_ae: str, timeout: float, max_pdu: int,
         progress: Progress | None = None, notify: Notify | None = None,
         tls: ssl.SSLContext | None = None) -> RetrieveOutcome:
    """C-MOVE SCU: ask host:port to send the selected instances to `destination`."""
    sop_class = MOVE_ROOTS[root]
    request = build_associate_rq(calling_ae, called_ae, [(sop_class, PROPOSABLE_UNCOMPRESSED)],
                                 max_pdu_length=max_pdu)

    def operation(conn: Router, cancel: asyncio.Event) -> Awaitable[RetrieveOutcome]:
        return move_scu(conn, sop_class, QueryLevel(level), keys, destination, cancel=cancel,
                        timeout=timeout, progress=progress)

    return _run_retrieve("C-MOVE", host, port, request, operation, timeout, notify, tls)


def get(host: str, port: int, keys: Sequence[FindKey], out: Path, *, level: str, root: str,
        extra_classes: Sequence[str] = (), calling_ae: str, called_ae: str, timeout: float,
        max_pdu: int, progress: Progress | None = None,
        notify: Notify | None = None, tls: ssl.SSLContext | None = None) -> RetrieveOutcome:
    """C-GET SCU: receive the selected instances as Part 10 files in `out`.

    Raises RetrieveUsageError when `out` cannot be created or the classes do not fit.
    """
    for uid in extra_classes:
        if not is_valid_uid(uid):
            raise RetrieveUsageError(f"--sop-class {uid!r} is not a UID")
    try:
        storage, roles = get_contexts(extra_classes)
    except ValueError as exc:
        raise RetrieveUsageError(str(exc)) from None
    files = FolderWriter(out, implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                         implementation_version_name=IMPLEMENTATION_VERSION_NAME)
    try:
        files.prepare()
    except StorageError as exc:
        raise RetrieveUsageError(f"--out: {exc}") from None
    sop_class = GET_ROOTS[root]
    request = build_associate_rq(calling_ae, called_ae,
                                 [(sop_class, PROPOSABLE_UNCOMPRESSED), *storage],
                                 max_pdu_length=max_pdu, roles=roles)

    def operation(conn: Router, cancel: asyncio.Event) -> Awaitable[RetrieveOutcome]:
        return get_scu(conn, sop_class, QueryLevel(level), keys, files, cancel=cancel,
                       timeout=timeout, progress=progress)

    return _run_retrieve("C-GET", host, port, request, operation, timeout, notify, tls)


def _run_retrieve(service: str, host: str, port: int, request: AAssociateRQ,
                  operation: Callable[[Router, asyncio.Event], Awaitable[RetrieveOutcome]],
                  timeout: float, notify: Notify | None,
                  tls: ssl.SSLContext | None) -> RetrieveOutcome:
    """Run `_retrieve` on a loop of its own (the command line's synchronous entry)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_retrieve(service, host, port, request, operation, timeout,
                                    notify or (lambda _: None), tls))


def _failed(service: str, error: str, *, interrupted: bool = False) -> RetrieveOutcome:
    return RetrieveOutcome(service, None, None, None, None, None, None, (), 0.0, False,
                           error=error, interrupted=interrupted)


async def _retrieve(service: str, host: str, port: int, request: AAssociateRQ,
                    operation: Callable[[Router, asyncio.Event], Awaitable[RetrieveOutcome]],
                    timeout: float, notify: Notify,
                    tls: ssl.SSLContext | None = None) -> RetrieveOutcome:
    """Associate, run `operation`, release (or abort after an error); Ctrl-C as documented."""
    loop = asyncio.get_running_loop()
    cancel = asyncio.Event()
    conn: Router | None = None
    presses = 0

    async def body() -> RetrieveOutcome:
        nonlocal conn
        try:
            async with association(host, port, request, connect_timeout=timeout,
                                   artim_timeout=timeout, tls=tls) as conn:
                outcome = await operation(conn, cancel)
                if outcome.error is not None:  # the association is unusable
                    conn.abort(outcome.error)
                    error = explain_abort(outcome.error, conn.ended, request.calling_ae_title)
                    outcome = dataclasses.replace(outcome, error=error)
        except PeerUnreachable as exc:
            return _failed(service, str(exc))
        except LookupError as exc:
            return _failed(service, str(exc))
        return dataclasses.replace(outcome, interrupted=presses > 1)

    work = asyncio.create_task(body(), name=service)

    def on_interrupt() -> None:
        nonlocal presses
        presses += 1
        if conn is None:  # still connecting: nothing to cancel yet
            work.cancel()
        elif presses == 1:
            cancel.set()
            notify(f"interrupted: C-CANCEL sent, waiting for the final {service} response "
                   "(Ctrl-C again aborts)")
        else:
            notify("interrupted again: aborting the association")
            conn.abort("interrupted by the user")

    installed = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, on_interrupt)  # main thread only
        installed = True
    try:
        return await work
    except asyncio.CancelledError:
        if work.cancelled() and presses:
            return _failed(service, "interrupted while connecting", interrupted=True)
        raise
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)


def describe_status(outcome: RetrieveOutcome) -> str:
    """'0xB000 Sub-operations complete with failures' for the outcome's final status."""
    return "" if outcome.status is None else describe(outcome.status, outcome.service)
