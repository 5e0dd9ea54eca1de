"""The daemon: adapters, services and server wired from the configuration; its lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import __version__
from ..config import Config, ConfigError
from ..index import AttributeReader, SqlIndex
from ..index.engine import make_engine
from ..index.migrate import SchemaTooNew, upgrade
from ..net.peers import NetPeers, PeerAddress
from ..net.server import Server
from ..net.tls import TlsContexts, TlsError
from ..ports import NO_AUDIT, NO_METRICS, AllowAll, Audit, Metrics, Permissions, Storage
from ..proto.dimse import CommandField
from ..proto.negotiation import AcceptorPolicy, default_supported
from ..proto.sop import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    MODALITY_WORKLIST_FIND,
    MPPS,
    MPPS_RETRIEVE,
    QR_FIND_SOP_CLASSES,
    QR_GET_SOP_CLASSES,
    QR_MOVE_SOP_CLASSES,
    STORAGE_COMMITMENT_PUSH,
    STORAGE_SOP_CLASSES,
    VERIFICATION,
)
from ..services.commitment import CommitmentService
from ..services.dispatcher import Dispatcher
from ..services.echo import handle_echo
from ..services.find import EXTENDED_NEGOTIATION as FIND_EXTENDED_NEGOTIATION
from ..services.find import FindService
from ..services.mpps import MppsService
from ..services.retrieve import RetrieveService
from ..services.store import StoreService
from ..services.worklist import WorklistService
from ..storage import FilesystemStorage
from . import loop_factory, memory
from .recovery import recover
from .security import Security, build_security, open_audit
from .tls import build_tls, reload_error
from .web import build_http_server, build_metrics

if TYPE_CHECKING:
    from ..web.server import HttpServer

log = logging.getLogger("minipacs")


def storage_classes(config: Config) -> frozenset[str]:
    """The Storage SOP classes we accept: the curated table plus the configured extras."""
    return frozenset(STORAGE_SOP_CLASSES) | frozenset(config.sop_classes.extra_storage)


def build_policy(config: Config) -> AcceptorPolicy:
    """What we accept, from the configuration (see docs/conformance.md)."""
    return AcceptorPolicy(
        ae_title=config.ae_title,
        check_called_ae=config.security.check_called_ae_title,
        supported=default_supported(config.sop_classes.extra_storage),
        max_pdu_length=config.limits.max_pdu_length,
        async_ops_limit=config.limits.async_ops_window,
        # PS3.7 D.3.3.4: the requestor's SCP role for Storage Commitment (it may receive the
        # N-EVENT-REPORT there) is accepted only when reports go on the same association.
        scu_role_classes=storage_classes(config) | (
            {STORAGE_COMMITMENT_PUSH} if config.commitment.same_association else set()),
        extended=FIND_EXTENDED_NEGOTIATION,  # PS3.4 C.5.1.1 relational, combined date-time
    )


def build_storage(config: Config) -> FilesystemStorage:
    return FilesystemStorage(
        config.storage.root,
        implementation_class_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version_name=IMPLEMENTATION_VERSION_NAME,
        source_ae_title=config.ae_title,
        fsync=config.storage.fsync,
        min_free_bytes=config.storage.min_free_mb << 20,
    )


def build_peers(config: Config, tls: TlsContexts | None = None) -> NetPeers:
    """The configured peers as C-MOVE destinations, with the outbound policy (and the TLS
    client context for the peers marked `tls`)."""
    return NetPeers(
        config.ae_title,
        {title: PeerAddress(peer.host, peer.port, peer.tls)
         for title, peer in config.peers.items()},
        config.retrieve.connect,
        tls,
    )


def build_commitment(config: Config, storage: Storage, index: SqlIndex,
                     peers: NetPeers) -> CommitmentService:
    """The Storage Commitment SCP (PS3.4 Annex J) and its report worker (not started)."""
    return CommitmentService(
        index.commitment, storage, peers,
        ae_title=config.ae_title, storage_classes=storage_classes(config),
        policy=config.commitment)


@dataclass(frozen=True, slots=True)
class Services:
    """What answers DIMSE requests, built once per server from the configuration."""

    peers: NetPeers  # one per server: C-MOVE and commitment reports share its per-peer slots
    store: StoreService  # C-STORE and STOW-RS
    retrieve: RetrieveService
    commitment: CommitmentService
    dispatcher: Dispatcher


def build_services(config: Config, storage: Storage, index: SqlIndex,
                   metrics: Metrics = NO_METRICS, tls: TlsContexts | None = None, *,
                   permissions: Permissions | None = None,
                   audit: Audit = NO_AUDIT) -> Services:
    """The services of one server, on one set of outbound peers (retrieve.connect)."""
    peers = build_peers(config, tls)
    retrieve = RetrieveService(index, storage, peers, ae_title=config.ae_title,
                               patient_issuers=config.retrieve.patient_issuers,
                               timeout=config.retrieve.timeout,
                               strict_hierarchy=config.query.strict_hierarchy,
                               max_inflated=config.limits.max_inflated_mb << 20, audit=audit)
    commitment = build_commitment(config, storage, index, peers)
    store = StoreService(storage, index, AttributeReader(), metrics,
                         max_inflated=config.limits.max_inflated_mb << 20)
    return Services(peers, store, retrieve, commitment,
                    build_dispatcher(config, storage, index, store, retrieve, commitment,
                                     metrics, permissions or AllowAll(), audit))


def build_dispatcher(config: Config, storage: Storage, index: SqlIndex,
                     store: StoreService, retrieve: RetrieveService,
                     commitment: CommitmentService,
                     metrics: Metrics = NO_METRICS, permissions: Permissions | None = None,
                     audit: Audit = NO_AUDIT) -> Dispatcher:
    """Each DIMSE command and SOP class routed to its service, behind the permissions."""
    dispatcher = Dispatcher(metrics, permissions)
    dispatcher.register(CommandField.C_ECHO_RQ, [VERIFICATION], handle_echo)
    dispatcher.register(CommandField.C_STORE_RQ, storage_classes(config),
                        store)
    dispatcher.register(CommandField.C_FIND_RQ, QR_FIND_SOP_CLASSES,
                        FindService(index, ae_title=config.ae_title,
                                    max_results=config.query.max_results,
                                    strict_hierarchy=config.query.strict_hierarchy,
                                    audit=audit))
    dispatcher.register(CommandField.C_GET_RQ, QR_GET_SOP_CLASSES, retrieve.get)
    dispatcher.register(CommandField.C_MOVE_RQ, QR_MOVE_SOP_CLASSES, retrieve.move)
    dispatcher.register(CommandField.N_ACTION_RQ, [STORAGE_COMMITMENT_PUSH], commitment.handle)
    dispatcher.register(CommandField.C_FIND_RQ, [MODALITY_WORKLIST_FIND],
                        WorklistService(index.worklist))
    # PS3.4 F.7.2.2: an MPPS that ends marks its scheduled steps in the worklist.
    mpps = MppsService(index.mpps, on_step_ended=index.worklist.mark_steps)
    dispatcher.register(CommandField.N_CREATE_RQ, [MPPS], mpps.create)
    dispatcher.register(CommandField.N_SET_RQ, [MPPS], mpps.set)
    dispatcher.register(CommandField.N_GET_RQ, [MPPS_RETRIEVE], mpps.get)
    return dispatcher


def prepare(config: Config) -> FilesystemStorage:
    """Before the event loop: migrate the index, open the store, settle what a crash left."""
    upgrade(config.database.url)
    storage = build_storage(config)
    engine = make_engine(config.database.url)
    try:  # DESIGN principle 10: no file without a row, no row without a file, after a crash
        recover(engine, storage)
    finally:
        engine.dispose()
    return storage


def serve(config: Config) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; returns the exit code."""
    memory.limit_arenas()  # before any worker thread exists (app/memory.py says why)
    try:
        storage = prepare(config)
    except SchemaTooNew as exc:  # a configuration problem: not worth restarting (exit 2)
        log.error("cannot start: %s", exc)
        return 2
    except Exception as exc:  # a database or folder we cannot use: one line, exit 1
        log.error("cannot start: %s", exc)
        return 1
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_serve(config, storage))


