"""The one UID grammar (proto/uid.py, PS3.5 §9.1) and its leading-zero policy."""

from __future__ import annotations

import pytest

from minipacs.proto.uid import MAX_UID_LENGTH, is_valid_uid

VALID = ["1", "0", "1.2", "1.2.840.10008.1.1", "2.25." + "9" * 39, "1." + "2" * 62,
         "1.02", "1.2.00.3", "0.0"]  # leading zeros: accepted (documented policy)
INVALID = ["", ".", "1.", ".1", "1..2", "1.2.", "1,2", "1.2a", "a.b", " 1.2", "1.2 ", "1.2\0",
           "-1.2", "+1", "1.2.*", "../../evil", "..", "/tmp/abs", "1.2\n3", "1.2\x1b[2J",
           "1.\x00", "A" * 64, "1." + "2" * 63, "1.2" + "3" * 62,
           "\u0661.\u0662", "1.\uff12"]  # non-ASCII digits (Arabic-Indic, fullwidth)


@pytest.mark.parametrize("value", VALID)
def test_valid(value: str) -> None:
    assert is_valid_uid(value)


@pytest.mark.parametrize("value", INVALID)
def test_invalid(value: str) -> None:
    assert not is_valid_uid(value)


def test_length_bound_is_64_characters() -> None:
    assert is_valid_uid("1" * MAX_UID_LENGTH)
    assert not is_valid_uid("1" * (MAX_UID_LENGTH + 1))
