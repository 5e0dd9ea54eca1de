"""The DICOM JSON table against pydicom: the same JSON for every VR, value and encoding.

`dataset_json(table=False)` converts every element with pydicom's `to_json_dict`, as the
index did before the table; the table must give exactly that, or leave the element to
pydicom. The values are the awkward ones: padding, NULs, empty values among several,
signs and exponents, wrong lengths, non-ASCII text under several character sets.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any, Final

import pytest
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement
from pydicom.filereader import read_dataset

from minipacs.index.dicomjson import dataset_json
from tests.index.dicomdata import (
    EXPLICIT_BE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    encode,
    make_dataset,
    sequence_item,
)
from tests.interop.dicomfiles import KINDS, base_dataset

# Explicit VR elements with a 4-byte length after 2 reserved bytes (PS3.5 §7.1.2).
LONG_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN",
                             "UR", "UT", "UV"})
TAG_CHARSET: Final = 0x00080005
TAG_LUT_DESCRIPTOR: Final = 0x00281101  # US or SS, VM 3 (PS3.3 C.7.6.3.1.5)
TS: Final = {"implicit-le": (True, True), "explicit-le": (False, True),
             "explicit-be": (False, False)}


def tag_for(vr: str) -> int:
    """A public, current tag of `vr` outside groups 0000 and 0002, multi-valued if any."""
    tags = [(vm == "1", tag) for tag, (v, vm, _, retired, keyword) in DicomDictionary.items()
            if v == vr and not retired and keyword and tag >> 16 not in (0, 2)]
    return min(tags)[1]


def element(tag: int, vr: str, value: bytes, implicit: bool, little: bool) -> bytes:
    """One element encoded as PS3.5 §7.1 says (value as given: odd lengths allowed)."""
    order = "<" if little else ">"
    head = struct.pack(f"{order}HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack(f"{order}I", len(value)) + value
    if vr in LONG_VRS:
        return head + vr.encode() + b"\0\0" + struct.pack(f"{order}I", len(value)) + value
    return head + vr.encode() + struct.pack(f"{order}H", len(value)) + value


def both(data: bytes, implicit: bool, little: bool) -> tuple[str, str]:
    """The JSON text of `data` by the table and by pydicom (text: 1 and 1.0, NaN compare)."""
    ds = read_dataset(io.BytesIO(data), implicit, little)
    table = dataset_json(ds, 1024)
    ds = read_dataset(io.BytesIO(data), implicit, little)
    return json.dumps(table, sort_keys=True), json.dumps(dataset_json(ds, 1024, table=False),
                                                        sort_keys=True)


TEXT_VALUES: Final = [
    b"", b" ", b"  ", b"A", b"A ", b" A", b" A ", b"AB", b"A\\B", b"A \\ B ", b"\\", b"\\\\",
    b"A\\", b"\\B", b"A\x00", b"A \x00", b"A\\B\x00", b"\x00", b"a\tb ", b"1.2.840.10008\x00",
    b"A^B^C", b"x" * 70, b"M\xfcller", b"caf\xc3\xa9",
]
PN_VALUES: Final = [
    b"Doe^John", b"Doe^John ", b"Doe^John\x00", b"Doe^John=", b"Doe^John==", b"=Yamada",
    b"A=B=C", b"A=B=C=D", b"A\\B", b"A\\\\B", b"A\\", b"  ", b"==", b"=", b"A^B^C^D^E",
    b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B", b"M\xfcller^J\xfcrgen",
]
IS_VALUES: Final = [
    b"1", b"1 ", b" 1", b"+1", b"-1", b"-0", b"01", b"1\\2", b"1\\ 2 ", b"1.0", b"1.5", b"",
    b" ", b"abc", b"1\\", b"\\1", b"2147483648", b"12345678901234", b"1\x00", b"1 2",
]
DS_VALUES: Final = [
    b"1", b"1.5", b" 1.5 ", b"-1e3", b"1E-3", b".5", b"5.", b"1\\2.5", b"0.9765625\\0.9765625",
    b"nan", b"inf", b"1e999", b"abc", b"1\\", b"+.5e+2", b"0012.5", b"1.5\x00", b"", b"  ",
    b"-", b".", b"1e", b"12345678901234567890", b"-250.0\\-250.0\\-0.0",
]
NUMBER_VALUES: Final = [b"", b"\x01\x00", b"\x01\x00\xff\xff", b"\x01\x00\x02", b"\x01" * 8,
                        b"\x00\x00\xc0\x7f", b"\xff" * 16]

CASES: Final = [
    *((vr, v) for vr in ("AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR", "SH", "LO", "UC",
                        "ST", "LT", "UT") for v in TEXT_VALUES),
    *(("PN", v) for v in PN_VALUES),
    *(("IS", v) for v in IS_VALUES),
    *(("DS", v) for v in DS_VALUES),
    *((vr, v) for vr in ("US", "SS", "UL", "SL", "FL", "FD", "SV", "UV") for v in NUMBER_VALUES),
]


@pytest.mark.parametrize("ts", list(TS))
@pytest.mark.parametrize("charset", [None, b"ISO_IR 100", b"ISO_IR 192", b"\\ISO 2022 IR 87"],
                         ids=["default", "latin1", "utf8", "iso2022"])
def test_every_case_gives_what_pydicom_gives(ts: str, charset: bytes | None) -> None:
    implicit, little = TS[ts]
    for vr, value in CASES:
        data = b""
        if charset is not None:
            data += element(TAG_CHARSET, "CS", charset, implicit, little)
        data += element(tag_for(vr), vr, value, implicit, little)
        table, reference = both(data, implicit, little)
        assert table == reference, (vr, value)


@pytest.mark.parametrize("vr", ["US", "SS"])
def test_lut_descriptor_is_left_to_pydicom(vr: str) -> None:
    data = element(TAG_LUT_DESCRIPTOR, vr, struct.pack("<hhh", -4096, 0, 16), False, True)
    table, reference = both(data, False, True)
    assert table == reference
    assert json.loads(table)["00281101"]["Value"][0] == 61440  # pydicom's fix of value 1


def test_sequences_nest_and_fail_as_with_pydicom() -> None:
    ds = make_dataset()
    ds.ReferencedImageSequence = [
        sequence_item(ReferencedSOPClassUID="1.2.3", ReferencedSOPInstanceUID="1.2.3.4 ",
                      ReferencedFrameNumber=["1", "2"]),
        sequence_item(),
    ]
    ds.ProcedureCodeSequence = [sequence_item(CodeValue="X", CodeMeaning="Ünicode")]
    ds.SourceImageSequence = []
    data = encode(ds)
    # A DS value pydicom cannot read inside an item: pydicom drops the whole top sequence.
    content = element(0x00180050, "DS", b"1.2.3.", False, True)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content  # PS3.5 §7.5
    bad = element(0x00081140, "SQ", item, False, True)
    for payload in (data, data + bad):
        table, reference = both(payload, False, True)
        assert table == reference
    assert "00081140" in json.loads(both(data, False, True)[0])
    assert "00081140" not in json.loads(both(data + bad, False, True)[0])


def test_an_ascii_header_needs_no_pydicom_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    to_json_dict = DataElement.to_json_dict

    def counting(self: DataElement, *args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(self.tag)
        return to_json_dict(self, *args, **kwargs)

    monkeypatch.setattr(DataElement, "to_json_dict", counting)
    ds = make_dataset()
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows = 64
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    json_ds = dataset_json(read_dataset(io.BytesIO(encode(ds)), False, True), 1024)
    assert calls == []
    assert json_ds["00280030"] == {"vr": "DS", "Value": [0.5, 0.5]}
    assert json_ds["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("charset", "name"), [
    (None, "Interop^Store"), ("ISO_IR 100", "Müller^Jürgen"), ("ISO_IR 192", "Ωμέγα^Ελένη"),
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
], ids=["default", "latin1", "utf8", "iso2022"])
@pytest.mark.parametrize("ts", list(TS))
def test_whole_data_sets_give_what_pydicom_gives(kind: str, charset: str | list[str] | None,
                                                 name: str, ts: str) -> None:
    implicit, little = TS[ts]
    ds = base_dataset(kind, name=name, charset=charset)  # type: ignore[arg-type]
    syntax = {"implicit-le": IMPLICIT_LE, "explicit-le": EXPLICIT_LE,
              "explicit-be": EXPLICIT_BE}[ts]
    table, reference = both(encode(ds, syntax), implicit, little)
    assert table == reference
    assert "00100010" in json.loads(table)