class DaemonServer(Server):
    """The DIMSE listeners, and the HTTP listener that starts and stops with them (or None);
    `tls` the TLS contexts they and the outbound associations use (SIGHUP reloads them)."""

    http: HttpServer | None = None
    security: Security | None = None
    tls: TlsContexts | None = None


@contextlib.asynccontextmanager
async def open_server(config: Config, storage: FilesystemStorage | None = None
                      ) -> AsyncIterator[DaemonServer]:
    """The whole server, listening, in the running loop (the daemon, tests, embedding)."""
    tls = build_tls(config)  # before anything is opened: its files may be unusable
    if storage is None:
        storage = await asyncio.to_thread(prepare, config)
    audit = open_audit(config)
    try:
        security = build_security(config, audit)  # a bad key or hash fails before anything
    except BaseException:
        audit.close()
        raise
    engine = make_engine(config.database.url)
    index = SqlIndex(engine, duplicate_policy=config.storage.duplicates,
                     patient_conflict=config.storage.patient_conflict,
                     process_lease=config.database.process_lease)
    await index.start()
    metrics = build_metrics(config)
    services = build_services(config, storage, index, metrics, tls,
                              permissions=security.policy, audit=audit)
    server = DaemonServer(build_policy(config), services.dispatcher, config.limits, metrics,
                          gate=security.gate, audit=audit)
    server.security = security
    server.tls = tls
    http = server.http = build_http_server(
        config, storage, index, ingest=services.store, storage_classes=storage_classes(config),
        metrics=metrics, security=security, tls=tls)
    registered = False
    try:
        for listen, secure in ((config.listen, False), (config.listen_tls, True)):
            if listen is not None:
                try:
                    await server.start(listen.host, listen.port, tls=tls if secure else None,
                                       reuse_port=listen.reuse_port)
                except OSError as exc:
                    raise ListenError(f"{listen.host}:{listen.port}", exc) from None
        # Among the processes sharing the index (index/processes.py), then the reports
        # still owed are taken up (PS3.4 J.3.3).
        first = config.listen or config.listen_tls
        assert first is not None  # the configuration has at least one DICOM listener
        await index.processes.start(config.ae_title, f"{first.host}:{server.port}")
        registered = True
        await services.commitment.start()
        if http is not None:
            await http.start()
        yield server
    finally:
        if http is not None:
            await http.shutdown(0)
        await server.shutdown(0)
        await services.commitment.aclose()
        if registered:  # its claims are released with it
            await index.processes.aclose()
        await index.aclose()
        engine.dispose()
        await asyncio.to_thread(storage.reap)  # released spool entries still standing
        await asyncio.to_thread(audit.close)  # last: every event of the shutdown written


