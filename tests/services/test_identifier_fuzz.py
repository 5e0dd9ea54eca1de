"""Property-based fuzzing of the identifier decoder and parsers (hypothesis).

Identifiers of random keys and values — wildcards, ranges, value lists, sequences, values
that break their VR, bytes outside the character set — in every native transfer syntax,
intact or with their bytes mutated, go through `decode_identifier` and the C-FIND, C-MOVE/
C-GET and worklist parsers (tests/reliability/core.check_identifier): only IdentifierError
(a C000/A900 answer) may come out. Found so far: a bad VR inside a sequence item escaped as
NotImplementedError (now C000, tests/services/test_find.py).
"""

from __future__ import annotations

import warnings
from typing import Final

from hypothesis import given
from hypothesis import strategies as st
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset

from tests.reliability.core import check_identifier
from tests.reliability.corpus import NATIVE, encode
from tests.strategies import FUZZ, mutated

# Keys of every level and of the worklist, with the VRs that give them their matching rules.
KEYWORDS: Final = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
    "ModalitiesInStudy", "StudyDescription", "SeriesInstanceUID", "Modality", "SeriesNumber",
    "SOPInstanceUID", "SOPClassUID", "InstanceNumber", "ContentDate", "ContentTime",
    "ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "NumberOfStudyRelatedSeries",
    "InstanceAvailability", "RetrieveAETitle", "TimezoneOffsetFromUTC",
)
LEVELS: Final = st.sampled_from(["PATIENT", "STUDY", "SERIES", "IMAGE", "", "BOGUS"])
CHARSETS: Final = st.sampled_from(["", "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 87",
                                   "ISO_IR 100\\ISO 2022 IR 13", "GB18030", "EVIL\nFAKE"])
# Matching forms (PS3.4 C.2.2.2): universal, single, wildcard, range, list, and junk.
VALUES: Final = st.one_of(
    st.just(""), st.sampled_from(["*", "?", "A*B?", "20240101-20241231", "-20240101",
                                  "1200-", "1.2.3\\1.2.4", "Doe^John", "=", "\\\\"]),
    st.text(max_size=24), st.from_regex(r"\A[0-9.\-*?\\]{0,40}\Z", fullmatch=True),
)


@st.composite
def identifiers(draw: st.DrawFn, depth: int = 0) -> Dataset:
    ds = Dataset()
    if depth == 0:
        ds.QueryRetrieveLevel = draw(LEVELS)
        if draw(st.booleans()):
            ds.SpecificCharacterSet = draw(CHARSETS)
    for keyword in draw(st.lists(st.sampled_from(KEYWORDS), max_size=6, unique=True)):
        value = draw(VALUES)
        with warnings.catch_warnings(), pydicom_config.disable_value_validation():
            warnings.simplefilter("ignore")
            try:
                setattr(ds, keyword, value)
            except (ValueError, TypeError, OverflowError):
                continue  # pydicom will not hold it (an IS of "?"): the bytes mutations will
    if depth < 2 and draw(st.booleans()):
        sequence = draw(st.sampled_from(["ScheduledProcedureStepSequence",
                                         "ReferencedStudySequence", "ProcedureCodeSequence"]))
        setattr(ds, sequence, draw(st.lists(identifiers(depth + 1), max_size=2)))
    return ds


def _encoded(ds: Dataset, transfer_syntax: str) -> bytes | None:
    with warnings.catch_warnings(), pydicom_config.disable_value_validation():
        warnings.simplefilter("ignore")
        try:
            return encode(ds, transfer_syntax)
        except Exception:  # a value pydicom cannot write at all: nothing to send
            return None


@FUZZ
@given(identifiers(), st.sampled_from(NATIVE), st.data())
def test_identifiers_decode_and_parse_or_are_refused(ds: Dataset, transfer_syntax: str,
                                                     data: st.DataObject) -> None:
    encoded = _encoded(ds, transfer_syntax)
    if encoded is None:
        return
    if data.draw(st.booleans()):
        encoded = data.draw(mutated(encoded))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's notes on odd values
        check_identifier(encoded, transfer_syntax)  # raises Finding on any other exception
