"""The daemon: adapters, services and server wired from the configuration; its lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .. import __version__
from ..config import Config
from ..index import AttributeReader, SqlIndex
from ..index.engine import make_engine
from ..index.migrate import upgrade
from ..net.peers import ConnectPolicy, NetPeers, PeerAddress
from ..net.server import Server, ServerLimits
from ..ports import (
    DuplicatePolicy,
    PatientConflictPolicy,
    Storage,
)
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
from ..services.commitment import CommitmentPolicy, CommitmentService
from ..services.dispatcher import Dispatcher
from ..services.echo import handle_echo
from ..services.find import EXTENDED_NEGOTIATION as FIND_EXTENDED_NEGOTIATION
from ..services.find import FindService
from ..services.mpps import MppsService
from ..services.retrieve import RetrieveService
from ..services.store import StoreService
from ..services.worklist import WorklistService
from ..storage import FilesystemStorage
from . import loop_factory
from .recovery import recover

if TYPE_CHECKING:
    pass

log = logging.getLogger("minipacs")


def storage_classes(config: Config) -> frozenset[str]:
    """The Storage SOP classes we accept: the curated table plus the configured extras."""
    return frozenset(STORAGE_SOP_CLASSES) | frozenset(config.sop_classes.extra_storage)


def build_policy(config: Config) -> AcceptorPolicy:
    """What we accept, from the configuration (see docs/conformance.md)."""
    return AcceptorPolicy(
        ae_title=config.ae_title,
        check_called_ae=config.security.check_called_ae_title,
        known_calling_aes=(frozenset(config.peers) if config.security.known_calling_aes_only
                           else None),
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


def build_peers(config: Config) -> NetPeers:
    """The configured peers as C-MOVE destinations, with the outbound policy."""
    retrieve = config.retrieve
    return NetPeers(
        config.ae_title,
        {title: PeerAddress(peer.host, peer.port) for title, peer in config.peers.items()},
        ConnectPolicy(max_per_peer=retrieve.max_associations_per_peer,
                      connect_timeout=retrieve.connect_timeout,
                      artim_timeout=config.limits.artim_timeout,
                      max_pdu_length=config.limits.max_pdu_length),
    )


def build_commitment(config: Config, storage: Storage, index: SqlIndex) -> CommitmentService:
    """The Storage Commitment SCP (PS3.4 Annex J) and its report worker (not started)."""
    settings = config.commitment
    return CommitmentService(
        index.commitment, storage, build_peers(config),
        ae_title=config.ae_title, storage_classes=storage_classes(config),
        policy=CommitmentPolicy(
            same_association=settings.same_association, retry_delay=settings.retry_delay,
            max_retry_delay=settings.max_retry_delay, max_attempts=settings.max_attempts,
            give_up_after=settings.give_up_after, timeout=settings.timeout))


def build_dispatcher(config: Config, storage: Storage, index: SqlIndex,
                     commitment: CommitmentService | None = None) -> Dispatcher:
    dispatcher = Dispatcher()
    dispatcher.register(CommandField.C_ECHO_RQ, [VERIFICATION], handle_echo)
    dispatcher.register(CommandField.C_STORE_RQ, storage_classes(config),
                        StoreService(storage, index, AttributeReader()))
    dispatcher.register(CommandField.C_FIND_RQ, QR_FIND_SOP_CLASSES,
                        FindService(index, ae_title=config.ae_title,
                                    max_results=config.query.max_results))
    retrieve = RetrieveService(index, storage, build_peers(config), ae_title=config.ae_title,
                               patient_issuers=config.retrieve.patient_issuers,
                               timeout=config.retrieve.timeout)
    dispatcher.register(CommandField.C_GET_RQ, QR_GET_SOP_CLASSES, retrieve.get)
    dispatcher.register(CommandField.C_MOVE_RQ, QR_MOVE_SOP_CLASSES, retrieve.move)
    if commitment is not None:
        dispatcher.register(CommandField.N_ACTION_RQ, [STORAGE_COMMITMENT_PUSH],
                            commitment.handle)
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
    try:
        storage = prepare(config)
    except Exception as exc:  # a database or folder we cannot use: one line, exit 1
        log.error("cannot start: %s", exc)
        return 1
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_serve(config, storage))


@contextlib.asynccontextmanager
async def open_server(config: Config, storage: FilesystemStorage | None = None
                      ) -> AsyncIterator[Server]:
    """The whole server, listening, in the running loop (the daemon, tests, embedding)."""
    if storage is None:
        storage = await asyncio.to_thread(prepare, config)
    engine = make_engine(config.database.url)
    index = SqlIndex(engine, duplicate_policy=DuplicatePolicy(config.storage.duplicates),
                     patient_conflict=PatientConflictPolicy(config.storage.patient_conflict))
    await index.start()
    commitment = build_commitment(config, storage, index)
    limits = config.limits
    server = Server(
        build_policy(config),
        build_dispatcher(config, storage, index, commitment),
        ServerLimits(max_associations=limits.max_associations,
                     artim_timeout=limits.artim_timeout, idle_timeout=limits.idle_timeout,
                     association_timeout=limits.association_timeout),
    )
    await commitment.start()  # reloads the reports still owed (PS3.4 J.3.3)
    try:
        await server.start(config.listen.host, config.listen.port)
        yield server
    finally:
        await server.shutdown(0)
        await commitment.aclose()
        await index.aclose()
        engine.dispose()
        await asyncio.to_thread(storage.reap)  # released spool entries still standing


async def _serve(config: Config, storage: FilesystemStorage) -> int:
    try:
        async with open_server(config, storage) as server:
            return await _run_until_signal(config, server)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.listen.host, config.listen.port,
                  exc.strerror or exc)
        return 1


async def _run_until_signal(config: Config, server: Server) -> int:
    limits = config.limits
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
    # Logged only once the handlers are in place: whoever waits for this line may signal us.
    log.info("minipacs %s listening on %s:%d as AE %s (loop: %s)", __version__,
             config.listen.host, server.port, config.ae_title,
             type(asyncio.get_running_loop()).__module__.split(".")[0])
    log.info("store %s (fsync %s), index %s", config.storage.root,
             "on" if config.storage.fsync else "off", config.database.url)
    if not config.security.check_called_ae_title:
        log.warning("security.check_called_ae_title is off: any called AE title is accepted")
    if not config.security.known_calling_aes_only:
        log.warning("security.known_calling_aes_only is off: any calling AE may associate")
    try:
        await stop.wait()
        shutdown = asyncio.create_task(server.shutdown(limits.shutdown_grace))
        forced = asyncio.create_task(force.wait())
        await asyncio.wait({shutdown, forced}, return_when=asyncio.FIRST_COMPLETED)
        if not shutdown.done():
            await server.shutdown(0)
        forced.cancel()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped")
    return 0
