"""Per-AE permissions over real sockets (issue 12 item 2): DCMTK and pynetdicom as callers.

The default for calling AEs not in `peers` is [echo, store]; each permission word opens
exactly its SOP classes at negotiation (the others are refused, result 1 user-rejection);
a request the policy refuses on an accepted context is 0124H; `check_peer_host` refuses a
known AE title calling from another address; `serve` logs the effective policy.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from minipacs.ports import Operation
from minipacs.proto.pdu import ContextResult, RejectReason, RejectResult, RejectSource
from minipacs.proto.sop import (
    MODALITY_WORKLIST_FIND,
    MPPS,
    STORAGE_COMMITMENT_PUSH,
    STUDY_ROOT_QR_FIND,
    STUDY_ROOT_QR_GET,
    STUDY_ROOT_QR_MOVE,
    VERIFICATION,
)
from minipacs.proto.status import Status
from tests.interop.dicomfiles import write_part10
from tests.support import (
    LOOPBACK,
    Rejection,
    ServerFactory,
    make_ct,
    pynetdicom_ae,
    pynetdicom_reject,
    run_dcmtk,
    serve_process,
    stored_files,
)

# One SOP class proposed for each permission word.
CLASS_OF = {
    Operation.ECHO: VERIFICATION,
    Operation.STORE: CTImageStorage,
    Operation.FIND: STUDY_ROOT_QR_FIND,
    Operation.MOVE: STUDY_ROOT_QR_MOVE,
    Operation.GET: STUDY_ROOT_QR_GET,
    Operation.COMMITMENT: STORAGE_COMMITMENT_PUSH,
    Operation.MPPS: MPPS,
    Operation.WORKLIST: MODALITY_WORKLIST_FIND,
}
DEFAULTS: dict[str, Any] = {"security": None}  # no security section: the shipped defaults


def negotiate(port: int, calling: str, *, bind: str = "") -> dict[str, int] | Rejection:
    """Propose one context per permission word; the result of each, by SOP class."""
    from pynetdicom import evt
    from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ

    received: list[Any] = []
    ae = pynetdicom_ae(calling)
    for uid in CLASS_OF.values():
        ae.add_requested_context(uid, [ImplicitVRLittleEndian])
    assoc = ae.associate(LOOPBACK, port, bind_address=(bind, 0),
                         evt_handlers=[(evt.EVT_PDU_RECV, lambda e: received.append(e.pdu))])
    try:
        for pdu in received:
            if isinstance(pdu, A_ASSOCIATE_RJ):
                return Rejection(pdu.result, pdu.source, pdu.reason_diagnostic)
        (ac,) = [pdu for pdu in received if isinstance(pdu, A_ASSOCIATE_AC)]
        by_id = {cx.context_id: cx.abstract_syntax for cx in assoc.requestor.requested_contexts}
        return {str(by_id[item.context_id]): item.result
                for item in ac.variable_items if hasattr(item, "result")}
    finally:
        if assoc.is_established:
            assoc.release()


def accepted(results: dict[str, int] | Rejection) -> set[str]:
    assert isinstance(results, dict), results
    return {uid for uid, result in results.items() if result == ContextResult.ACCEPTANCE}


async def test_unknown_aes_may_echo_and_store_only_by_default(
        start_server: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = await start_server(**DEFAULTS)
    port = str(server.port)
    echo = await run_dcmtk("echoscu", "-aet", "STRANGER", LOOPBACK, port)
    assert echo.returncode == 0, echo.stdout + echo.stderr
    ct = tmp_path / "ct.dcm"
    write_part10(make_ct(4096), ct)
    store = await run_dcmtk("storescu", "-aet", "STRANGER", LOOPBACK, port, str(ct))
    assert store.returncode == 0, store.stdout + store.stderr
    assert len(stored_files(tmp_path)) == 1
    with caplog.at_level(logging.WARNING, logger="minipacs.net"):
        find = await run_dcmtk("findscu", "-aet", "STRANGER", "-S", "-k",
                               "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
                               LOOPBACK, port)
    output = find.stdout + find.stderr
    assert find.returncode != 0, output
    assert "No Acceptable Presentation Contexts" in output, output
    (line,) = [r.getMessage() for r in caplog.records if "not permitted" in r.getMessage()]
    assert line.startswith("'STRANGER' at 127.0.0.1:")
    assert "Study Root Query/Retrieve Information Model - FIND" in line
    results = await asyncio.to_thread(negotiate, server.port, "STRANGER")
    assert accepted(results) == {VERIFICATION, CTImageStorage}
    assert isinstance(results, dict)
    assert {results[CLASS_OF[op]] for op in (Operation.FIND, Operation.MOVE, Operation.GET)} \
        == {ContextResult.USER_REJECTION}


def _mixed_association(port: int) -> tuple[int, int, bool]:
    """Echo, store and find on one association of an unknown AE: (echo, store, find ok)."""
    ae = pynetdicom_ae("STRANGER")
    for uid in (VERIFICATION, CTImageStorage, STUDY_ROOT_QR_FIND):
        ae.add_requested_context(uid, [ExplicitVRLittleEndian])
    assoc = ae.associate(LOOPBACK, port)
    try:
        assert assoc.is_established
        echo = assoc.send_c_echo().Status
        ds = make_ct(4096, index=7)
        ds.file_meta = Dataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        store = assoc.send_c_store(ds).Status
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        try:
            list(assoc.send_c_find(query, STUDY_ROOT_QR_FIND))
            find_possible = True
        except ValueError:  # pynetdicom: no accepted presentation context for it
            find_possible = False
        return int(echo), int(store), find_possible
    finally:
        assoc.release()


async def test_the_association_stays_usable_for_what_is_allowed(
        start_server: ServerFactory) -> None:
    server = await start_server(**DEFAULTS)
    echo, store, find_possible = await asyncio.to_thread(_mixed_association, server.port)
    assert (echo, store, find_possible) == (Status.SUCCESS, Status.SUCCESS, False)


EXPECTED = {op: {CLASS_OF[op]} for op in Operation}
# A C-GET's instances come back on the requestor's association: its storage contexts too.
EXPECTED[Operation.GET] = {STUDY_ROOT_QR_GET, CTImageStorage}


async def test_each_permission_word_opens_its_classes(start_server: ServerFactory) -> None:
    peers = {f"P_{op.value.upper()}": {"host": LOOPBACK, "port": 104, "allow": [op.value]}
             for op in Operation}
    peers["P_NOTHING"] = {"host": LOOPBACK, "port": 104, "allow": []}
    peers["P_ALL"] = {"host": LOOPBACK, "port": 104}  # allow: [all] by default
    server = await start_server(peers=peers, security=None)
    for op in Operation:
        results = await asyncio.to_thread(negotiate, server.port, f"P_{op.value.upper()}")
        assert accepted(results) == EXPECTED[op], op
    assert accepted(await asyncio.to_thread(negotiate, server.port, "P_NOTHING")) == set()
    assert accepted(await asyncio.to_thread(negotiate, server.port, "P_ALL")) == set(
        CLASS_OF.values())


def _store_as(port: int, calling: str) -> int:
    ae = pynetdicom_ae(calling)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(STUDY_ROOT_QR_GET, [ExplicitVRLittleEndian])
    assoc = ae.associate(LOOPBACK, port)
    try:
        assert assoc.is_established
        ds = make_ct(4096, index=9)
        ds.file_meta = Dataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


async def test_a_store_by_a_get_only_peer_is_not_authorized(start_server: ServerFactory,
                                                            tmp_path: Path) -> None:
    """Its storage contexts are accepted (for C-GET), its own C-STOREs refused: 0124H."""
    server = await start_server(
        peers={"VIEWER": {"host": LOOPBACK, "port": 104, "allow": ["get"]}}, security=None)
    status = await asyncio.to_thread(_store_as, server.port, "VIEWER")
    assert status == Status.NOT_AUTHORIZED
    assert stored_files(tmp_path) == []


async def test_check_peer_host(start_server: ServerFactory) -> None:
    server = await start_server(
        peers={"WS1": {"host": LOOPBACK, "port": 104, "allow": ["all"]}},
        security={"check_peer_host": True, "unknown_aes": ["echo"]})
    elsewhere = await asyncio.to_thread(negotiate, server.port, "WS1", bind="127.0.0.2")
    assert elsewhere == Rejection(RejectResult.PERMANENT, RejectSource.SERVICE_USER,
                                  RejectReason.CALLING_AE_NOT_RECOGNIZED)
    home = await asyncio.to_thread(negotiate, server.port, "WS1", bind=LOOPBACK)
    assert accepted(home) == set(CLASS_OF.values())
    # An unknown AE has no configured host: it is not host-checked, only limited.
    stranger = await asyncio.to_thread(negotiate, server.port, "STRANGER", bind="127.0.0.2")
    assert accepted(stranger) == {VERIFICATION}


async def test_unknown_aes_refused_when_empty(start_server: ServerFactory) -> None:
    server = await start_server(peers={"WS1": {"host": LOOPBACK, "port": 104}},
                                security={"unknown_aes": []})
    rejection = await asyncio.to_thread(pynetdicom_reject, server.port, calling="STRANGER")
    assert rejection == Rejection(RejectResult.PERMANENT, RejectSource.SERVICE_USER,
                                  RejectReason.CALLING_AE_NOT_RECOGNIZED)


def test_serve_logs_the_effective_policy(tmp_path: Path) -> None:
    peers = {"CT1": {"host": "127.0.0.1", "port": 104, "allow": ["echo", "store"]}}
    with serve_process(tmp_path, peers=peers, security=None) as serve:
        serve.wait_for_line(r"security: peer 'CT1': \[echo, store\]$")
        serve.wait_for_line(r"security: unknown calling AEs: \[echo, store\]$")
        serve.wait_for_line(r"security: user identity: none \(0 user\(s\)\)$")
