"""Time per encode/decode of DIMSE command sets: minipacs' table codec vs pydicom.

Run from the repository root (or with minipacs installed):
``PYTHONPATH=. python benchmarks/command_codec.py [--loops N]``. Prints microseconds per
operation for a C-STORE-RQ and a C-FIND-RSP command set, side by side. For pydicom, "encode"
is building the group-0000 Dataset and writing it implicit VR little endian (what a
pydicom-based DIMSE layer does per message); "write only" writes an already built Dataset;
"decode" reads the bytes back and touches every value (pydicom parses values lazily, so
reading alone would flatter it).
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from functools import partial
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from minipacs.proto.command_codec import decode_command, encode_command
from minipacs.proto.dimse import CFindRSP, CStoreRQ, DimseMessage, Priority
from minipacs.proto.status import Status

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
INSTANCE_UID = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012"

STORE_RQ = CStoreRQ(
    message_id=1,
    affected_sop_class_uid=CT_IMAGE_STORAGE,
    affected_sop_instance_uid=INSTANCE_UID,
    priority=Priority.MEDIUM,
    move_originator_ae_title="MOVESCU",
    move_originator_message_id=7,
)
FIND_RSP = CFindRSP(
    message_id_being_responded_to=1,
    status=Status.PENDING,
    affected_sop_class_uid=STUDY_ROOT_FIND,
    has_dataset=True,
)


def pydicom_dataset(msg: DimseMessage) -> Dataset:
    """The same command set as a pydicom Dataset (as a pydicom-based DIMSE layer builds it)."""
    ds = Dataset()
    ds.CommandField = int(msg.command_field)
    ds.CommandDataSetType = 0x0000 if msg.has_dataset else 0x0101
    if isinstance(msg, CStoreRQ):
        ds.AffectedSOPClassUID = msg.affected_sop_class_uid
        ds.MessageID = msg.message_id
        ds.Priority = int(msg.priority)
        ds.AffectedSOPInstanceUID = msg.affected_sop_instance_uid
        ds.MoveOriginatorApplicationEntityTitle = msg.move_originator_ae_title
        ds.MoveOriginatorMessageID = msg.move_originator_message_id
    elif isinstance(msg, CFindRSP):
        ds.AffectedSOPClassUID = msg.affected_sop_class_uid
        ds.MessageIDBeingRespondedTo = msg.message_id_being_responded_to
        ds.Status = int(msg.status)
    return ds


def pydicom_encode(msg: DimseMessage) -> bytes:
    """Build and write with pydicom; the group length is prepended, not found by re-writing."""
    body = pydicom_write(pydicom_dataset(msg))
    head = Dataset()
    head.CommandGroupLength = len(body)
    return pydicom_write(head) + body


def pydicom_write(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    return fp.getvalue()


def pydicom_read(data: bytes) -> list[object]:
    ds = read_dataset(BytesIO(data), is_implicit_VR=True, is_little_endian=True)
    return [elem.value for elem in ds]


def per_call_us(func: Callable[[], object], loops: int) -> float:
    """Best of 5 repeats of ``loops`` calls, in microseconds per call."""
    return min(timeit.repeat(func, number=loops, repeat=5)) / loops * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=2000, help="calls per timing repeat")
    loops = parser.parse_args().loops

    print(f"{'command set':<12} {'operation':<20} {'minipacs µs':>12} {'pydicom µs':>11} {'x':>6}")
    for name, msg in (("C-STORE-RQ", STORE_RQ), ("C-FIND-RSP", FIND_RSP)):
        ours = encode_command(msg)
        theirs = pydicom_encode(msg)
        assert ours == theirs, f"{name}: encodings differ"
        ds = read_dataset(BytesIO(theirs), is_implicit_VR=True, is_little_endian=True)
        assert decode_command(theirs) == msg
        rows = (
            ("encode", partial(encode_command, msg), partial(pydicom_encode, msg)),
            ("encode (write only)", partial(encode_command, msg), partial(pydicom_write, ds)),
            ("decode", partial(decode_command, ours), partial(pydicom_read, ours)),
        )
        for operation, mine, peer in rows:
            a, b = per_call_us(mine, loops), per_call_us(peer, loops)
            print(f"{name:<12} {operation:<20} {a:>12.2f} {b:>11.2f} {b / a:>6.1f}")


if __name__ == "__main__":
    main()
