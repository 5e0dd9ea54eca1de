"""DIMSE status codes: categories (PS3.7 Annex C) and per-service descriptions (PS3.4)."""

from __future__ import annotations

import pytest

from minipacs.proto.status import (
    FIND_STATUSES,
    GET_STATUSES,
    MOVE_STATUSES,
    N_STATUSES,
    SERVICE_STATUSES,
    STATUS_RANGES,
    STORE_STATUSES,
    Status,
    StatusCategory,
    category,
    describe,
)

S = StatusCategory


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0x0000, S.SUCCESS),
        (0xFF00, S.PENDING),
        (0xFF01, S.PENDING),
        (0xFE00, S.CANCEL),
        # warnings: PS3.7 Annex C codes and the PS3.4 Bxxx range
        (0x0001, S.WARNING),
        (0x0107, S.WARNING),
        (0x0116, S.WARNING),
        (0xB000, S.WARNING),
        (0xB006, S.WARNING),
        (0xB007, S.WARNING),
        (0xBFFF, S.WARNING),
        # failures: Annex C codes, the A/C ranges (known or not), anything else unknown
        (0x0105, S.FAILURE),
        (0x0110, S.FAILURE),
        (0x0122, S.FAILURE),
        (0x0213, S.FAILURE),
        (0xA700, S.FAILURE),
        (0xA7FF, S.FAILURE),
        (0xA801, S.FAILURE),
        (0xA9AB, S.FAILURE),
        (0xAFFF, S.FAILURE),
        (0xAFFF + 1, S.WARNING),  # 0xB000: the ranges meet here
        (0xC000, S.FAILURE),
        (0xCFFF, S.FAILURE),
        (0x0002, S.FAILURE),
        (0xFE01, S.FAILURE),
        (0xFF02, S.FAILURE),
        (0xFFFF, S.FAILURE),
    ],
)
def test_category(code: int, expected: StatusCategory) -> None:
    assert category(code) is expected


def test_categories_agree_with_pynetdicom() -> None:
    from pynetdicom.status import code_to_category

    checked = 0
    for member in Status:
        theirs = code_to_category(int(member))
        if theirs != "Unknown":
            assert category(member).value == theirs, hex(member)
            checked += 1
    assert checked >= 30


def test_shared_codes_are_one_member_with_aliases() -> None:
    assert Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES is Status.COERCION_OF_DATA_ELEMENTS
    assert Status.UNABLE_TO_PROCESS is Status.CANNOT_UNDERSTAND
    assert Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS is Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert Status(0xB000) is Status.COERCION_OF_DATA_ELEMENTS
    assert len({int(s) for s in Status}) == len(list(Status))


def test_named_values() -> None:
    """A spot check of values against PS3.7 Annex C and PS3.4 B.2.3 / C.4."""
    assert Status.SUCCESS == 0x0000
    assert Status.PROCESSING_FAILURE == 0x0110
    assert Status.DUPLICATE_SOP_INSTANCE == 0x0111
    assert Status.SOP_CLASS_NOT_SUPPORTED == 0x0122
    assert Status.NOT_AUTHORIZED == 0x0124
    assert Status.UNRECOGNIZED_OPERATION == 0x0211
    assert Status.OUT_OF_RESOURCES == 0xA700
    assert Status.OUT_OF_RESOURCES_NUMBER_OF_MATCHES == 0xA701
    assert Status.OUT_OF_RESOURCES_SUBOPERATIONS == 0xA702
    assert Status.MOVE_DESTINATION_UNKNOWN == 0xA801
    assert Status.ELEMENTS_DISCARDED == 0xB006
    assert Status.DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING == 0xB007
    assert Status.CANCEL == 0xFE00
    assert Status.PENDING_WARNING == 0xFF01


@pytest.mark.parametrize(
    ("code", "service", "text"),
    [
        (Status.OUT_OF_RESOURCES, None, "0xA700 Out of resources"),
        (Status.OUT_OF_RESOURCES, "C-STORE", "0xA700 Out of resources"),
        (0xA7FF, "C-STORE", "0xA7FF Out of resources"),
        (0xA9FF, "C-STORE", "0xA9FF Data set does not match SOP class"),
        (0xC0DE, "C-STORE", "0xC0DE Cannot understand"),
        (0xC0DE, "C-FIND", "0xC0DE Unable to process"),
        (0xB000, "C-STORE", "0xB000 Coercion of data elements"),
        (0xB000, "C-MOVE", "0xB000 Sub-operations complete with failures"),
        (0xB000, "c-get", "0xB000 Sub-operations complete with failures"),
        (0xA900, "C-FIND", "0xA900 Identifier does not match SOP class"),
        (0xFE00, "C-FIND", "0xFE00 Matching terminated due to cancel"),
        (0xFE00, "C-MOVE", "0xFE00 Sub-operations terminated due to cancel"),
        (0xA801, "C-MOVE", "0xA801 Move destination unknown"),
        (0x0112, "N-SET", "0x0112 No such SOP instance"),
        (0x0112, "C-STORE", "0x0112 No such SOP instance"),  # Annex C fallback
        (0x0000, "C-ECHO", "0x0000 Success"),
        (0xA9AB, None, "0xA9AB Data set or identifier does not match SOP class"),
        (0xDEAD, None, "0xDEAD Unknown failure status"),
        (0xB123, "C-STORE", "0xB123 Unknown warning status"),
    ],
)
def test_describe(code: int, service: str | None, text: str) -> None:
    assert describe(code, service) == text


def test_describe_unknown_service() -> None:
    with pytest.raises(ValueError, match="C-FOO"):
        describe(0, "C-FOO")


def test_tables_hold_named_codes_with_consistent_categories() -> None:
    for service, table in SERVICE_STATUSES.items():
        assert Status.SUCCESS in table, service
        for code, text in table.items():
            assert isinstance(code, Status), (service, code)
            assert text
    for code in (Status.PENDING, Status.PENDING_WARNING):
        assert category(code) is S.PENDING
        assert code in FIND_STATUSES
    for table in (MOVE_STATUSES, GET_STATUSES):
        assert Status.SUBOPERATIONS_COMPLETE_WITH_FAILURES in table
        assert Status.OUT_OF_RESOURCES_SUBOPERATIONS in table
    assert Status.MOVE_DESTINATION_UNKNOWN in MOVE_STATUSES
    assert Status.MOVE_DESTINATION_UNKNOWN not in GET_STATUSES
    assert Status.ELEMENTS_DISCARDED in STORE_STATUSES
    assert Status.ATTRIBUTE_LIST_ERROR in N_STATUSES


def test_ranges_are_failures() -> None:
    for service, ranges in STATUS_RANGES.items():
        for span in ranges:
            assert span.first in span and span.last in span
            assert span.last + 1 not in span
            assert category(span.first) is S.FAILURE, service
            assert category(span.last) is S.FAILURE, service
