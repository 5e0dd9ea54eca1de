"""Patient identity longer than its VR allows (PS3.5 Table 6.2-1, LO: 64 characters).

The index keys patients by Patient ID and Issuer of Patient ID in 64-character columns.
PostgreSQL refuses a longer value where SQLite would store it, and cutting it could make two
patients one, so the data set is refused before anything is written, on both backends.
"""

from __future__ import annotations

from typing import Final

import pytest
from sqlalchemy import Engine

from minipacs.index import IndexWriter
from minipacs.index.models import Patient
from minipacs.ports import AddOutcome, DataSetError
from tests.index.dicomdata import attributes, make_dataset, record
from tests.index.test_writer import rows

LO_MAX: Final = 64  # PS3.5 Table 6.2-1: LO, at most 64 characters


async def test_identity_of_the_longest_allowed_length_is_stored(
        writer: IndexWriter, engine: Engine) -> None:
    patient_id, issuer = "P" * LO_MAX, "Ä" * LO_MAX  # characters, not bytes
    result = await writer.submit(record(attributes(
        make_dataset(1, patient_id=patient_id, issuer=issuer, charset="ISO_IR 192"))))
    assert result.outcome is AddOutcome.ADDED
    assert rows(engine, Patient.patient_id, Patient.issuer_of_patient_id) == [
        (patient_id, issuer)]


@pytest.mark.parametrize(("patient_id", "issuer", "named"), [
    ("P" * (LO_MAX + 1), None, "Patient ID"),
    ("PID1", "I" * (LO_MAX + 1), "Issuer of Patient ID"),
], ids=["patient-id", "issuer"])
@pytest.mark.filterwarnings("ignore:The value length:UserWarning")  # pydicom's, on writing
def test_longer_identity_is_refused(patient_id: str, issuer: str | None, named: str) -> None:
    with pytest.raises(DataSetError, match=f"^{named} is longer than {LO_MAX} characters"):
        attributes(make_dataset(1, patient_id=patient_id, issuer=issuer))
