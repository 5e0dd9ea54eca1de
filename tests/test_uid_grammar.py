"""Every place that checks a UID agrees with the one grammar (proto/uid.py, PS3.5 §9.1).

Issue 10 item 5: C-MOVE accepted "1.02" while C-FIND and MPPS refused it. Each consumer is
driven with the same values: C-FIND keys, C-MOVE/C-GET keys, MPPS N-CREATE, Storage
Commitment references, `sop_classes.extra_storage`, the get SCU's file names and the store
SCU's file scan must all accept exactly what `is_valid_uid` accepts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from minipacs.config import ConfigError, load_config
from minipacs.ports import FileMeta, MatchKind
from minipacs.proto.uid import is_valid_uid
from minipacs.services.commitment_rules import ActionError, _uid_of
from minipacs.services.identifier import IdentifierError, Model, parse_identifier
from minipacs.services.retrieve_keys import parse_retrieve_identifier
from minipacs.storage.files import UnreadableDicom, read_dicom_file
from minipacs.storage.folder import FolderWriter

CT = "1.2.840.10008.5.1.4.1.1.2"
VALUES = ["1.2.3", "1.02", "1.2.03.4", "0.1", "1.2.", "1..2", "1.2x", "../../evil", "..",
          "/tmp/abs", "1.2\n3", "1.2\x1b", "A" * 64, "1." + "2" * 63]


def c_find(uid: str) -> bool:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    try:
        parsed = parse_identifier(ds, Model.STUDY_ROOT, matchable=lambda _: frozenset(
            {0x0020000D}))
    except IdentifierError:
        return False
    (cond,) = parsed.query.conditions
    assert cond.kind is MatchKind.SINGLE and cond.values == (uid,)
    return True


def c_move(uid: str) -> bool:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.SeriesInstanceUID = uid
    try:
        parse_retrieve_identifier(ds, Model.STUDY_ROOT)
    except IdentifierError:
        return False
    return True


def commitment(uid: str) -> bool:
    ds = Dataset()
    ds.TransactionUID = uid
    try:
        _uid_of(ds, "TransactionUID", "")
    except ActionError:
        return False
    return True


def config(uid: str, tmp_path: Path) -> bool:
    path = tmp_path / "minipacs.yaml"
    path.write_text(f"sop_classes: {{extra_storage: [{uid!r}]}}\n", encoding="utf-8")
    try:
        load_config(path)
    except ConfigError:
        return False
    return True


def get_scu_file(uid: str, tmp_path: Path) -> bool:
    (tmp_path / "out").mkdir(exist_ok=True)
    writer = FolderWriter(tmp_path / "out", implementation_class_uid="1.2.3",
                          implementation_version_name="X")
    try:
        spool = writer.open_spool(FileMeta(CT, uid, ExplicitVRLittleEndian, "A", "B"))
    except ValueError:
        return False
    spool.discard()
    return True


def store_scu_scan(uid: str, tmp_path: Path) -> bool:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = uid
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "one.dcm"
    ds.save_as(path, enforce_file_format=True)
    try:
        read_dicom_file(path)
    except UnreadableDicom:
        return False
    return True


@pytest.mark.parametrize("uid", VALUES)
def test_every_consumer_follows_the_one_grammar(uid: str, tmp_path: Path) -> None:
    expected = is_valid_uid(uid)
    assert c_find(uid) is expected
    assert c_move(uid) is expected
    assert commitment(uid) is expected
    assert config(uid, tmp_path) is expected
    assert get_scu_file(uid, tmp_path) is expected
    assert store_scu_scan(uid, tmp_path) is expected
