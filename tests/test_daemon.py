"""app.daemon: what one server is built from, and how it stops."""

from __future__ import annotations

import asyncio
from pathlib import Path

from minipacs.app.daemon import build_services, prepare, shut_down
from minipacs.index import SqlIndex
from minipacs.index.engine import make_engine
from tests.support import LOOPBACK, WAIT, make_config


async def test_move_and_commitment_share_the_per_peer_limit(tmp_path: Path) -> None:
    """C-MOVE sub-operations and commitment reports reach a peer through one set of slots, so
    `retrieve.max_associations_per_peer` bounds both together, not each on its own."""
    config = make_config(tmp_path, peers={"DEST": {"host": LOOPBACK, "port": 104}},
                         retrieve={"max_associations_per_peer": 1})
    storage = await asyncio.to_thread(prepare, config)
    engine = make_engine(config.database.url)
    try:
        services = build_services(config, storage, SqlIndex(engine))
        assert services.retrieve.peers is services.peers
        assert services.commitment.peers is services.peers
        assert services.peers.policy.max_per_peer == 1
    finally:
        engine.dispose()


class _Draining:
    """A server whose associations never finish on their own: only an abort ends them."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.draining = asyncio.Event()

    async def shutdown(self, grace: float) -> None:
        self.calls.append(grace)
        if grace:
            self.draining.set()
            await asyncio.Event().wait()


def _other_tasks() -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


async def test_second_signal_aborts_and_leaves_no_shutdown_task() -> None:
    server, force = _Draining(), asyncio.Event()
    stopping = asyncio.create_task(shut_down(server.shutdown, 30.0, force))
    async with asyncio.timeout(WAIT):
        await server.draining.wait()
        force.set()  # the second SIGTERM
        await stopping
    assert server.calls == [30.0, 0]
    assert _other_tasks() == set()  # the graceful shutdown was cancelled and collected


async def test_graceful_shutdown_ends_without_force() -> None:
    graces: list[float] = []

    async def stop(grace: float) -> None:
        graces.append(grace)

    async with asyncio.timeout(WAIT):
        await shut_down(stop, 5.0, asyncio.Event())
    assert graces == [5.0]
    assert _other_tasks() == set()
