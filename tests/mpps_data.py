"""MPPS N-CREATE and final N-SET data sets shared by the service and interop tests.

The attributes are those an SCU sends for Modality Performed Procedure Step (PS3.4 F.7.2):
N-CREATE carries the type 2 attributes empty that a final N-SET then fills.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset


def scheduled_step(study_uid: str, sps_id: str, accession: str | None = None) -> Dataset:
    """One Scheduled Step Attributes Sequence item."""
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.ScheduledProcedureStepID = sps_id
    if accession is not None:
        item.AccessionNumber = accession
    return item


def mpps_create(steps: Sequence[Dataset], *, patient: tuple[str, str], pps_id: str,
                start: tuple[str, str], status: str = "IN PROGRESS") -> Dataset:
    """An N-CREATE data set by station CT01; `patient` is (name, ID), `start` (date, time)."""
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = list(steps)
    ds.PatientName, ds.PatientID = patient
    ds.PerformedProcedureStepID = pps_id
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = start
    ds.PerformedProcedureStepStatus = status
    ds.Modality = "CT"
    ds.PerformedProcedureStepEndDate = None
    ds.PerformedProcedureStepEndTime = None
    ds.PerformedSeriesSequence = []
    return ds


def mpps_final(status: str, *, end: tuple[str, str], series_uid: str,
               images: Sequence[Dataset] = ()) -> Dataset:
    """A final N-SET data set: `status`, end (date, time) and one "Chest" series."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = end
    series = Dataset()
    series.ProtocolName = "Chest"
    series.SeriesInstanceUID = series_uid
    series.ReferencedImageSequence = list(images)
    ds.PerformedSeriesSequence = [series]
    return ds
