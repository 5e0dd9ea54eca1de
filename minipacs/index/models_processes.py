"""ORM table: the `minipacs serve` processes that share this index (issue 15).

Each serving process registers itself at start, renews its row every third of
``database.process_lease`` and deletes it when it stops. A row not renewed for a lease is a
dead process: another takes over its Storage Commitment deliveries (the transactions it
claimed, `CommitmentTransaction.claimed_by`), and `db rebuild` and `db copy` refuse only
while some row is fresh. Times are the database's clock (PostgreSQL's ``now()``), so hosts
whose clocks differ still agree on who is alive.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base

__all__ = ["ServerProcess"]


class ServerProcess(Base):
    """One serving process: who it is, and when it last said it was alive."""

    __tablename__ = "server_process"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)  # host:pid:random
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    ae_title: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(300))  # where it listens, for humans
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
