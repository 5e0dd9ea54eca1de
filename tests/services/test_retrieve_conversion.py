"""C-MOVE/C-GET context choice and conversion with in-memory fakes (retrieve_routes, and
RetrieveService sending converted data sets)."""

from __future__ import annotations

import logging

import pytest
from pydicom.dataset import Dataset

from minipacs.proto.negotiation import AcceptedContext
from minipacs.proto.sop import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    JPEG_BASELINE_8BIT,
    MPEG2_MPML,
    STUDY_ROOT_QR_MOVE,
)
from minipacs.proto.status import Status
from minipacs.services.retrieve_routes import MovePlan, Route, plan_move, route
from minipacs.services.transcode import convert
from tests.interop.dicomfiles import encode_dataset
from tests.services.test_retrieve import (
    CT,
    EXPLICIT,
    IMPLICIT,
    MR,
    FakeChannel,
    FakePeers,
    counts,
    failed_list,
    ident,
    row,
    run_get,
    run_move,
    service,
    storage_contexts,
)

DEFLATED = DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
BIG = EXPLICIT_VR_BIG_ENDIAN


def data_set(n: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = f"1.1.1.{n}"
    ds.PatientID = "P1"
    ds.PatientName = "Conversion^Test"
    ds.Rows, ds.Columns, ds.BitsAllocated = 1, 2, 16
    ds.PixelData = bytes([n, 0, 0, n])
    return ds


# --- routes ---------------------------------------------------------------------------------


def ctx(context_id: int, sop_class: str, ts: str) -> AcceptedContext:
    return AcceptedContext(context_id, sop_class, ts)


def test_route_prefers_stored_then_explicit_then_implicit() -> None:
    accepted = [ctx(7, CT, IMPLICIT), ctx(5, CT, EXPLICIT), ctx(3, MR, IMPLICIT),
                ctx(9, CT, DEFLATED)]
    assert route(accepted, CT, DEFLATED) == Route(9, DEFLATED, False)
    assert route(accepted, CT, BIG) == Route(5, EXPLICIT, True)
    assert route(accepted, MR, EXPLICIT) == Route(3, IMPLICIT, True)
    assert route(accepted, MR, MPEG2_MPML) is None  # no decoder exists
    assert route(accepted, "1.2.3", EXPLICIT) is None  # class not accepted


def test_plan_move_adds_the_fallbacks_of_every_class_once() -> None:
    kinds = [(CT, EXPLICIT), (CT, JPEG_BASELINE_8BIT), (MR, IMPLICIT)]
    (plan,) = plan_move(kinds)
    assert plan == MovePlan(((CT, EXPLICIT), (CT, JPEG_BASELINE_8BIT), (CT, IMPLICIT),
                             (MR, IMPLICIT), (MR, EXPLICIT)), frozenset(kinds))


def test_plan_move_keeps_a_class_and_its_fallbacks_together() -> None:
    kinds = [(f"1.2.3.{c}", ts) for c in range(3) for ts in (JPEG_BASELINE_8BIT, DEFLATED)]
    plans = plan_move(kinds, max_contexts=9)  # 4 contexts per class: two fit, not three
    assert [len(p.contexts) for p in plans] == [8, 4]
    for plan in plans:
        classes = {c for c, _ in plan.contexts}
        assert {c for c, _ in plan.members} == classes
        for sop_class in classes:
            assert {(sop_class, EXPLICIT), (sop_class, IMPLICIT)} <= set(plan.contexts)
    assert set().union(*(p.members for p in plans)) == set(kinds)


def test_plan_move_splits_a_class_with_too_many_syntaxes() -> None:
    syntaxes = [JPEG_BASELINE_8BIT, DEFLATED, BIG, MPEG2_MPML]
    plans = plan_move([(CT, ts) for ts in syntaxes], max_contexts=4)
    assert all(len(p.contexts) <= 4 for p in plans)
    assert [sorted(p.members) for p in plans] == [
        sorted([(CT, JPEG_BASELINE_8BIT), (CT, DEFLATED)]), sorted([(CT, BIG), (CT, MPEG2_MPML)])]
    assert all((CT, EXPLICIT) in p.contexts and (CT, IMPLICIT) in p.contexts for p in plans)
    with pytest.raises(ValueError, match=r"1\.\.128"):
        plan_move([(CT, EXPLICIT)], max_contexts=129)


# --- C-GET ----------------------------------------------------------------------------------


async def test_get_converts_when_only_another_syntax_has_the_scp_role(
        caplog: pytest.LogCaptureFixture) -> None:
    rows = [row(1, ts=IMPLICIT), row(2, ts=IMPLICIT), row(3)]
    files = {r.loc.storage_key: encode_dataset(data_set(n), r.loc.transfer_syntax_uid)
             for n, r in enumerate(rows, 1)}
    channel = FakeChannel(storage_contexts((CT, EXPLICIT)))
    with caplog.at_level(logging.WARNING, "minipacs.retrieve"):
        final, data = await run_get(service(rows, files=files), channel,
                                    ident("STUDY", StudyInstanceUID="1.1"))
    assert final.status == Status.SUCCESS and counts(final) == (None, 3, 0, 0)
    assert data is None  # no Failed SOP Instance UID List
    sent = [data for _, data in channel.stores]
    assert sent[0] == convert(files[rows[0].loc.storage_key], IMPLICIT, EXPLICIT)
    assert sent[0] == encode_dataset(data_set(1), EXPLICIT)  # what pydicom writes itself
    assert sent[2] == files[rows[2].loc.storage_key]  # stored syntax: streamed as it is
    assert not [r for r in caplog.records if "cannot" in r.getMessage()]


async def test_get_conversion_failure_fails_that_instance(
        caplog: pytest.LogCaptureFixture) -> None:
    rows = [row(1, ts=IMPLICIT), row(2, ts=IMPLICIT)]
    files = {rows[0].loc.storage_key: encode_dataset(data_set(1), IMPLICIT)[:-3],  # cut
             rows[1].loc.storage_key: encode_dataset(data_set(2), IMPLICIT)}
    channel = FakeChannel(storage_contexts((CT, EXPLICIT)))
    with caplog.at_level(logging.WARNING, "minipacs.retrieve"):
        final, data = await run_get(service(rows, files=files), channel,
                                    ident("STUDY", StudyInstanceUID="1.1"))
    assert final.status == Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES
    assert counts(final) == (None, 1, 1, 0) and failed_list(data) == [rows[0].uid]
    assert "conversion failed" in final.error_comment
    assert any("cannot convert '1.1.1.1'" in r.getMessage() for r in caplog.records)


# --- C-MOVE ---------------------------------------------------------------------------------


async def test_move_converts_to_what_the_destination_accepts(
        caplog: pytest.LogCaptureFixture) -> None:
    rows = [row(1), row(2), row(3, ts=DEFLATED)]
    files = {r.loc.storage_key: encode_dataset(data_set(n), EXPLICIT) for n, r in
             enumerate(rows, 1)}
    files[rows[2].loc.storage_key] = convert(files[rows[2].loc.storage_key], EXPLICIT, DEFLATED)
    peers = FakePeers(accept=lambda key: key[1] == IMPLICIT)
    channel = FakeChannel(storage_contexts(qr=STUDY_ROOT_QR_MOVE))
    with caplog.at_level(logging.INFO, "minipacs.retrieve"):
        final, _ = await run_move(service(rows, peers, files=files), channel,
                                  ident("STUDY", StudyInstanceUID="1.1"))
    assert peers.proposed == [((CT, EXPLICIT), (CT, DEFLATED), (CT, IMPLICIT))]
    assert final.status == Status.SUCCESS and counts(final) == (None, 3, 0, 0)
    (sub,) = peers.channels
    for (rq, sent), n in zip(sub.stores, (1, 2, 3), strict=True):
        assert sent == encode_dataset(data_set(n), IMPLICIT)
        assert rq.move_originator_message_id == 9
    converted = [r.getMessage() for r in caplog.records if "converted to" in r.getMessage()]
    assert len(converted) == 2  # once per (class, stored syntax), not per instance


async def test_move_with_nothing_usable_fails_every_instance(
        caplog: pytest.LogCaptureFixture) -> None:
    rows = [row(1), row(2)]
    peers = FakePeers(accept=lambda key: key[1] == JPEG_BASELINE_8BIT)
    channel = FakeChannel(storage_contexts(qr=STUDY_ROOT_QR_MOVE))
    with caplog.at_level(logging.WARNING, "minipacs.retrieve"):
        final, data = await run_move(service(rows, peers), channel,
                                     ident("STUDY", StudyInstanceUID="1.1"))
    assert final.status == Status.OUT_OF_RESOURCES_SUBOPERATIONS
    assert counts(final) == (None, 0, 2, 0) and len(failed_list(data)) == 2
    assert "accepted no context" in final.error_comment
    lines = [r.getMessage() for r in caplog.records if "cannot send" in r.getMessage()]
    assert len(lines) == 1 and "was not accepted" in lines[0]
