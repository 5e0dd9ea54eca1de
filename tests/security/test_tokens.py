"""JWT verification: issuer, audience, expiry, signature, algorithm, key files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest

from minipacs.security.tokens import TokenVerifier
from tests.tokens import AUDIENCE, ISSUER, SigningKey, signing_key


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return signing_key(tmp_path_factory.mktemp("keys"))


def verifier(key_file: Path, **changes: object) -> TokenVerifier:
    options: dict[str, object] = {"issuer": ISSUER, "audience": AUDIENCE,
                                  "key_file": key_file, "algorithms": ("ES256",),
                                  "leeway": 0}
    options.update(changes)
    return TokenVerifier(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("use_jwks", [False, True], ids=["pem", "jwks"])
def test_good_token(key: SigningKey, use_jwks: bool) -> None:
    check = verifier(key.jwks if use_jwks else key.pem)
    assert check.verify(key.token("alice")).user == "alice"


def test_user_claim_is_configurable(key: SigningKey) -> None:
    check = verifier(key.pem, user_claim="preferred_username")
    assert check.verify(key.token(preferred_username="dr.who")).user == "dr.who"
    assert "preferred_username" in check.verify(key.token()).reason


def test_refusals_say_why(key: SigningKey, tmp_path: Path) -> None:
    check = verifier(key.pem)
    other = signing_key(tmp_path, "other")
    now = int(time.time())
    cases = {
        "token expired": key.token(exp=now - 10),
        "token signature does not verify": other.token(),
        "token for another audience": key.token(aud="someone-else"),
        "token from another issuer": key.token(iss="https://evil.example"),
        "token not valid yet (nbf)": key.token(nbf=now + 3600),
        "token without the 'exp' claim": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "a"}, key.private, algorithm="ES256"),
        "token refused: DecodeError": "not.a.token",
        "token empty or too long": "",
    }
    for reason, token in cases.items():
        verdict = check.verify(token)
        assert (verdict.user, verdict.reason) == (None, reason)


def test_only_configured_algorithms(key: SigningKey) -> None:
    # A token that names HS256 signed with the public key's bytes: the classic confusion.
    forged = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "a",
                         "exp": int(time.time()) + 60}, "s3cret" * 8, algorithm="HS256")
    assert verifier(key.pem).verify(forged).user is None
    assert verifier(key.pem, algorithms=("RS256",)).verify(key.token()).user is None


def test_leeway_tolerates_a_little_clock_difference(key: SigningKey) -> None:
    recent = key.token(exp=int(time.time()) - 5)
    assert verifier(key.pem, leeway=30).verify(recent).user == "alice"
    assert verifier(key.pem).verify(recent).user is None


def test_jwks_key_is_chosen_by_kid(key: SigningKey, tmp_path: Path) -> None:
    other = signing_key(tmp_path, "second")
    combined = tmp_path / "both.json"
    first = json.loads(key.jwks.read_text())["keys"]
    second = [jwk | {"kid": "test-key-2"} for jwk in json.loads(other.jwks.read_text())["keys"]]
    combined.write_text(json.dumps({"keys": first + second}))
    check = verifier(combined)
    assert check.verify(key.token()).user == "alice"
    # Signed by the second key but naming the first key's kid: refused.
    assert check.verify(other.token()).user is None


@pytest.mark.parametrize(("content", "reason"), [
    ("not a key", "no PEM public key"),
    ("{broken json", "not a usable JWKS"),
])
def test_unusable_key_files(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "key"
    path.write_text(content)
    with pytest.raises(ValueError, match=reason):
        verifier(path)
    with pytest.raises(ValueError, match="cannot read"):
        verifier(tmp_path / "missing.pem")
