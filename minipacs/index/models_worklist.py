"""ORM tables: Modality Worklist: one row per Scheduled Procedure Step (PS3.4 Annex K).

PS3.4 K.6.1.2.1: each worklist item focuses on one Scheduled Procedure Step, so an item
whose Scheduled Procedure Step Sequence (0040,0100) holds several steps is kept as several
rows, each with the whole item as DICOM JSON (PS3.18 F.2) but only its own step in that
sequence. The matching keys of PS3.4 Table K.6-1 are typed, indexed columns as in
``models`` (PN also folded, dates YYYYMMDD, times HHMMSS.FFFFFF).
"""

from __future__ import annotations

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base

__all__ = ["WorklistStep"]


class WorklistStep(Base):
    """One Scheduled Procedure Step with its item's patient, visit and request attributes."""

    __tablename__ = "worklist_step"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Top level of the item (Patient, Imaging Service Request, Requested Procedure modules).
    patient_name: Mapped[str | None] = mapped_column(String(324))
    patient_name_folded: Mapped[str | None] = mapped_column(String(324), index=True)
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    accession_number: Mapped[str | None] = mapped_column(String(16), index=True)
    requested_procedure_id: Mapped[str | None] = mapped_column(String(16), index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    # Inside the step's Scheduled Procedure Step Sequence item.
    modality: Mapped[str | None] = mapped_column(String(16), index=True)
    scheduled_station_ae_title: Mapped[str | None] = mapped_column(String(16), index=True)
    sps_start_date: Mapped[str | None] = mapped_column(String(8), index=True)
    sps_start_time: Mapped[str | None] = mapped_column(String(13))
    scheduled_performing_physician_name: Mapped[str | None] = mapped_column(String(324))
    scheduled_performing_physician_name_folded: Mapped[str | None] = mapped_column(
        String(324), index=True)
    sps_id: Mapped[str | None] = mapped_column(String(16), index=True)
    sps_status: Mapped[str | None] = mapped_column(String(16), index=True)
    attributes: Mapped[str] = mapped_column(Text)