class ListenError(OSError):
    """A listener could not bind its address; str() says which and why."""

    def __init__(self, address: str, exc: OSError) -> None:
        super().__init__(exc.errno, f"cannot listen on {address}: {exc.strerror or exc}")


async def _serve(config: Config, storage: FilesystemStorage) -> int:
    try:
        async with open_server(config, storage) as server, memory.trimming():
            return await _run_until_signal(config, server)
    except ListenError as exc:
        log.error("%s", exc.strerror)
        return 1
    except OSError as exc:
        http = config.http
        where = f"{http.host}:{http.port}" if http is not None else "?"
        log.error("cannot listen on %s: %s", where, exc.strerror or exc)
        return 1
    except ConfigError as exc:  # e.g. a certificate file replaced since the preflight
        log.error("cannot start: %s", exc)
        return 2


async def shut_down(stop: Callable[[float], Awaitable[None]], grace: float,
                    force: asyncio.Event) -> None:
    """`stop(grace)`: drain for `grace` seconds; when `force` is set meanwhile, `stop(0)`
    aborts everything at once.

    Returns only when no shutdown task is left: a forced stop cancels the graceful one.
    """
    graceful = asyncio.create_task(stop(grace))
    forced = asyncio.create_task(force.wait())
    try:
        done, _ = await asyncio.wait({graceful, forced}, return_when=asyncio.FIRST_COMPLETED)
        if graceful in done:
            await graceful  # its exception, if any, is ours
        else:
            graceful.cancel()
            await stop(0)
    finally:
        for task in (graceful, forced):
            task.cancel()
        # Each has ended or been cancelled: collect them, so none outlives the shutdown.
        await asyncio.gather(graceful, forced, return_exceptions=True)


