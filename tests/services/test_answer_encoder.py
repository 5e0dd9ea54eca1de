"""The per-query C-FIND answer encoder writes exactly what `encode_answer` writes.

`AnswerEncoder` computes the constant elements and header prefixes once per query and writes
plain-text answers straight from their JSON; everything else goes to `encode_answer`. Both
must give the same bytes for every answer, in every transfer syntax.
"""

from __future__ import annotations

from typing import Any, Final

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from minipacs.index.query import matchable_tags
from minipacs.proto.sop import STUDY_ROOT_QR_FIND
from minipacs.services.answers import AnswerEncoder, encode_answer
from minipacs.services.identifier import model_of, parse_identifier

SYNTAXES: Final = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
                   DeflatedExplicitVRLittleEndian)


def parsed(level: str, charset: str | None = None, **keys: Any) -> Any:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return parse_identifier(ds, model_of(STUDY_ROOT_QR_FIND), matchable=matchable_tags,
                            strict_hierarchy=False)


STUDY_KEYS: Final = dict.fromkeys(
    ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
     "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
     "ReferringPhysicianName", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
     "NumberOfStudyRelatedInstances"), "")


def answer(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]},
        "00100020": {"vr": "LO", "Value": ["PID-1"]},
        "00100040": {"vr": "CS", "Value": ["F"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.8.498.1"]},  # odd: NUL pad
        "00080020": {"vr": "DA", "Value": ["20190301"]},
        "00080030": {"vr": "TM", "Value": ["101500.5"]},
        "00080050": {"vr": "SH"},  # no value: zero length
        "00081030": {"vr": "LO", "Value": ["CT HEAD"]},
        "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
        "00201206": {"vr": "IS", "Value": [4]},
        "00201208": {"vr": "IS", "Value": [120]},
        "00300000": {"vr": "LO", "Value": ["not asked for"]},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


CASES: Final = {
    "plain": answer(),
    "missing keys": answer(**{"00100010": None, "00081030": None}),
    "non-ASCII name": answer(**{"00100010": {"vr": "PN", "Value": [
        {"Alphabetic": "Müller^Jörg"}]}}),
    "Japanese": answer(**{"00100010": {"vr": "PN", "Value": [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}]}}),
    "float DS-like IS": answer(**{"00201208": {"vr": "IS", "Value": [12.0]}}),
    "binary VR": answer(**{"00100020": {"vr": "OB", "InlineBinary": "AAEC"}}),
    "null in values": answer(**{"00080061": {"vr": "CS", "Value": ["CT", None]}}),
    "long text": answer(**{"00081030": {"vr": "LO", "Value": ["X" * 70000]}}),
}


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("charset", [None, "ISO_IR 100"])
def test_same_bytes_as_encode_answer(syntax: str, name: str, charset: str | None) -> None:
    query = parsed("STUDY", charset, **STUDY_KEYS)
    encoder = AnswerEncoder(query, "MINIPACS", syntax)
    assert encoder.encode(CASES[name]) == encode_answer(CASES[name], query, "MINIPACS", syntax)


def test_sequences_and_instance_availability_take_the_general_path() -> None:
    query = parsed("STUDY", None, **STUDY_KEYS, InstanceAvailability="",
                   ProcedureCodeSequence=[])
    a = answer(**{"00081032": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH",
                                                                   "Value": ["X1"]}}]}})
    for syntax in SYNTAXES:
        encoder = AnswerEncoder(query, "MINIPACS", syntax)
        assert encoder.encode(a) == encode_answer(a, query, "MINIPACS", syntax)


def test_plain_text_answers_do_not_take_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import minipacs.services.answers as answers

    query = parsed("STUDY", "ISO_IR 100", **STUDY_KEYS)
    expected = {s: encode_answer(CASES["plain"], query, "MINIPACS", s) for s in SYNTAXES}

    def general(*args: object) -> tuple[bytes, bool]:
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(answers, "encode_answer", general)
    for syntax in SYNTAXES:
        encoder = answers.AnswerEncoder(query, "MINIPACS", syntax)
        assert encoder.encode(CASES["plain"]) == (expected[syntax][0], False)
