"""ORM tables: Storage Commitment Push Model: pending transactions (PS3.4 Annex J).

A transaction is persisted before its N-ACTION is answered (PS3.4 J.3.2.1.3: a success
status means the request was received), so a report still owed survives a restart. Each
referenced instance is a row of ``commitment_reference``; its ``failure_reason`` is None
until checked, 0 once committed, else the PS3.3 C.14.1.1 Failure Reason. Several
processes share the table: an attempt claims its transaction first (``claimed_by``), so one
report is delivered by one process (index/commitment.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base

__all__ = ["CommitmentReference", "CommitmentTransaction"]


class CommitmentTransaction(Base):
    """One Storage Commitment Request (N-ACTION, Action Type ID 1) and its delivery state."""

    __tablename__ = "commitment_transaction"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_uid: Mapped[str] = mapped_column(String(64), unique=True)  # (0008,1195)
    requestor_ae_title: Mapped[str] = mapped_column(String(16))  # the calling AE
    called_ae_title: Mapped[str] = mapped_column(String(16))  # our AE as the requestor named it
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # delivery attempts made
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(200))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The serving process attempting its delivery now (`ServerProcess.token`, revision 0008);
    # None between attempts, when any process may take it once it is due.
    claimed_by: Mapped[str | None] = mapped_column(String(64))


class CommitmentReference(Base):
    """One item of the request's Referenced SOP Sequence (0008,1199), in request order."""

    __tablename__ = "commitment_reference"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_pk: Mapped[int] = mapped_column(
        ForeignKey("commitment_transaction.pk", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    sop_class_uid: Mapped[str] = mapped_column(String(64))  # (0008,1150)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))  # (0008,1155)
    failure_reason: Mapped[int | None] = mapped_column(Integer)  # (0008,1197); 0: committed
