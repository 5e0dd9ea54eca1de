"""`storage.patient_conflict` over the wire: a study arriving under a second patient.

pynetdicom stores a study under one Patient ID, then one more instance of that study under
another. The default refuses it (0xC000 and an Error Comment); ``keep-apart`` stores it
without moving the study. Either way a C-FIND for the first patient still finds the study.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian

from minipacs.proto.status import Status
from tests.support import LOOPBACK, ServerFactory, make_ct, pynetdicom_ae

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def ct(index: int, patient_id: str) -> Dataset:
    ds = make_ct(pixel_bytes=2048, index=index)
    ds.PatientID = patient_id
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def store_and_find(port: int, datasets: list[Dataset], patient_id: str
                   ) -> tuple[list[tuple[int, str]], list[Any]]:
    """C-STORE each data set, then C-FIND studies of `patient_id`: (status, comment), answers."""
    ae = pynetdicom_ae()
    ae.add_requested_context(CT_IMAGE_STORAGE, ImplicitVRLittleEndian)
    ae.add_requested_context(STUDY_ROOT_FIND, ImplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, port, ae_title="MINIPACS")
    assert assoc.is_established
    try:
        statuses = []
        for ds in datasets:
            rsp = assoc.send_c_store(ds)
            statuses.append((int(rsp.Status), str(rsp.get("ErrorComment", ""))))
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = patient_id
        query.StudyInstanceUID = ""
        query.NumberOfStudyRelatedInstances = ""
        answers = [identifier for status, identifier in assoc.send_c_find(
            query, STUDY_ROOT_FIND) if status and status.Status in (0xFF00, 0xFF01)]
    finally:
        assoc.release()
    return statuses, answers


async def test_refused_by_default_with_a_comment(start_server: ServerFactory) -> None:
    server = await start_server(storage={"min_free_mb": 0})
    statuses, answers = await asyncio.to_thread(
        store_and_find, server.port, [ct(1, "FIRST"), ct(2, "SECOND"), ct(3, "FIRST")],
        "FIRST")
    assert statuses == [(Status.SUCCESS, ""),
                        (Status.CANNOT_UNDERSTAND,
                         "Patient ID differs from the study's patient in the archive"),
                        (Status.SUCCESS, "")]
    (study,) = answers
    assert int(study.NumberOfStudyRelatedInstances) == 2  # the refused one is not there


@pytest.mark.parametrize("policy", ["keep-apart"])
async def test_keep_apart_stores_it_and_leaves_the_study(start_server: ServerFactory,
                                                         policy: str) -> None:
    server = await start_server(storage={"min_free_mb": 0, "patient_conflict": policy})
    statuses, answers = await asyncio.to_thread(
        store_and_find, server.port, [ct(1, "FIRST"), ct(2, "SECOND")], "FIRST")
    assert statuses == [(Status.SUCCESS, ""), (Status.SUCCESS, "")]
    (study,) = answers
    assert int(study.NumberOfStudyRelatedInstances) == 2
    _, nobody = await asyncio.to_thread(store_and_find, server.port, [], "SECOND")
    assert nobody == []  # no second patient, no study moved to it
