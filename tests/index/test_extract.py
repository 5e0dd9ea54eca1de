"""Attribute extraction: levels, character sets, bulk data, bounded parsing, deflate bombs."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from minipacs.index.extract import ExtractLimits, read_attributes
from minipacs.ports import DataSetError
from tests.index.dicomdata import (
    DEFLATED,
    EXPLICIT_BE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    attributes,
    deflate,
    encode,
    make_dataset,
    sequence_item,
)

MiB = 1 << 20


def explicit_ob(tag: int, length: int) -> bytes:
    """An Explicit VR LE OB element header declaring `length` bytes (PS3.5 §7.1.2)."""
    return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, b"OB", 0, length)


def test_levels_and_identity() -> None:
    ds = make_dataset(3, study=2, series=5, patient_id="P9", issuer="HOSP")
    attrs = attributes(ds)
    assert (attrs.sop_instance_uid, attrs.study_instance_uid, attrs.series_instance_uid) == (
        ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert attrs.sop_class_uid == ds.SOPClassUID
    assert (attrs.patient_id, attrs.issuer_of_patient_id) == ("P9", "HOSP")
    assert attrs.patient["00100010"]["Value"] == [{"Alphabetic": "Doe^John"}]
    assert "00101010" in attrs.study and "00101010" not in attrs.patient  # Patient's Age
    assert "00080060" in attrs.series and "00200011" in attrs.series
    assert "00080016" in attrs.instance and "00200013" in attrs.instance
    assert attrs.patient.keys().isdisjoint(attrs.study.keys() | attrs.series.keys())


def test_no_issuer_is_empty_string() -> None:
    assert attributes(make_dataset()).issuer_of_patient_id == ""


@pytest.mark.parametrize("ts", [IMPLICIT_LE, EXPLICIT_BE, DEFLATED])
def test_transfer_syntaxes_give_the_same_attributes(ts: str) -> None:
    ds = make_dataset()
    assert attributes(ds, ts) == attributes(ds, EXPLICIT_LE)


@pytest.mark.parametrize(
    ("charset", "name", "groups"),
    [
        ("ISO_IR 100", "Müller^Jürgen", {"Alphabetic": "Müller^Jürgen"}),
        ("ISO_IR 192", "Wang^XiaoDong=王^小東", {"Alphabetic": "Wang^XiaoDong",
                                                 "Ideographic": "王^小東"}),
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう",
         {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}),
    ],
)
def test_specific_character_set_is_decoded(charset: str | list[str], name: str,
                                           groups: dict[str, str]) -> None:
    ds = make_dataset(charset=charset, name=name)
    raw = encode(ds)
    if "2022" in str(charset):
        assert b"\x1b$B" in raw  # really ISO 2022 escapes on the wire (PS3.5 H.3.1)
    else:
        assert name.encode("utf-8") not in raw or charset == "ISO_IR 192"
    attrs = read_attributes(io.BytesIO(raw), EXPLICIT_LE)
    assert attrs.patient["00100010"]["Value"] == [groups]
    assert all("00080005" not in level for level in
               (attrs.patient, attrs.study, attrs.series, attrs.instance))


def test_bulk_data_never_reaches_the_json() -> None:
    ds = make_dataset()
    ds.add_new(0x00420011, "OB", b"%PDF" + bytes(5 * MiB))  # Encapsulated Document: deferred
    ds.add_new(0x00204000, "LT", "x" * 2000)  # Image Comments over the 1 KiB threshold
    ds.add_new(0x00091010, "OB", bytes(100))  # a small private OB stays
    ds.add_new(0x00091000, "LO", "PRIVATE CREATOR")
    icon = sequence_item(Rows=1, Columns=1)
    icon.add_new(0x7FE00010, "OB", bytes(4096))
    ds.IconImageSequence = Sequence([icon])
    ds.add_new(0x7FE00010, "OB", bytes(4 * MiB))  # Pixel Data
    raw = encode(ds)
    # Parsing within 1 MiB proves neither the document nor the pixels were read.
    attrs = read_attributes(io.BytesIO(raw), EXPLICIT_LE, ExtractLimits(max_read=MiB))
    inst = attrs.instance
    assert "00420011" not in inst and "00204000" not in inst and "7FE00010" not in inst
    assert inst["00091010"]["InlineBinary"]
    assert inst["00880200"]["Value"][0] == {"00280010": {"vr": "US", "Value": [1]},
                                            "00280011": {"vr": "US", "Value": [1]}}


def test_attributes_over_the_read_budget_are_refused() -> None:
    ds = make_dataset()
    ds.ReferencedImageSequence = Sequence(  # nested values are not deferred by pydicom
        sequence_item(ReferencedSOPInstanceUID=f"1.2.{i}", ReferencedSOPClassUID="1.2")
        for i in range(5000)
    )
    with pytest.raises(DataSetError, match="exceed"):
        read_attributes(io.BytesIO(encode(ds)), EXPLICIT_LE, ExtractLimits(max_read=64 * 1024))


@pytest.mark.parametrize("bad", [b"", b"\x00" * 3, b"garbage!" * 50])
def test_garbage_is_a_data_set_error(bad: bytes) -> None:
    with pytest.raises(DataSetError):
        read_attributes(io.BytesIO(bad), EXPLICIT_LE)


def test_missing_study_uid_is_a_data_set_error() -> None:
    ds = make_dataset()
    del ds.StudyInstanceUID
    with pytest.raises(DataSetError, match="Study Instance UID") as info:
        attributes(ds)
    assert len(info.value.comment) <= 64


def test_unknown_transfer_syntax_is_a_data_set_error() -> None:
    with pytest.raises(DataSetError, match="transfer syntax"):
        read_attributes(io.BytesIO(encode(make_dataset())), "1.2.3.4.5")


def _peak_bytes(fn: object) -> int:
    tracemalloc.start()
    try:
        fn()  # type: ignore[operator]
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_deflate_bomb_is_refused_with_bounded_memory() -> None:
    """A 512 MiB run of zeros (~0.5 MiB deflated) declared as one element."""
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [z.compress(encode(make_dataset()) + explicit_ob(0x00420011, 512 * MiB))]
    zeros = bytes(MiB)
    parts += [z.compress(zeros) for _ in range(512)]
    bomb = b"".join([*parts, z.flush()])
    assert len(bomb) < MiB
    limits = ExtractLimits(max_inflate=32 * MiB)

    def parse() -> None:
        with pytest.raises(DataSetError, match="inflates past"):
            read_attributes(io.BytesIO(bomb), DEFLATED, limits)

    assert _peak_bytes(parse) < 4 * MiB


def test_deflate_bomb_of_small_elements_hits_the_read_budget() -> None:
    """Values under defer_size are read; the budget stops them before memory goes."""
    element = explicit_ob(0x00091010, 512 * 1024) + bytes(512 * 1024)
    bomb = deflate(encode(make_dataset()) + element * 200)  # 100 MiB inflated
    limits = ExtractLimits(max_read=8 * MiB)

    def parse() -> None:
        with pytest.raises(DataSetError, match="exceed"):
            read_attributes(io.BytesIO(bomb), DEFLATED, limits)

    assert _peak_bytes(parse) < 24 * MiB


def test_deflated_pixels_are_not_inflated() -> None:
    ds = make_dataset()
    ds.add_new(0x7FE00010, "OB", bytes(16 * MiB))
    data = encode(ds, DEFLATED)
    limits = ExtractLimits(max_inflate=MiB)  # the header region inflates to far less
    attrs = read_attributes(io.BytesIO(data), DEFLATED, limits)
    assert attrs.sop_instance_uid == ds.SOPInstanceUID


def test_sop_uids_come_from_the_data_set_for_the_mismatch_check() -> None:
    ds: Dataset = make_dataset(1)
    ds.SOPInstanceUID = "1.2.3.999"
    attrs = attributes(ds)
    assert attrs.sop_instance_uid == "1.2.3.999"  # the service compares with the command
