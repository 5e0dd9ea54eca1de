"""Salted scrypt hashes: the stored form, verification, and what a hash may ask for."""

from __future__ import annotations

import pytest

from minipacs.security.passwords import DEFAULT_COST, ScryptHash, hash_password, verify_password

CHEAP = (1 << 4, 1, 1)  # tests: the same code, a fraction of the cost


def test_hash_round_trip() -> None:
    stored = hash_password("correct horse", cost=CHEAP)
    parsed = ScryptHash.parse(stored)
    assert stored.startswith("scrypt$16$1$1$")
    assert parsed.format() == stored
    assert verify_password("correct horse", parsed)
    assert not verify_password("correct horse ", parsed)
    assert not verify_password("", parsed)


def test_same_passcode_different_salt() -> None:
    first, second = (hash_password("pw", cost=CHEAP) for _ in range(2))
    assert first != second
    assert verify_password("pw", ScryptHash.parse(second))


def test_default_cost() -> None:
    n, r, p = DEFAULT_COST
    stored = ScryptHash.parse(hash_password("pw"))
    assert (stored.n, stored.r, stored.p) == (n, r, p) == (32768, 8, 1)
    assert len(stored.salt) == 16 and len(stored.key) == 32


def test_unicode_passcode() -> None:
    stored = ScryptHash.parse(hash_password("pässwörd ✓", cost=CHEAP))
    assert verify_password("pässwörd ✓", stored)


@pytest.mark.parametrize(("text", "reason"), [
    ("hunter2", "not of the form"),
    ("bcrypt$16$1$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "not of the form"),
    ("scrypt$x$1$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "integers"),
    ("scrypt$15$1$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "power of 2"),
    ("scrypt$2097152$1$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "power of 2"),
    ("scrypt$16$64$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "r must be"),
    ("scrypt$16$1$1$AAAA$AAAAAAAAAAAAAAAAAAAAAA==", "too short"),
    ("scrypt$16$1$1$!!!!$AAAAAAAAAAAAAAAAAAAAAA==", "base64"),
])
def test_bad_hashes_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        ScryptHash.parse(text)
