"""C-STORE of instances whose UIDs break the one grammar (issue 13 item 5): refused, never stored.

PS3.5 §9.1 (proto/uid.py): digits and single periods, at most 64 characters. A C-STORE whose
Affected SOP Instance UID, or whose data set's SOP Instance, SOP Class, Study or Series
Instance UID, breaks it is answered 0xC000 (PS3.4 B.2.3 Error: Cannot understand) with an
Error Comment naming the UID, and leaves no file and no index row; the association goes on.
Sent by our own client over a real socket (pynetdicom checks UIDs before sending).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

import pytest
from pydicom import config as pydicom_config
from pydicom.uid import ExplicitVRLittleEndian

from minipacs.net.client import association
from minipacs.proto.dimse import CStoreRQ, CStoreRSP
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.status import Status
from tests.interop.dicomfiles import base_dataset, encode_dataset
from tests.interop.storecheck import SERVER_AE, assert_nothing_left, store_server
from tests.support import LOOPBACK, WAIT

HOSTILE: Final = ["../../evil", "..", "/tmp/abs", "1.2\n3", "1.2\x1b[2J", "1.2\x003", "A" * 64,
                  "1.2.", "1..2"]
TOO_LONG: Final = "1." + "2" * 70  # > 64 characters: only in the data set (the command's
# UI field cannot carry it back in a response)


async def store(port: int, cases: list[tuple[str, dict[str, str]]]
                ) -> list[tuple[int, str | None]]:
    """C-STORE a CT data set per case (the command's UID, keyword → value in the data set)."""
    valid = base_dataset("ct", 90)
    sop_class = str(valid.SOPClassUID)
    rq = build_associate_rq("HOSTILE", SERVER_AE, [(sop_class, [ExplicitVRLittleEndian])])
    out = []
    async with association(LOOPBACK, port, rq, connect_timeout=WAIT,
                           artim_timeout=WAIT) as conn:
        (context,) = conn.info.negotiated.contexts.values()
        for command_uid, values in cases:
            ds = base_dataset("ct", 90)
            with pydicom_config.disable_value_validation():
                for keyword, value in values.items():
                    setattr(ds, keyword, value)
                data = encode_dataset(ds)
            message = CStoreRQ(message_id=conn.next_message_id(),
                               affected_sop_class_uid=sop_class,
                               affected_sop_instance_uid=command_uid)
            async with asyncio.timeout(WAIT):
                (reply,) = [r async for r in conn.request(context.context_id, message, data)]
            assert isinstance(reply.message, CStoreRSP)
            out.append((reply.message.status, reply.message.error_comment))
    return out


def cases() -> list[tuple[str, dict[str, str], str]]:
    """(command UID, data-set values, the UID the Error Comment names)."""
    valid_uid = str(base_dataset("ct", 90).SOPInstanceUID)
    out = [(uid, {"SOPInstanceUID": uid}, "Affected SOP Instance UID") for uid in HOSTILE]
    out += [(valid_uid, {"StudyInstanceUID": uid}, "Study Instance UID")
            for uid in ("../../evil", TOO_LONG)]
    out += [(valid_uid, {"SeriesInstanceUID": TOO_LONG}, "Series Instance UID"),
            (valid_uid, {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2/.."}, "SOP Class UID"),
            (valid_uid, {"SOPInstanceUID": TOO_LONG}, "SOP Instance UID")]
    return out


async def test_invalid_uids_are_refused_and_never_stored(tmp_path: Path) -> None:
    hostile = cases()
    valid = base_dataset("ct", 90)
    async with store_server(tmp_path) as server:
        answers = await store(server.port, [(uid, values) for uid, values, _ in hostile]
                              + [(str(valid.SOPInstanceUID), {})])
    # After the stop: released spool entries are reaped off the event loop, at the latest then.
    assert_nothing_left(server.root, server.db, keep=[str(valid.SOPInstanceUID)])
    *refused, last = answers
    assert last == (Status.SUCCESS, None)  # the association and the server went on
    for (uid, values, named), (status, comment) in zip(hostile, refused, strict=True):
        assert status == Status.CANNOT_UNDERSTAND, (uid, values, hex(status))
        assert comment == f"{named} is not a valid UID", (uid, values, comment)


@pytest.mark.parametrize("uid", ["1.02.3", "1.2.840.0010"], ids=["leading-zero", "vendor"])
async def test_leading_zero_uids_stay_accepted(tmp_path: Path, uid: str) -> None:
    # The documented policy (docs/conformance.md 3.1.5): real devices emit them.
    async with store_server(tmp_path) as server:
        (answer,) = await store(server.port, [(uid, {"SOPInstanceUID": uid})])
    assert_nothing_left(server.root, server.db, keep=[uid])
    assert answer == (Status.SUCCESS, None)
