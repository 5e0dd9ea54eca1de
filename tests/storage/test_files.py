"""Finding and reading the Part 10 files the C-STORE SCU sends, on real temporary folders."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import MediaStorageDirectoryStorage

from minipacs.storage.files import (
    DicomFile,
    NotDicom,
    UnreadableDicom,
    open_dataset,
    read_dicom_file,
    scan,
    walk,
)
from tests.index.dicomdata import CT_IMAGE_STORAGE, EXPLICIT_LE, IMPLICIT_LE, make_dataset

PREAMBLE = b"\0" * 128 + b"DICM"


def write_part10(path: Path, ds: Dataset, ts: str = EXPLICIT_LE) -> Path:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ts
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def meta_element(group_element: tuple[int, int], vr: bytes, value: bytes) -> bytes:
    """One Explicit VR Little Endian element with a 2-byte length (PS3.5 §7.1.2)."""
    return struct.pack("<HH", *group_element) + vr + struct.pack("<H", len(value)) + value


def test_reads_meta_and_data_set_offset(tmp_path: Path) -> None:
    for n, ts in enumerate((EXPLICIT_LE, IMPLICIT_LE), start=1):
        path = write_part10(tmp_path / f"{n}.dcm", make_dataset(n), ts)
        found = read_dicom_file(path)
        assert (found.sop_class_uid, found.sop_instance_uid, found.transfer_syntax_uid) == (
            CT_IMAGE_STORAGE, make_dataset(n).SOPInstanceUID, ts)
        raw = path.read_bytes()
        group_length = struct.unpack_from("<I", raw, len(PREAMBLE) + 8)[0]
        assert found.dataset_offset == len(PREAMBLE) + 12 + group_length
        assert found.dataset_size == len(raw) - found.dataset_offset
        with open_dataset(found) as fp:
            ds = read_dataset(fp, is_implicit_VR=ts == IMPLICIT_LE, is_little_endian=True)
        assert ds.SOPInstanceUID == found.sop_instance_uid
        assert ds.PatientName == "Doe^John"


def test_meta_without_group_length_is_read_to_its_end(tmp_path: Path) -> None:
    """The offset comes from where group 0002 ends, not from (0002,0000) alone."""
    body = (meta_element((2, 2), b"UI", b"1.2.840.10008.5.1.4.1.1.7\0")
            + meta_element((2, 3), b"UI", b"1.2.3.4\0")
            + meta_element((2, 0x10), b"UI", b"1.2.840.10008.1.2\0"))
    data_set = struct.pack("<HHI", 0x0008, 0x0018, 8) + b"1.2.3.4\0"
    path = tmp_path / "x.dcm"
    path.write_bytes(PREAMBLE + body + data_set)
    found = read_dicom_file(path)
    assert found.dataset_offset == len(PREAMBLE) + len(body)
    assert found.transfer_syntax_uid == "1.2.840.10008.1.2"  # NUL padding removed
    assert found.sop_instance_uid == "1.2.3.4"


def test_not_dicom_and_unreadable(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello " * 100)
    (tmp_path / "short").write_bytes(b"DICM")
    with pytest.raises(NotDicom, match="no DICM prefix"):
        read_dicom_file(tmp_path / "notes.txt")
    with pytest.raises(NotDicom):
        read_dicom_file(tmp_path / "short")

    no_ts = tmp_path / "no-ts.dcm"
    no_ts.write_bytes(PREAMBLE + meta_element((2, 2), b"UI", b"1.2.3\0")
                      + meta_element((2, 3), b"UI", b"1.2.4\0") + b"\x08\x00\x18\x00")
    with pytest.raises(UnreadableDicom, match=r"TransferSyntaxUID \(0002,0010\)"):
        read_dicom_file(no_ts)
    header_only = tmp_path / "header-only.dcm"
    header_only.write_bytes(PREAMBLE + meta_element((2, 2), b"UI", b"1.2.3\0")
                            + meta_element((2, 3), b"UI", b"1.2.4\0")
                            + meta_element((2, 0x10), b"UI", b"1.2.840.10008.1.2\0"))
    with pytest.raises(UnreadableDicom, match="no data set"):
        read_dicom_file(header_only)
    bad_uid = tmp_path / "bad-uid.dcm"
    bad_uid.write_bytes(PREAMBLE + meta_element((2, 2), b"UI", "1.2.é\0".encode("latin-1"))
                        + meta_element((2, 3), b"UI", b"1.2.4\0")
                        + meta_element((2, 0x10), b"UI", b"1.2.840.10008.1.2\0")
                        + b"\x08\x00\x18\x00")
    with pytest.raises(UnreadableDicom, match=r"SOPClassUID \(0002,0002\) is not a UID"):
        read_dicom_file(bad_uid)
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(UnreadableDicom, match="cannot read: No such file"):
        read_dicom_file(tmp_path / "dangling")


def test_dicomdir_is_skipped(tmp_path: Path) -> None:
    ds = make_dataset(1)
    ds.SOPClassUID = MediaStorageDirectoryStorage
    path = write_part10(tmp_path / "DICOMDIR", ds)
    with pytest.raises(NotDicom, match="DICOMDIR"):
        read_dicom_file(path)


def test_scan_walks_nested_folders_sorted_and_once(tmp_path: Path) -> None:
    top = tmp_path / "in"
    a = write_part10(top / "b" / "deeper" / "a.dcm", make_dataset(1))
    b = write_part10(top / "a" / "z.dcm", make_dataset(2), IMPLICIT_LE)
    c = write_part10(top / "a" / "b.dcm", make_dataset(3))
    (top / "a" / "readme.txt").write_text("not DICOM")
    (top / "b" / "broken.dcm").write_bytes(PREAMBLE + b"\x02\x00\x10\x00UI\xff")
    (top / "a" / "link.dcm").symlink_to(c)  # the same file again
    (top / "loop").symlink_to(top, target_is_directory=True)  # not followed
    outside = write_part10(tmp_path / "single.dcm", make_dataset(4))

    result = scan([top, outside, c])
    assert [f.path for f in result.files] == [c, b, a, outside]
    assert all(isinstance(f, DicomFile) for f in result.files)
    assert [(p.path.name, p.reason) for p in result.skipped] == [
        ("readme.txt", "not a DICOM file (no DICM prefix)")]
    assert [p.path.name for p in result.unreadable] == ["broken.dcm"]
    assert result.unreadable[0].reason == (
        "no MediaStorageSOPClassUID (0002,0002) in the file meta information")
    assert list(walk([top / "a" / "z.dcm"])) == [b]
