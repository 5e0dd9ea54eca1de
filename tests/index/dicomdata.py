"""Small deterministic DICOM test data, made with pydicom (nothing downloaded)."""

from __future__ import annotations

import io
import zlib
from datetime import UTC, datetime

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from minipacs.index.extract import read_attributes
from minipacs.ports import InstanceAttributes, InstanceRecord, StoredFile

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
ROOT = "1.2.826.0.1.3680043.10.999"


def uid(*parts: int | str) -> str:
    return ".".join([ROOT, *map(str, parts)])


def make_dataset(
    n: int = 1,
    *,
    study: int = 1,
    series: int = 1,
    patient_id: str = "PID1",
    issuer: str | None = None,
    name: str = "Doe^John",
    charset: str | list[str] | None = None,
) -> Dataset:
    """A CT-like header (no pixels) for instance `n` of `series` of `study`."""
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = uid(study, series, n)
    ds.StudyDate = "20240102"
    ds.StudyTime = "1230"
    ds.AccessionNumber = f"ACC{study}"
    ds.Modality = "CT"
    ds.ReferringPhysicianName = "Welby^Marcus"
    ds.StudyDescription = "Chest"
    ds.SeriesDescription = f"Series {series}"
    ds.PatientName = name
    ds.PatientID = patient_id
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.PatientAge = "054Y"
    ds.StudyInstanceUID = uid(study)
    ds.SeriesInstanceUID = uid(study, series)
    ds.StudyID = str(study)
    ds.SeriesNumber = series
    ds.InstanceNumber = n
    ds.ContentDate = "20240102"
    ds.ContentTime = "123456.5"
    return ds


def encode(ds: Dataset, transfer_syntax: str = EXPLICIT_LE) -> bytes:
    """The data set as a C-STORE peer would send it, in `transfer_syntax`."""
    ts = UID(transfer_syntax)
    deflated = transfer_syntax == DEFLATED
    fp = DicomBytesIO()
    fp.is_little_endian = ts.is_little_endian
    fp.is_implicit_VR = ts.is_implicit_VR
    write_dataset(fp, ds)
    data = fp.getvalue()
    if deflated:
        return deflate(data)
    return data


def deflate(data: bytes) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return z.compress(data) + z.flush()


def attributes(ds: Dataset, transfer_syntax: str = EXPLICIT_LE) -> InstanceAttributes:
    return read_attributes(io.BytesIO(encode(ds, transfer_syntax)), transfer_syntax)


def record(
    attrs: InstanceAttributes, key: str | None = None, *, calling: str = "MODALITY"
) -> InstanceRecord:
    """An index record for `attrs`, with a made-up file."""
    name = (key or attrs.sop_instance_uid).replace(".", "")[-32:].rjust(32, "0")
    stored = StoredFile(key or f"{name[:2]}/{name[2:4]}/{name}.dcm", 1234, "sha256:00", 300)
    return InstanceRecord(attrs, stored, EXPLICIT_LE, calling, "MINIPACS", datetime.now(UTC))


def sequence_item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def other_ids(*pairs: tuple[str, str]) -> Sequence:
    return Sequence(sequence_item(PatientID=pid, IssuerOfPatientID=iss) for pid, iss in pairs)
