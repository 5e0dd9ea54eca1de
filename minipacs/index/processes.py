"""The serving processes that share one index: registration, heartbeat, who is alive.

Several `minipacs serve` processes may share an index and a store (issue 15). What they
must agree on lives in the index (DESIGN "Growing the house"): each process registers a row
(`ServerProcess`) at start, renews it every third of its lease and deletes it when it stops;
a row not renewed for a lease belongs to a dead process. Storage Commitment deliveries it
had claimed are then taken over (index/commitment.py), and maintenance that must not run
beside a server (`db rebuild`, `db copy`) asks `live_processes` first. Every time is the
database's clock (`engine.database_now`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Engine, Select, delete, insert, select, update
from sqlalchemy.engine import Connection

from .engine import DEFAULT_RETRY, RetryPolicy, database_now, write_transaction
from .models_commitment import CommitmentTransaction
from .models_processes import ServerProcess

__all__ = ["ProcessInfo", "ProcessRegistry", "live_processes", "live_tokens", "process_token"]

log = logging.getLogger("minipacs.index")

_PROCESS: Final = ServerProcess.__table__
_TXN: Final = CommitmentTransaction.__table__
# Rows of processes dead for this many leases are deleted by the others' heartbeats.
FORGET_AFTER_LEASES: Final = 100
# The heartbeat renews the row this many times per lease: two renewals may fail in a row.
BEATS_PER_LEASE: Final = 3


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A registered serving process (`ServerProcess`)."""

    token: str
    host: str
    pid: int
    ae_title: str
    address: str
    started_at: datetime
    heartbeat_at: datetime

    def __str__(self) -> str:
        return f"{self.ae_title} at {self.address} (host {self.host}, pid {self.pid})"


def process_token() -> str:
    """A name for this process, unique across hosts and restarts (at most 64 characters)."""
    return f"{platform.node()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def live_tokens(now: datetime, lease: float) -> Select[Any]:
    """The tokens of the processes whose row was renewed within `lease` seconds of `now`."""
    return select(_PROCESS.c.token).where(
        _PROCESS.c.heartbeat_at >= now - timedelta(seconds=lease))


def live_processes(engine: Engine, lease: float) -> list[ProcessInfo]:
    """The processes alive by the database's clock (a renewal within `lease` seconds)."""
    with engine.connect() as conn, conn.begin():
        now = database_now(conn)
        rows = conn.execute(select(_PROCESS).where(
            _PROCESS.c.token.in_(live_tokens(now, lease))).order_by(_PROCESS.c.started_at))
        return [ProcessInfo(**row._mapping) for row in rows]


class ProcessRegistry:
    """This process's row in the registry, renewed by a task while it serves."""

    def __init__(self, engine: Engine, *, lease: float, retry: RetryPolicy = DEFAULT_RETRY,
                 token: str | None = None) -> None:
        self._engine = engine
        self._retry = retry
        self.lease = lease
        self.token = token or process_token()
        self._ae_title = ""
        self._address = ""
        self._task: asyncio.Task[None] | None = None

    # --- blocking ---------------------------------------------------------------------------

    def register(self, ae_title: str, address: str) -> None:
        """Insert (or replace) this process's row, renewed now."""
        self._ae_title, self._address = ae_title, address[:300]
        write_transaction(self._engine, self._insert, retry=self._retry,
                          what="process registration")

    def _insert(self, conn: Connection) -> None:
        now = database_now(conn)
        conn.execute(delete(_PROCESS).where(_PROCESS.c.token == self.token))
        conn.execute(insert(_PROCESS).values(
            token=self.token, host=platform.node()[:255], pid=os.getpid(),
            ae_title=self._ae_title, address=self._address, started_at=now, heartbeat_at=now))

    def renew(self) -> bool:
        """Renew this process's row; False when it had gone (taken for dead: re-registered).

        Also deletes rows of processes dead for `FORGET_AFTER_LEASES` leases.
        """
        def work(conn: Connection) -> bool:
            now = database_now(conn)
            renewed = conn.execute(update(_PROCESS).where(_PROCESS.c.token == self.token)
                                   .values(heartbeat_at=now)).rowcount
            conn.execute(delete(_PROCESS).where(_PROCESS.c.heartbeat_at < now - timedelta(
                seconds=self.lease * FORGET_AFTER_LEASES)))
            if not renewed:
                self._insert(conn)
            return bool(renewed)

        return write_transaction(self._engine, work, retry=self._retry, what="heartbeat")

    def unregister(self) -> None:
        """This process has stopped: its row goes, and its claims (nothing in progress)."""
        def work(conn: Connection) -> None:
            conn.execute(update(_TXN).where(_TXN.c.claimed_by == self.token)
                         .values(claimed_by=None))
            conn.execute(delete(_PROCESS).where(_PROCESS.c.token == self.token))

        write_transaction(self._engine, work, retry=self._retry, what="process registration")

    # --- the heartbeat task -----------------------------------------------------------------

    async def start(self, ae_title: str, address: str) -> None:
        """Register, then renew every third of the lease until `aclose`."""
        await asyncio.to_thread(self.register, ae_title, address)
        self._task = asyncio.create_task(self._beat(), name="index-heartbeat")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.to_thread(self.unregister)
        except Exception as exc:  # the index is gone: the row simply expires
            log.warning("cannot unregister this process from the index: %s", exc)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / BEATS_PER_LEASE)
            try:
                if not await asyncio.to_thread(self.renew):
                    log.warning("this process's registration in the index had expired (no "
                                "heartbeat for %g s): another process may have taken over "
                                "its Storage Commitment deliveries", self.lease)
            except Exception as exc:  # the database is unreachable: keep trying
                log.warning("index heartbeat failed: %s", exc)
