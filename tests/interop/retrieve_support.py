"""Helpers for the C-MOVE/C-GET peer tests: pynetdicom destinations and requestors that record
every response on the wire, and a reader for DCMTK's `-d` dump of C-MOVE/C-GET responses.

The server fixtures and the standard data come from tests/interop/test_retrieve.py (imported,
not copied). pynetdicom is blocking: call the functions here through `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from minipacs.proto.sop import STUDY_ROOT_QR_GET, STUDY_ROOT_QR_MOVE
from minipacs.proto.status import Status
from tests.interop.test_retrieve import (
    CALLING,
    ROOT,
    SERVER_AE,
    Stored,
    assert_identical,
    ident,
    instance,
    populate,
    received,
    retrieve_log,
    retrieve_server,
    study_uid,
)
from tests.support import LOOPBACK, pynetdicom_ae

__all__ = [
    "CALLING",
    "NO_DATA_SET",
    "ROOT",
    "SERVER_AE",
    "Destination",
    "Response",
    "Retrieval",
    "Stored",
    "assert_counts",
    "assert_identical",
    "dcmtk_responses",
    "ident",
    "instance",
    "populate",
    "populate_chunked",
    "py_destination",
    "py_get",
    "py_move",
    "received",
    "retrieve_log",
    "retrieve_server",
    "study_uid",
]

NO_DATA_SET: Final = 0x0101  # Command Data Set Type: no data set follows (PS3.7 E.1-1)
CANCEL_MESSAGE_ID: Final = 7
UNCOMPRESSED: Final = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


async def populate_chunked(port: int, items: Sequence[tuple[Dataset, str]],
                           pairs_per_association: int = 64) -> dict[str, Stored]:
    """`populate` over several associations, each proposing at most that many pairs."""
    groups: list[list[tuple[Dataset, str]]] = [[]]
    seen: set[tuple[str, str]] = set()
    for ds, ts in items:
        key = (str(ds.SOPClassUID), ts)
        if key not in seen and len({(str(d.SOPClassUID), t) for d, t in groups[-1]} | {key}) \
                > pairs_per_association:
            groups.append([])
        seen.add(key)
        groups[-1].append((ds, ts))
    stored: dict[str, Stored] = {}
    for group in groups:
        stored.update(await populate(port, group))
    return stored


# --- responses as they were on the wire -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """One C-MOVE-RSP/C-GET-RSP: its command fields and whether a data set followed."""

    status: int
    remaining: int | None
    completed: int | None
    failed: int | None
    warning: int | None
    has_dataset: bool


def _response(command: Dataset) -> Response:
    def get(keyword: str) -> int | None:
        value = command.get(keyword)
        return None if value is None else int(value)

    return Response(int(command.Status), get("NumberOfRemainingSuboperations"),
                    get("NumberOfCompletedSuboperations"), get("NumberOfFailedSuboperations"),
                    get("NumberOfWarningSuboperations"),
                    int(command.CommandDataSetType) != NO_DATA_SET)


def assert_counts(responses: Sequence[Response], total: int) -> Response:
    """PS3.4 C.4.2.1.4-6: exact counts in every response; returns the final one.

    Pending: Remaining strictly decreasing, Completed+Failed+Warning+Remaining == total, no
    data set. Final: no Remaining (unless Cancel), Completed+Failed+Warning == total unless
    cancelled.
    """
    *pendings, final = responses
    last = total + 1
    for rsp in pendings:
        assert rsp.status == Status.PENDING, rsp
        assert rsp.remaining is not None and rsp.remaining < last, (rsp, last)
        last = rsp.remaining
        assert (rsp.completed or 0) + (rsp.failed or 0) + (rsp.warning or 0) \
            + rsp.remaining == total, rsp
        assert not rsp.has_dataset, f"a pending response carried a data set: {rsp}"
    assert final.status != Status.PENDING
    if final.status == Status.CANCEL:
        assert final.remaining is not None, "Cancel must say how many remain (C.4.2.1.6)"
    else:
        assert final.remaining is None, f"Remaining in a final response: {final}"
        assert (final.completed or 0) + (final.failed or 0) + (final.warning or 0) == total
    return final


@dataclass
class Retrieval:
    """What a pynetdicom requestor saw: every response, the final identifier, stores."""

    responses: list[Response] = field(default_factory=list)
    final_identifier: Dataset | None = None
    stored: dict[str, bytes] = field(default_factory=dict)
    aborted: bool = False


def _recorder(result: Retrieval, lock: threading.Lock) -> Callable[[Any], None]:
    def on_dimse_recv(event: Any) -> None:
        command = event.message.command_set
        if int(command.CommandField) in (0x8021, 0x8010):  # C-MOVE-RSP, C-GET-RSP
            with lock:
                result.responses.append(_response(command))

    return on_dimse_recv


def _cancel_context(assoc: Any, sop_class: str) -> int:
    return int(next(c.context_id for c in assoc.accepted_contexts
                    if c.abstract_syntax == sop_class))


def py_move(port: int, identifier: Dataset, destination: str, *,
            sop_class: str = STUDY_ROOT_QR_MOVE, cancel_after: int | None = None) -> Retrieval:
    """A C-MOVE; C-CANCEL after `cancel_after` pending responses."""
    from pynetdicom import evt

    result, lock = Retrieval(), threading.Lock()
    ae = pynetdicom_ae(CALLING)
    ae.add_requested_context(sop_class)
    assoc = ae.associate(LOOPBACK, port, ae_title=SERVER_AE,
                         evt_handlers=[(evt.EVT_DIMSE_RECV, _recorder(result, lock))])
    assert assoc.is_established
    try:
        pendings = 0
        for status, found in assoc.send_c_move(identifier, destination, sop_class,
                                               msg_id=CANCEL_MESSAGE_ID):
            if status.get("Status") == Status.PENDING:
                pendings += 1
                if pendings == cancel_after:
                    assoc.send_c_cancel(CANCEL_MESSAGE_ID, _cancel_context(assoc, sop_class))
            else:
                result.final_identifier = found
    finally:
        assoc.release()
    return result


def py_get(port: int, identifier: Dataset, *, sop_class: str = STUDY_ROOT_QR_GET,
           storage: Sequence[str], status_of: Callable[[str], int] = lambda _: 0,
           delay: float = 0.0, cancel_after: int | None = None,
           abort_after: int | None = None) -> Retrieval:
    """A C-GET with SCP role selection; the store handler answers `status_of(uid)`.

    At the first pending response after `abort_after` stores, the requestor sends A-ABORT
    and walks away while the server is still sending (as a viewer closed mid-load would).
    """
    from pynetdicom import build_role, evt

    result, lock = Retrieval(), threading.Lock()
    ae = pynetdicom_ae(CALLING)
    ae.add_requested_context(sop_class)
    for uid in storage:
        for ts in UNCOMPRESSED:
            ae.add_requested_context(uid, ts)

    def on_store(event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if delay:
            time.sleep(delay)
        with lock:
            result.stored[uid] = event.request.DataSet.getvalue()
        return status_of(uid)

    assoc = ae.associate(LOOPBACK, port, ae_title=SERVER_AE,
                         ext_neg=[build_role(uid, scp_role=True) for uid in storage],
                         evt_handlers=[(evt.EVT_C_STORE, on_store),
                                       (evt.EVT_DIMSE_RECV, _recorder(result, lock))])
    assert assoc.is_established
    try:
        pendings = 0
        for status, found in assoc.send_c_get(identifier, sop_class,
                                              msg_id=CANCEL_MESSAGE_ID):
            if status.get("Status") == Status.PENDING:
                pendings += 1
                if pendings == cancel_after:
                    assoc.send_c_cancel(CANCEL_MESSAGE_ID, _cancel_context(assoc, sop_class))
                if abort_after is not None and len(result.stored) >= abort_after:
                    result.aborted = True
                    assoc.abort()
                    break
            else:
                result.final_identifier = found
    finally:
        if assoc.is_established:
            assoc.release()
    return result


# --- a pynetdicom storage SCP as the Move Destination -----------------------------------------


@dataclass
class Destination:
    """What a pynetdicom storage SCP received, per SOP Instance UID."""

    port: int
    stored: dict[str, bytes] = field(default_factory=dict)
    syntaxes: dict[str, str] = field(default_factory=dict)
    originators: set[tuple[str, int]] = field(default_factory=set)
    associations: int = 0
    aborted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextlib.contextmanager
def py_destination(port: int, storage: Sequence[str], *,
                   syntaxes: Sequence[str] = UNCOMPRESSED,
                   status_of: Callable[[str], int] = lambda _: 0, delay: float = 0.0,
                   abort_after: int | None = None) -> Iterator[Destination]:
    """A storage SCP accepting `storage` in `syntaxes`; answers `status_of(uid)` after `delay`.

    `abort_after` stores, it sends an A-ABORT from another thread and answers that store.
    """
    from pynetdicom import evt

    ae = pynetdicom_ae("PYDEST")
    ae.maximum_associations = 4
    for uid in storage:
        ae.add_supported_context(uid, list(syntaxes))
    dest = Destination(port)

    def on_accepted(_: Any) -> None:
        with dest.lock:
            dest.associations += 1

    def on_store(event: Any) -> int:
        rq = event.request
        uid = str(rq.AffectedSOPInstanceUID)
        if delay:
            time.sleep(delay)
        with dest.lock:
            dest.stored[uid] = rq.DataSet.getvalue()
            dest.syntaxes[uid] = str(event.context.transfer_syntax)
            dest.originators.add((str(rq.MoveOriginatorApplicationEntityTitle),
                                  int(rq.MoveOriginatorMessageID)))
            count = len(dest.stored)
        if count == abort_after:
            dest.aborted = True
            threading.Thread(target=event.assoc.abort, daemon=True).start()
        return status_of(uid)

    scp = ae.start_server((LOOPBACK, port), block=False,
                          evt_handlers=[(evt.EVT_ACCEPTED, on_accepted),
                                        (evt.EVT_C_STORE, on_store)])
    try:
        yield dest
    finally:
        scp.shutdown()


# --- DCMTK movescu/getscu -d output -------------------------------------------------------------


_FIELD = re.compile(r"^D: (?P<name>[A-Za-z -]+?)\s*: (?P<value>.*)$")


def dcmtk_responses(output: str, kind: str) -> list[Response]:
    """Every `kind` ("C-MOVE RSP" / "C-GET RSP") message in a DCMTK `-d` log, in order."""
    out: list[Response] = []
    block: dict[str, str] | None = None
    for line in output.splitlines():
        match = _FIELD.match(line)
        if match and match["name"] == "Message Type":
            block = {} if match["value"].strip() == kind else None
            continue
        if block is None:
            continue
        if "END DIMSE MESSAGE" in line:
            out.append(_dcmtk_response(block))
            block = None
        elif match:
            block[match["name"]] = match["value"].strip()
    return out


def _dcmtk_response(block: dict[str, str]) -> Response:
    def count(name: str) -> int | None:
        value = block.get(f"{name} Suboperations", "none")
        return None if value == "none" else int(value)

    status = int(block["DIMSE Status"].split(":")[0], 16)
    return Response(status, count("Remaining"), count("Completed"), count("Failed"),
                         count("Warning"), block.get("Data Set", "none") != "none")

