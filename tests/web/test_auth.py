"""HTTP authentication (issue 14 item 5, issue 12): Basic against the configured users (over
TLS only, unless allowed), Bearer JWTs verified like DICOM identities, 401 with a challenge
when credentials are missing or bad, 403 when the user may not; every request audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from requests.auth import HTTPBasicAuth

from minipacs.security.passwords import hash_password
from tests.tokens import SigningKey, signing_key
from tests.web.webdata import ROOT, call, image, web_server

CHEAP = (1 << 4, 1, 1)
HTTPS = {"X-Forwarded-Proto": "https"}  # a TLS-terminating proxy on this host (uvicorn trusts
#                                         loopback's forwarded headers)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return signing_key(tmp_path_factory.mktemp("idp"))


def security(key: SigningKey, **extra: Any) -> dict[str, Any]:
    return {
        "users": {"alice": {"password": hash_password("wonderland", cost=CHEAP),
                            "allow": ["find"]},
                  "bob": {"password": hash_password("builder", cost=CHEAP)}},
        "jwt": key.jwt_config(),
        "http_anonymous": [],
        "failure_delay": 0,
    } | extra


async def get(url: str, **options: Any) -> requests.Response:
    return await call(requests.get, url, timeout=10, **options)


async def test_basic_and_bearer(tmp_path: Path, key: SigningKey) -> None:
    audit = tmp_path / "audit.jsonl"
    async with web_server(tmp_path, security=security(key),
                          logging={"audit": str(audit)}) as web:
        await web.store([image(1, 1, 1)])
        studies, study = f"{web.url}/studies", f"{web.url}/studies/{ROOT}.1/metadata"

        missing = await get(studies)
        assert missing.status_code == 401
        # Over plain HTTP only a token can succeed: Basic is not offered.
        assert missing.headers["www-authenticate"] == 'Bearer realm="minipacs"'

        plain = await get(studies, auth=HTTPBasicAuth("alice", "wonderland"))
        assert plain.status_code == 401  # a passcode over plain HTTP is refused

        alice = await get(studies, auth=HTTPBasicAuth("alice", "wonderland"), headers=HTTPS)
        assert alice.status_code == 200 and len(alice.json()) == 1
        forbidden = await get(study, auth=HTTPBasicAuth("alice", "wonderland"), headers=HTTPS)
        assert forbidden.status_code == 403  # alice may find, not get
        wrong = await get(studies, auth=HTTPBasicAuth("alice", "nope"), headers=HTTPS)
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == \
            'Basic realm="minipacs", charset="UTF-8", Bearer realm="minipacs"'
        bob = await get(study, auth=HTTPBasicAuth("bob", "builder"), headers=HTTPS)
        assert bob.status_code == 200  # no list of his own: everything over HTTP

        bearer = {"Authorization": f"Bearer {key.token('bob')}"}
        assert (await get(study, headers=bearer)).status_code == 200
        expired = {"Authorization": f"Bearer {key.token('bob', lifetime=-3600)}"}
        assert (await get(studies, headers=expired)).status_code == 401
        forged = signing_key(tmp_path, "forger").token("bob")
        assert (await get(studies, headers={"Authorization": f"Bearer {forged}"})
                ).status_code == 401
        assert (await get(studies, headers={"Authorization": "Digest x"})).status_code == 401
        in_query = await get(f"{studies}?access_token={key.token('bob')}&limit=1")
        assert in_query.status_code == 401  # RFC 6750 §2.3 is not supported: never logged

        # dicomweb-client with a token session, as a viewer would call us.
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key.token('alice')}"
        client = DICOMwebClient(web.url, session=session)
        assert len(await call(client.search_for_studies)) == 1
    messages = [json.loads(line) for line in audit.read_text().splitlines()]
    web_events = [m for m in messages
                  if m.get("ParticipantObjectIdentification", [{}])[0]
                  .get("ParticipantObjectID", "").startswith("/dicom-web/")]
    outcomes = [(m["ParticipantObjectIdentification"][0]["ParticipantObjectDetail"]
                 ["HTTPStatus"], m["ActiveParticipant"][0].get("UserName")) for m in web_events]
    assert outcomes == [(401, None), (401, None), (None, "alice"), (403, "alice"),
                        (401, None), (None, "bob"), (None, "bob"), (401, None), (401, None),
                        (401, None), (401, None), (None, "alice")]
    text = audit.read_text()
    assert "wonderland" not in text and "builder" not in text
    assert "access_token" not in text and "limit=1" in text
    assert ".ey" not in text  # no token (base64url JSON parts start with "ey")


async def test_passcodes_over_plain_http_when_allowed(tmp_path: Path,
                                                      key: SigningKey) -> None:
    async with web_server(tmp_path, security=security(
            key, allow_passwords_without_tls=True, http_anonymous=["find"])) as web:
        studies = f"{web.url}/studies"
        anonymous = await get(studies)
        assert anonymous.status_code == 200  # http_anonymous: [find]
        wado = await get(f"{web.url}/studies/{ROOT}.1")
        assert wado.status_code == 401
        assert wado.headers["www-authenticate"].startswith('Basic realm="minipacs"')
        basic = await get(f"{web.url}/studies/{ROOT}.9/metadata",
                          auth=HTTPBasicAuth("bob", "builder"))
        assert basic.status_code == 404  # authenticated and allowed: the study is not here


async def test_no_credentials_possible_is_403(tmp_path: Path) -> None:
    """Without users or tokens configured a 401 could never be answered: 403."""
    async with web_server(tmp_path, security={"http_anonymous": []}) as web:
        response = await get(f"{web.url}/studies")
    assert response.status_code == 403
    assert "www-authenticate" not in response.headers
