"""Transfer syntax conversion (minipacs.services.transcode): native round trips between every
pair, private and ambiguous elements, byte order, decompression with pydicom's decoders."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from minipacs.proto.sop import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_2000,
    JPEG_BASELINE_8BIT,
    MPEG2_MPML,
    RLE_LOSSLESS,
    dataset_encoding,
)
from minipacs.services import transcode
from minipacs.services.transcode import (
    NATIVE_SYNTAXES,
    TranscodeError,
    can_convert,
    choose_syntax,
    convert,
    decoder_missing,
    open_converted,
)
from minipacs.services.transcode_stream import DEFER_SIZE
from tests.interop.dicomfiles import dataset_bytes, deflate_bomb

EXPLICIT = EXPLICIT_VR_LITTLE_ENDIAN
IMPLICIT = IMPLICIT_VR_LITTLE_ENDIAN
DEFLATED = DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
BIG = EXPLICIT_VR_BIG_ENDIAN
UNKNOWN_GROUP = 0x0029  # a private group whose creator pydicom does not know
WORDS = {"OW": "H", "OL": "L", "OF": "f", "OD": "d"}
MIB = 1 << 20


# --- data -----------------------------------------------------------------------------------


def rich_dataset() -> Dataset:
    """Text, numbers, ambiguous VRs, word VRs at two depths, nested and undefined-length
    sequences, and private elements (known and unknown creators)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.77.1"
    ds.PatientName = "Müller^Jo"
    ds.PatientID = "ABC"  # odd length: padded on the wire
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PixelSpacing = ["0.5", "0.25"]
    ds.InstanceNumber = 7
    ds.FrameIncrementPointer = 0x00181063  # AT
    ds.SliceThickness = "1.5"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 2
    ds.Columns = 3
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 1
    ds.add_new(0x00280106, "US or SS", -5)  # Smallest Image Pixel Value, signed here
    ds.add_new(0x00640009, "OF", struct.pack("<3f", 1.5, -2.25, 3.0))  # Vector Grid Data
    ds.add_new(0x00660040, "OL", struct.pack("<2L", 1, 0x01020304))  # Long Primitive Pt Idx
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    inner = Dataset()
    inner.CodeValue = "121311"
    inner.CodingSchemeDesignator = "DCM"
    inner.CodeMeaning = "Localizer"
    ref.PurposeOfReferenceCodeSequence = Sequence([inner])
    ref.add_new(0x00281201, "OW", struct.pack("<4H", 0, 1, 0x0102, 0xFFFF))  # Red LUT data
    ds.ReferencedImageSequence = Sequence([ref, Dataset()])
    ds["ReferencedImageSequence"].is_undefined_length = True
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x08, "CS", "IMAGE NUM 4")  # pydicom's private dictionary knows this one
    ds.add_new(0x00290010, "LO", "ACME 1.0")
    ds.add_new(0x00291001, "LO", "hello")
    ds.PixelData = struct.pack("<6h", -5, 0, 1, 2047, -2048, 0x0102)
    ds["PixelData"].VR = "OW"
    return ds


def swapped_words(ds: Dataset) -> Dataset:
    """A copy whose OW/OL/OF values are big endian (pydicom writes bytes as they are)."""
    copy = Dataset()
    for elem in ds:
        value = elem.value
        if elem.VR == "SQ":
            value = Sequence([swapped_words(item) for item in value])
        elif elem.VR in WORDS:
            code = WORDS[str(elem.VR)]
            count = len(value) // struct.calcsize("<" + code)
            value = struct.pack(f">{count}{code}", *struct.unpack(f"<{count}{code}", value))
        new = DataElement(elem.tag, elem.VR, value)
        new.is_undefined_length = elem.is_undefined_length
        copy.add(new)
    return copy


