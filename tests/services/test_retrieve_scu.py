"""C-MOVE / C-GET SCU (services/retrieve_scu.py) against a scripted in-memory peer.

The peer plays the SCP's part: it sends C-STORE sub-operations on the association, waits for
each answer, then pending and final responses; what the SCU sends back is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from minipacs.ports import AssociationInfo, QueryLevel, Reply, Request
from minipacs.proto.dimse import (
    CCancelRQ,
    CEchoRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CStoreRQ,
    DimseMessage,
)
from minipacs.proto.negotiation import AcceptedContext, Negotiated
from minipacs.proto.sop import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    STUDY_ROOT_QR_GET,
    STUDY_ROOT_QR_MOVE,
    VERIFICATION,
)
from minipacs.proto.status import Status
from minipacs.services.find_scu import decode_answer, parse_key
from minipacs.services.retrieve_scu import RetrieveProgress, check_keys, get, move
from minipacs.storage.folder import FolderWriter

CT: Final = "1.2.840.10008.5.1.4.1.1.2"
MR: Final = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT: Final = EXPLICIT_VR_LITTLE_ENDIAN
KEYS: Final = [parse_key("StudyInstanceUID=1.2.3")]
CONTEXTS: Final = {
    1: AcceptedContext(1, STUDY_ROOT_QR_GET, EXPLICIT),
    3: AcceptedContext(3, CT, EXPLICIT, scu_role=False, scp_role=True),
    5: AcceptedContext(5, MR, EXPLICIT),  # the SCP role was not granted
    7: AcceptedContext(7, VERIFICATION, EXPLICIT),
    9: AcceptedContext(9, STUDY_ROOT_QR_MOVE, EXPLICIT),
}


class Chunks:
    """A `DataStream` over fixed fragments."""

    def __init__(self, data: bytes) -> None:
        self._parts = [data[:7], data[7:]]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self._parts:
            yield self._parts.pop(0)

    async def read_all(self, limit: int) -> bytes:
        return b"".join([chunk async for chunk in self])

    async def drain(self) -> None:
        self._parts.clear()


@dataclass
class ScriptedPeer:
    """A `Channel` whose peer sends `incoming` requests, then its final response."""

    incoming: Sequence[tuple[int, DimseMessage, bytes | None]] = ()
    final: DimseMessage | None = None
    final_dataset: bytes | None = None
    hang: bool = False  # never send the final response
    wait_for_cancel: bool = False
    sent: list[DimseMessage] = field(default_factory=list)
    request_data: bytes | None = None
    _answers: asyncio.Queue[DimseMessage] = field(default_factory=asyncio.Queue)
    _requests: asyncio.Queue[Request] = field(default_factory=asyncio.Queue)
    _cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def info(self) -> AssociationInfo:
        return AssociationInfo("ME", "PEER", "127.0.0.1", 104,
                               Negotiated(MappingProxyType(CONTEXTS), 0))

    def next_message_id(self) -> int:
        return 7

    async def send(self, context_id: int, message: DimseMessage,
                   dataset: bytes | AsyncIterable[bytes] | None = None) -> None:
        self.sent.append(message)
        if isinstance(message, CCancelRQ):
            self._cancelled.set()
        else:
            await self._answers.put(message)

    async def requests(self) -> AsyncIterator[Request]:
        while True:
            yield await self._requests.get()

    async def request(self, context_id: int, message: DimseMessage,
                      dataset: bytes | AsyncIterable[bytes] | None = None
                      ) -> AsyncIterator[Reply]:
        assert isinstance(dataset, bytes)
        self.request_data = dataset
        rsp = CMoveRSP if isinstance(message, CMoveRQ) else CGetRSP
        for n, (ctx, rq, data) in enumerate(self.incoming):
            stream = Chunks(data) if data is not None else None
            await self._requests.put(Request(CONTEXTS[ctx], rq, stream))
            await self._answers.get()
            yield Reply(rsp(message_id_being_responded_to=7, status=Status.PENDING,
                            number_of_remaining_suboperations=len(self.incoming) - n - 1,
                            number_of_completed_suboperations=n + 1,
                            number_of_failed_suboperations=0,
                            number_of_warning_suboperations=0))
        if self.wait_for_cancel:
            await self._cancelled.wait()
        if self.hang:
            await asyncio.Event().wait()
        assert self.final is not None
        yield Reply(self.final, self.final_dataset)


def store(uid: str, sop_class: str = CT) -> CStoreRQ:
    return CStoreRQ(message_id=100, affected_sop_class_uid=sop_class,
                    affected_sop_instance_uid=uid)


def failed_list(*uids: str) -> bytes:
    ds = Dataset()
    ds.FailedSOPInstanceUIDList = list(uids)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def folder(path: Path) -> FolderWriter:
    writer = FolderWriter(path, implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                          implementation_version_name=IMPLEMENTATION_VERSION_NAME)
    writer.prepare()
    return writer


DATA: Final = b"\x08\x00\x18\x00UI\x06\x001.2.3\x00" + bytes(range(200))


async def test_get_answers_each_request_by_what_it_is(tmp_path: Path) -> None:
    (tmp_path / "1.9.dcm").mkdir()  # that instance cannot be written
    peer = ScriptedPeer(incoming=[
        (3, store("1.1"), DATA),
        (3, store("../evil"), DATA),
        (5, store("1.2", MR), DATA),
        (7, CEchoRQ(message_id=101, affected_sop_class_uid=VERIFICATION), None),
        (3, store("1.9"), DATA),
    ], final=CGetRSP(message_id_being_responded_to=7, status=0xB000,
                     number_of_completed_suboperations=1, number_of_failed_suboperations=4,
                     number_of_warning_suboperations=0),
        final_dataset=failed_list("1.2", "1.9"))
    seen: list[RetrieveProgress] = []
    outcome = await get(peer, STUDY_ROOT_QR_GET, QueryLevel.STUDY, KEYS, folder(tmp_path),
                        cancel=asyncio.Event(), timeout=5, progress=seen.append)
    answers = [(type(m).__name__, m.status, m.error_comment) for m in peer.sent]  # type: ignore[union-attr]
    assert [a[:2] for a in answers] == [("CStoreRSP", 0x0000), ("CStoreRSP", 0xC000),
                                        ("CStoreRSP", 0x0122), ("CEchoRSP", 0x0211),
                                        ("CStoreRSP", 0xA700)]
    assert "not a valid SOP Instance UID" in (answers[1][2] or "")
    assert "cannot finish" in (answers[4][2] or "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.1.dcm", "1.9.dcm"]
    assert (tmp_path / "1.1.dcm").read_bytes().endswith(DATA)
    assert (outcome.status, outcome.completed, outcome.failed, outcome.remaining) == \
        (0xB000, 1, 4, None)
    assert outcome.failed_uids == ("1.2", "1.9")
    assert (outcome.files, outcome.bytes_written, outcome.write_failures) == (1, len(DATA), 2)
    assert not outcome.ok and outcome.error is None
    assert seen[-1].completed == 5 and seen[-1].remaining == 0 and seen[-1].files == 1
    identifier = decode_answer(peer.request_data or b"", EXPLICIT)
    assert (identifier.QueryRetrieveLevel, identifier.StudyInstanceUID) == ("STUDY", "1.2.3")


async def test_move_sends_destination_and_cancels_once() -> None:
    peer = ScriptedPeer(
        incoming=[], wait_for_cancel=True,
        final=CMoveRSP(message_id_being_responded_to=7, status=Status.CANCEL,
                       number_of_remaining_suboperations=9,
                       number_of_completed_suboperations=1,
                       number_of_failed_suboperations=0, number_of_warning_suboperations=0))
    cancel = asyncio.Event()
    cancel.set()  # before the request: the C-CANCEL still follows it
    outcome = await move(peer, STUDY_ROOT_QR_MOVE, QueryLevel.STUDY, KEYS, "DEST",
                         cancel=cancel, timeout=5)
    assert [type(m).__name__ for m in peer.sent] == ["CCancelRQ"]
    assert peer.sent[0].message_id_being_responded_to == 7  # type: ignore[union-attr]
    assert outcome.cancel_sent and outcome.status == Status.CANCEL
    assert (outcome.completed, outcome.remaining) == (1, 9)
    assert not outcome.ok


async def test_silence_is_a_timeout_with_the_counts_so_far(tmp_path: Path) -> None:
    peer = ScriptedPeer(incoming=[(3, store("1.1"), DATA)], hang=True)
    outcome = await get(peer, STUDY_ROOT_QR_GET, QueryLevel.STUDY, KEYS, folder(tmp_path),
                        cancel=asyncio.Event(), timeout=0.2)
    assert outcome.status is None and outcome.error == "no response for 0.2 s"
    assert (outcome.completed, outcome.remaining, outcome.files) == (1, 0, 1)


async def test_peer_without_the_qr_class_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="did not accept"):
        await move(ScriptedPeer(), "1.2.840.10008.5.1.4.1.2.1.2", QueryLevel.STUDY, KEYS, "D",
                   cancel=asyncio.Event(), timeout=1)


@pytest.mark.parametrize(("level", "keys", "words"), [
    (QueryLevel.STUDY, ["StudyInstanceUID"], "needs =VALUE"),
    (QueryLevel.STUDY, ["StudyInstanceUID="], "needs -k StudyInstanceUID"),
    (QueryLevel.SERIES, ["StudyInstanceUID=1"], "needs -k SeriesInstanceUID"),
    (QueryLevel.PATIENT, ["PatientName=X"], "needs -k PatientID"),
])
def test_keys_must_name_what_to_retrieve(level: QueryLevel, keys: list[str],
                                         words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_keys(level, [parse_key(k) for k in keys])
    check_keys(QueryLevel.IMAGE, [parse_key("SOPInstanceUID=1.2\\1.3")])