async def _shutdown_both(server: DaemonServer, grace: float) -> None:
    """The DIMSE and HTTP listeners stop together, each within `grace` seconds."""
    if server.http is None:
        await server.shutdown(grace)
    else:
        await asyncio.gather(server.shutdown(grace), server.http.shutdown(grace))


async def _run_until_signal(config: Config, server: DaemonServer) -> int:
    stop = asyncio.Event()
    force = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: aborting open associations now",
                        signal.Signals(signum).name)
            force.set()
        else:
            log.info("%s received: shutting down", signal.Signals(signum).name)
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, reload_tls, server)
    # Logged only once the handlers are in place: whoever waits for this line may signal us.
    log.info("minipacs %s listening on %s as AE %s (loop: %s)", __version__,
             " and ".join(_addresses(config, server)), config.ae_title,
             type(asyncio.get_running_loop()).__module__.split(".")[0])
    http = server.http
    if http is not None and config.http is not None:
        scheme = "https" if config.http.tls else "http"
        log.info("DICOMweb at %s://%s:%d/dicom-web", scheme, config.http.host, http.port)
    if server.tls is not None:
        policy = server.tls.policy
        log.info("TLS certificate %s, peer certificates %s (CA %s); SIGHUP reloads them",
                 policy.certificate, policy.peer_certificate, policy.ca_certificates)
    log.info("store %s (fsync %s), index %s", config.storage.root,
             "on" if config.storage.fsync else "off", config.database.url)
    if not config.security.check_called_ae_title:
        log.warning("security.check_called_ae_title is off: any called AE title is accepted")
    if server.security is not None:
        for line in server.security.describe(config):
            log.info("security: %s", line)
    try:
        await stop.wait()
        await shut_down(functools.partial(_shutdown_both, server),
                         config.limits.shutdown_grace, force)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    log.info("stopped")
    return 0


def _addresses(config: Config, server: DaemonServer) -> list[str]:
    """The DICOM listeners' addresses for the start line, the plain one first."""
    addresses = []
    if config.listen is not None:
        addresses.append(f"{config.listen.host}:{server.port}")
    if config.listen_tls is not None:
        addresses.append(f"{config.listen_tls.host}:{server.tls_port} (TLS)")
    return addresses


def reload_tls(server: DaemonServer) -> None:
    """SIGHUP: load the certificate, key and CA files again for new associations (running
    ones keep theirs); a failed load keeps the previous contexts and says why in one line."""
    tls = server.tls
    if tls is None:
        log.info("SIGHUP received: no TLS configured, nothing to reload")
        return
    try:
        tls.reload()
    except TlsError as exc:
        log.error("SIGHUP: TLS reload failed, the previous certificates stay in use: %s",
                  reload_error(exc))
        return
    log.info("SIGHUP: TLS certificates reloaded from %s; new associations use them",
             tls.policy.certificate)