def encode(ds: Dataset, ts: str) -> bytes:
    """`ds` written in `ts` by pydicom (the test's independent reference encoder)."""
    implicit, little, deflated = dataset_encoding(ts)
    fp = DicomBytesIO()
    fp.is_little_endian = little
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds if little else swapped_words(ds))
    data = fp.getvalue()
    return zlib.compress(data)[2:-4] if deflated else data  # raw deflate, PS3.5 A.5


def decode(data: bytes, ts: str) -> Dataset:
    implicit, little, deflated = dataset_encoding(ts)
    if deflated:
        data = zlib.decompress(data, -zlib.MAX_WBITS)
    return read_dataset(DicomBytesIO(data), implicit, little)


def canonical(ds: Dataset, little: bool) -> Iterator[tuple[Any, ...]]:
    """Every element as (tag, value), word values as numbers, unknown privates left out."""
    for elem in ds:
        if elem.tag.group == UNKNOWN_GROUP:
            continue
        if elem.VR == "SQ":
            yield (elem.tag, [list(canonical(item, little)) for item in elem.value])
        elif elem.VR in WORDS:
            code = WORDS[str(elem.VR)]
            count = len(elem.value) // struct.calcsize("<" + code)
            yield (elem.tag, struct.unpack(f"{'<' if little else '>'}{count}{code}",
                                           elem.value))
        else:
            yield (elem.tag, elem.value)


def canonical_of(data: bytes, ts: str) -> list[tuple[Any, ...]]:
    return list(canonical(decode(data, ts), dataset_encoding(ts)[1]))


