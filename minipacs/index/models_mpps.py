"""ORM tables: Modality Performed Procedure Step instances (PS3.4 Annex F).

One row per MPPS instance with its whole data set as DICOM JSON (PS3.18 F.2) and the keys a
lookup needs as columns; one `mpps_step` row per Scheduled Step Attributes Sequence
(0040,0270) item, which is what links an MPPS to its studies (by Study Instance UID) and to
the worklist (by Scheduled Procedure Step ID). Steps are written once: PS3.4 Table F.7.2-1
does not allow N-SET to change that sequence.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base

__all__ = ["Mpps", "MppsStep"]


class Mpps(Base):
    """One MPPS SOP instance (PS3.3 A.16 Modality Performed Procedure Step IOD)."""

    __tablename__ = "mpps"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    station_ae: Mapped[str | None] = mapped_column(String(16), index=True)
    start_date: Mapped[str | None] = mapped_column(String(8), index=True)
    start_time: Mapped[str | None] = mapped_column(String(16))
    end_date: Mapped[str | None] = mapped_column(String(8))
    end_time: Mapped[str | None] = mapped_column(String(16))
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attributes: Mapped[str] = mapped_column(Text)


class MppsStep(Base):
    """One Scheduled Step Attributes Sequence item of an MPPS (PS3.3 C.4.13)."""

    __tablename__ = "mpps_step"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    mpps_pk: Mapped[int] = mapped_column(ForeignKey("mpps.pk", ondelete="CASCADE"),
                                         index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    scheduled_step_id: Mapped[str] = mapped_column(String(16))
