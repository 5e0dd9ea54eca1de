"""The services' one data-set codec: bounded inflate (whole and streamed), deflate, decode."""

from __future__ import annotations

import io
import zlib

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from minipacs.services.dataset_codec import (
    STEP,
    DataSetCut,
    Deflater,
    InflateError,
    InflatingReader,
    deflate,
    encode_dataset_bytes,
    inflate,
    inflated_size,
    plain_bytes,
    read_plain,
)

MIB = 1 << 20


def raw_deflate(data: bytes) -> bytes:
    return zlib.compress(data)[2:-4]


def test_inflate_is_bounded_and_says_why() -> None:
    packed = raw_deflate(bytes(4 * MIB))
    assert inflate(packed, 4 * MIB) == bytes(4 * MIB)
    with pytest.raises(InflateError, match=f"inflates past {MIB} bytes") as info:
        inflate(packed, MIB)
    assert info.value.too_large
    with pytest.raises(InflateError, match="is corrupt") as corrupt:
        inflate(b"\x07not deflate", MIB)
    assert not corrupt.value.too_large


def test_streamed_inflate_counts_and_reads_in_steps() -> None:
    data = bytes(range(256)) * (3 * MIB // 256) + b"tail"
    packed = raw_deflate(data)
    assert inflated_size(io.BytesIO(packed), len(data)) == len(data)
    with pytest.raises(InflateError, match="inflates past"):
        inflated_size(io.BytesIO(packed), len(data) - 1)
    reader = InflatingReader(io.BytesIO(packed), len(data))
    assert reader.read(10) == data[:10]
    reader.seek(2 * MIB)  # forward: inflated and dropped
    assert reader.read(STEP) == data[2 * MIB:2 * MIB + STEP]
    reader.seek(-100, io.SEEK_CUR)  # a short look-back stays in the window
    assert reader.read(100) == data[2 * MIB + STEP - 100:2 * MIB + STEP]
    with pytest.raises(OSError, match="cannot seek back"):
        reader.seek(0)
    assert reader.read() == data[2 * MIB + STEP:]
    with pytest.raises(InflateError, match="inflates past"):
        InflatingReader(io.BytesIO(packed), MIB).seek(2 * MIB)


def test_deflate_pads_to_even_length_and_round_trips() -> None:
    for size in range(0, 64):
        data = bytes(range(size))
        out = deflate(data)
        assert len(out) % 2 == 0
        assert zlib.decompressobj(-zlib.MAX_WBITS).decompress(out) == data
    packer = Deflater()
    pieces = packer.compress(b"a" * 1000) + packer.compress(b"b" * 1000) + packer.finish()
    assert len(pieces) % 2 == 0 and inflate(pieces, 4000) == b"a" * 1000 + b"b" * 1000


def test_encode_and_decode_in_a_transfer_syntax() -> None:
    ds = Dataset()
    ds.PatientID = "ABC"
    ds.StudyInstanceUID = "1.2.3"
    packed = encode_dataset_bytes(ds, DeflatedExplicitVRLittleEndian)
    plain = plain_bytes(packed, DeflatedExplicitVRLittleEndian, limit=MIB)
    assert plain == encode_dataset_bytes(ds, ExplicitVRLittleEndian)
    assert read_plain(plain, ExplicitVRLittleEndian).PatientID == "ABC"
    with pytest.raises(DataSetCut, match="ends inside an element"):
        read_plain(plain[:-3], ExplicitVRLittleEndian, strict=True)
    with pytest.raises(ValueError):
        plain_bytes(packed, "1.2.3.4", limit=MIB)