def element_bytes(data: bytes, tag: int) -> bytes:
    """The value of a top-level element, found in explicit VR LE bytes (long or short form)."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    at = data.index(head)
    vr = data[at + 4:at + 6]
    if vr in (b"OB", b"OW", b"OL", b"OF", b"SQ", b"UN", b"UT"):
        (length,) = struct.unpack("<L", data[at + 8:at + 12])
        return data[at + 12:at + 12 + length]
    (length,) = struct.unpack("<H", data[at + 6:at + 8])
    return data[at + 8:at + 8 + length]


# --- native round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("dst", NATIVE_SYNTAXES)
@pytest.mark.parametrize("src", NATIVE_SYNTAXES)
def test_every_native_pair_keeps_every_element(src: str, dst: str) -> None:
    reference = canonical_of(encode(rich_dataset(), EXPLICIT), EXPLICIT)
    out = convert(encode(rich_dataset(), src), src, dst)
    assert canonical_of(out, dst) == reference
    assert can_convert(src, dst)
    back = convert(out, dst, src)  # and back again
    assert canonical_of(back, src) == reference


def test_file_objects_are_read_from_where_they_stand(tmp_path: Path) -> None:
    path = tmp_path / "ds.bin"
    data = encode(rich_dataset(), IMPLICIT)
    path.write_bytes(b"HEADER" + data)
    with path.open("rb") as fp:
        fp.seek(6)  # the data-set offset
        out = convert(fp, IMPLICIT, EXPLICIT)
    assert out == convert(data, IMPLICIT, EXPLICIT)


def test_same_syntax_is_the_identity() -> None:
    data = encode(rich_dataset(), IMPLICIT)
    assert convert(data, IMPLICIT, IMPLICIT) is data


def test_implicit_to_explicit_vrs_come_from_the_dictionaries() -> None:
    out = decode(convert(encode(rich_dataset(), IMPLICIT), IMPLICIT, EXPLICIT), EXPLICIT)
    assert out[0x00280106].VR == "SS" and out[0x00280106].value == -5  # ambiguous, resolved
    assert out["PixelData"].VR == "OW"
    assert out[0x00191008].VR == "CS" and out[0x00191008].value == "IMAGE NUM 4"  # private
    assert out[0x00290010].VR == "LO"  # a Private Creator is LO (PS3.5 §7.8.1)
    assert out[0x00291001].VR == "UN"  # unknown private: UN, value bytes unchanged
    assert out[0x00291001].value == b"hello "


def test_explicit_private_vr_is_kept_and_unknown_becomes_un_through_implicit() -> None:
    out = decode(convert(encode(rich_dataset(), BIG), BIG, EXPLICIT), EXPLICIT)
    assert out[0x00291001].VR == "LO" and out[0x00291001].value == "hello"
    through = convert(convert(encode(rich_dataset(), EXPLICIT), EXPLICIT, IMPLICIT),
                      IMPLICIT, EXPLICIT)
    assert decode(through, EXPLICIT)[0x00291001].value == b"hello "


def test_unknown_private_sequence_of_undefined_length_stays_a_sequence() -> None:
    ds = rich_dataset()
    item = Dataset()
    item.PatientID = "NESTED"
    ds.add_new(0x00291002, "SQ", Sequence([item]))
    ds[0x00291002].is_undefined_length = True
    out = decode(convert(encode(ds, IMPLICIT), IMPLICIT, EXPLICIT), EXPLICIT)
    assert out[0x00291002].VR == "SQ"
    assert out[0x00291002].value[0].PatientID == "NESTED"


def test_undefined_length_sequence_keeps_its_delimiters() -> None:
    out = convert(encode(rich_dataset(), IMPLICIT), IMPLICIT, EXPLICIT)
    sequence = struct.pack("<HH", 0x0008, 0x1140) + b"SQ\x00\x00" + b"\xff\xff\xff\xff"
    assert sequence in out
    assert struct.pack("<HHL", 0xFFFE, 0xE0DD, 0) in out  # Sequence Delimitation Item


def test_odd_length_values_are_padded_to_even() -> None:
    # (0010,0010) PN "ABC" and (0010,0020) LO "X": odd lengths, as some devices send them
    raw = (struct.pack("<HHL", 0x0010, 0x0010, 3) + b"ABC"
           + struct.pack("<HHL", 0x0010, 0x0020, 1) + b"X")
    out = convert(raw, IMPLICIT, EXPLICIT)
    assert element_bytes(out, 0x00100010) == b"ABC "
    assert element_bytes(out, 0x00100020) == b"X "
    ds = decode(out, EXPLICIT)
    assert (ds.PatientName, ds.PatientID) == ("ABC", "X")


def test_big_endian_swaps_words_by_their_size() -> None:
    out = convert(encode(rich_dataset(), EXPLICIT), EXPLICIT, BIG)
    ds = decode(out, BIG)
    assert ds.PixelData == struct.pack(">6h", -5, 0, 1, 2047, -2048, 0x0102)
    assert ds[0x00660040].value == struct.pack(">2L", 1, 0x01020304)
    assert ds.ReferencedImageSequence[0][0x00281201].value == struct.pack(
        ">4H", 0, 1, 0x0102, 0xFFFF)


def test_deflated_output_is_raw_deflate() -> None:
    out = convert(encode(rich_dataset(), IMPLICIT), IMPLICIT, DEFLATED)
    inflated = zlib.decompress(out, -zlib.MAX_WBITS)
    assert read_dataset(DicomBytesIO(inflated), False, True).PatientID == "ABC"


def test_group_lengths_are_dropped() -> None:
    raw = (struct.pack("<HHL", 0x0010, 0x0000, 4) + struct.pack("<L", 10)
           + struct.pack("<HHL", 0x0010, 0x0020, 2) + b"ID")
    out = decode(convert(raw, IMPLICIT, EXPLICIT), EXPLICIT)
    assert 0x00100000 not in out and out.PatientID == "ID"


# --- choosing and refusing ------------------------------------------------------------------


def test_choose_syntax_prefers_stored_then_explicit_then_implicit() -> None:
    assert choose_syntax(IMPLICIT, [EXPLICIT, IMPLICIT]) == IMPLICIT
    assert choose_syntax(DEFLATED, [IMPLICIT, BIG, EXPLICIT]) == EXPLICIT
    assert choose_syntax(EXPLICIT, [BIG, IMPLICIT]) == IMPLICIT
    assert choose_syntax(EXPLICIT, [BIG]) == BIG
    assert choose_syntax(EXPLICIT, [JPEG_BASELINE_8BIT]) is None
    assert choose_syntax(MPEG2_MPML, [EXPLICIT, IMPLICIT]) is None


@pytest.mark.parametrize(("data", "src", "dst", "words"), [
    (b"", EXPLICIT, JPEG_BASELINE_8BIT, "only native syntaxes are targets"),
    (b"", MPEG2_MPML, EXPLICIT, "no pixel data decoder exists"),
    (b"\x00not deflate at all", DEFLATED, EXPLICIT, "Deflated data set is corrupt"),
    (b"", IMPLICIT, EXPLICIT, "is empty"),
    (struct.pack("<HH", 0x0010, 0x0010) + b"PN" + struct.pack("<H", 40) + b"short",
     EXPLICIT, IMPLICIT, "cannot"),
])
def test_refusals_are_one_line(data: bytes, src: str, dst: str, words: str) -> None:
    with pytest.raises(TranscodeError) as info:
        convert(data, src, dst)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_deflate_bomb_is_capped() -> None:
    bomb = encode(rich_dataset(), EXPLICIT) + struct.pack("<HH", 0x0042, 0x0011) \
        + b"OB\x00\x00" + struct.pack("<L", 1 << 20) + bytes(1 << 20)
    packed = zlib.compress(bomb)[2:-4]
    with pytest.raises(TranscodeError, match="inflates beyond 65536 bytes"):
        convert(packed, DEFLATED, EXPLICIT, max_inflated=65536)


def test_missing_decoder_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom.pixels

    class Unavailable:
        is_available = False

    transcode.decoder_missing.cache_clear()
    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Unavailable())
    try:
        reason = decoder_missing(JPEG_2000)
        assert reason is not None and "reinstall minipacs" in reason and "JPEG 2000" in reason
        assert not can_convert(JPEG_2000, EXPLICIT)
        with pytest.raises(TranscodeError, match="no decoder installed"):
            convert(b"", JPEG_2000, EXPLICIT)
    finally:
        transcode.decoder_missing.cache_clear()


# --- decompression --------------------------------------------------------------------------


def pydicom_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)  # shipped with pydicom: never downloaded
    if path is None:
        pytest.skip(f"pydicom's test file {name} is not installed")
    return Path(str(path))


@pytest.mark.parametrize(("name", "ts", "lossy"), [
    ("SC_rgb_jpeg_dcmtk.dcm", JPEG_BASELINE_8BIT, "01"),
    ("JPEG2000.dcm", JPEG_2000, "01"),
    ("MR_small_RLE.dcm", RLE_LOSSLESS, None),
    ("SC_rgb_rle.dcm", RLE_LOSSLESS, None),
])
@pytest.mark.parametrize("dst", [EXPLICIT, IMPLICIT, BIG])
def test_decompressed_pixels_equal_pydicoms_decode(name: str, ts: str, lossy: str | None,
                                                   dst: str) -> None:
    missing = decoder_missing(ts)
    if missing is not None:
        pytest.skip(missing)
    path = pydicom_file(name)
    reference = dcmread(path)
    assert reference.file_meta.TransferSyntaxUID == ts
    expected = reference.pixel_array
    out = decode(convert(dataset_bytes(path), ts, dst), dst)
    out.file_meta = FileMetaDataset()
    out.file_meta.TransferSyntaxUID = dst
    assert (out.pixel_array == expected).all()
    assert out.SOPInstanceUID == reference.SOPInstanceUID
    assert out.get("LossyImageCompression") == lossy
    assert 0x7FE00001 not in out  # no Extended Offset Table with native pixel data
    if reference.SamplesPerPixel == 3:
        assert out.PhotometricInterpretation == "RGB" and out.PlanarConfiguration == 0
    else:
        assert out.PhotometricInterpretation == reference.PhotometricInterpretation
    if dst != IMPLICIT:
        want = "OB" if reference.BitsAllocated <= 8 else "OW"
        assert str(out["PixelData"].VR) == want
    assert len(out.PixelData) == expected.nbytes + expected.nbytes % 2


def test_jpeg_baseline_without_lossy_flag_gets_it() -> None:
    if decoder_missing(JPEG_BASELINE_8BIT) is not None:
        pytest.skip(str(decoder_missing(JPEG_BASELINE_8BIT)))
    path = pydicom_file("SC_rgb_jpeg_dcmtk.dcm")
    ds = dcmread(path)
    del ds.LossyImageCompression
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    out = decode(convert(fp.getvalue(), JPEG_BASELINE_8BIT, EXPLICIT), EXPLICIT)
    assert out.LossyImageCompression == "01"  # PS3.3 C.7.6.1.1.5
    assert out.LossyImageCompressionMethod == "ISO_10918_1"


def test_compressed_data_set_without_pixel_data_is_re_encoded_only() -> None:
    if decoder_missing(RLE_LOSSLESS) is not None:
        pytest.skip(str(decoder_missing(RLE_LOSSLESS)))
    ds = Dataset()
    ds.PatientID = "NOPIX"
    out = decode(convert(encode(ds, EXPLICIT), RLE_LOSSLESS, IMPLICIT), IMPLICIT)
    assert out.PatientID == "NOPIX"


# --- streamed conversion: bounded pieces, large values copied -----------------------------


def with_big_pixels(size: int) -> Dataset:
    ds = rich_dataset()
    ds.Rows, ds.Columns = size // 2048, 1024
    ds.PixelData = bytes(range(256)) * (size // 256)
    ds["PixelData"].VR = "OW"
    return ds


@pytest.mark.parametrize("dst", NATIVE_SYNTAXES)
@pytest.mark.parametrize("src", NATIVE_SYNTAXES)
def test_large_values_stream_between_every_native_pair(src: str, dst: str) -> None:
    big = with_big_pixels(3 * MIB)  # over DEFER_SIZE: copied in pieces, swapped by word
    reference = canonical_of(encode(big, EXPLICIT), EXPLICIT)
    with open_converted(io.BytesIO(encode(big, src)), src, dst) as stream:
        pieces = list(iter(lambda: stream.read(MIB), b""))
    assert all(len(piece) <= MIB for piece in pieces)
    assert canonical_of(b"".join(pieces), dst) == reference


def test_odd_length_copied_value_is_padded() -> None:
    ds = rich_dataset()
    ds.EncapsulatedDocument = b"x" * (DEFER_SIZE + 1)
    out = convert(encode(ds, IMPLICIT), IMPLICIT, EXPLICIT)
    value = element_bytes(out, 0x00420011)
    assert value == b"x" * (DEFER_SIZE + 1) + b"\0"


def test_deflated_bomb_converts_in_bounded_memory() -> None:
    import tracemalloc

    ds = rich_dataset()
    bomb = deflate_bomb(ds, 96 * MIB, nested=False)  # 96 MiB of zeros, ~100 KiB stored
    tracemalloc.start()
    try:
        with open_converted(io.BytesIO(bomb), DEFLATED, EXPLICIT) as stream:
            total = sum(len(piece) for piece in iter(lambda: stream.read(MIB), b""))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 96 * MIB
    assert peak < 16 * MIB, f"peak {peak >> 20} MiB"


@pytest.mark.parametrize(("bomb", "words"), [
    (lambda: deflate_bomb(rich_dataset(), 80 * MIB, nested=True), "holds more than"),
    (lambda: deflate_bomb(rich_dataset(), 8 * MIB, nested=False)[:-2000], "ends inside"),
], ids=["nested-value-over-the-held-limit", "cut-inside-a-copied-value"])
def test_stream_refusals_come_before_the_first_byte(bomb: Any, words: str) -> None:
    with pytest.raises(TranscodeError, match=words):
        open_converted(io.BytesIO(bomb()), DEFLATED, EXPLICIT)
