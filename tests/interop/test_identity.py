"""User identity negotiation over real sockets (issue 12 item 3, PS3.7 D.3.3.7).

DCMTK storescu (-usr/-pwd, --jwt, -rsp) and pynetdicom present identities; every mode
(none, optional, required) meets a missing identity, a good passcode, a bad one, a good
token, a token with a bad signature and an expired one. A refusal is rejected-permanent by
the ACSE provider with no reason, the reason in our log only.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from minipacs.proto.sop import STUDY_ROOT_QR_FIND, VERIFICATION
from minipacs.security.passwords import hash_password
from tests.certs import dcmtk_tls, make_pki, tls_section
from tests.interop.dicomfiles import write_part10
from tests.support import (
    LOOPBACK,
    Rejection,
    ServerFactory,
    make_ct,
    pynetdicom_ae,
    run_dcmtk,
    stored_files,
)
from tests.tokens import SigningKey, signing_key

CHEAP = (1 << 4, 1, 1)  # the scrypt path as configured, at a fraction of the cost
BAD_IDENTITY = Rejection(1, 2, 1)  # rejected-permanent, ACSE provider, no reason given


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return signing_key(tmp_path_factory.mktemp("idp"))


def security(key: SigningKey, identity: str, **extra: Any) -> dict[str, Any]:
    return {
        "unknown_aes": ["echo", "store"],
        "identity": identity,
        "users": {"alice": {"password": hash_password("wonderland", cost=CHEAP),
                            "allow": ["echo", "store", "find"]}},
        "jwt": key.jwt_config(),
        "allow_passwords_without_tls": True,  # these tests run without TLS
        "failure_delay": 0,
    } | extra


def present(port: int, kind: int, primary: bytes, secondary: bytes = b"", *,
            response: bool = True, find: bool = False) -> tuple[Any, ...]:
    """Associate with an identity; (rejection or None, server response or None, accepted
    SOP classes)."""
    from pynetdicom import evt
    from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ
    from pynetdicom.pdu_items import UserIdentitySubItemAC
    from pynetdicom.pdu_primitives import UserIdentityNegotiation

    received: list[Any] = []
    ae = pynetdicom_ae("WS")
    ae.add_requested_context(VERIFICATION)
    if find:
        ae.add_requested_context(STUDY_ROOT_QR_FIND)
    ext: list[Any] = []
    if kind:
        item = UserIdentityNegotiation()
        item.user_identity_type = kind
        item.positive_response_requested = response
        item.primary_field = primary
        if kind == 2:
            item.secondary_field = secondary
        ext.append(item)
    assoc = ae.associate(LOOPBACK, port, ext_neg=ext,
                         evt_handlers=[(evt.EVT_PDU_RECV, lambda e: received.append(e.pdu))])
    try:
        for pdu in received:
            if isinstance(pdu, A_ASSOCIATE_RJ):
                return Rejection(pdu.result, pdu.source, pdu.reason_diagnostic), None, set()
        (ac,) = [pdu for pdu in received if isinstance(pdu, A_ASSOCIATE_AC)]
        answers = [sub for item in ac.variable_items
                   for sub in getattr(item, "user_data", [])
                   if isinstance(sub, UserIdentitySubItemAC)]
        classes = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        return None, (answers[0].server_response if answers else None), classes
    finally:
        if assoc.is_established:
            assoc.release()


CASES = ("missing", "good passcode", "bad passcode", "good JWT", "bad JWT signature",
         "expired JWT")


def identity_of(case: str, key: SigningKey, forger: SigningKey) -> tuple[int, bytes, bytes]:
    return {
        "missing": (0, b"", b""),
        "good passcode": (2, b"alice", b"wonderland"),
        "bad passcode": (2, b"alice", b"looking-glass"),
        "good JWT": (5, key.token("alice").encode(), b""),
        "bad JWT signature": (5, forger.token("alice").encode(), b""),
        "expired JWT": (5, key.token("alice", lifetime=-3600).encode(), b""),
    }[case]


@pytest.mark.parametrize("mode", ["none", "optional", "required"])
async def test_identity_matrix_with_pynetdicom(start_server: ServerFactory, key: SigningKey,
                                               tmp_path: Path, mode: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    server = await start_server(security=security(key, mode))
    forger = signing_key(tmp_path, "forger")
    for case in CASES:
        kind, primary, secondary = identity_of(case, key, forger)
        with caplog.at_level(logging.WARNING, logger="minipacs.security"):
            rejection, response, classes = await asyncio.to_thread(
                present, server.port, kind, primary, secondary, find=True)
        good = case.startswith("good")
        refused = mode != "none" and not good and (case != "missing" or mode == "required")
        assert (rejection == BAD_IDENTITY) is refused, (mode, case, rejection)
        if refused:
            # Nothing in the reply says what was wrong; the log does.
            reason = {"missing": "none given", "bad passcode": "wrong passcode",
                      "bad JWT signature": "signature", "expired JWT": "expired"}[case]
            assert reason in caplog.text, (mode, case)
            caplog.clear()
            continue
        verified = mode != "none" and good
        # PS3.7 D.3.3.7.2: an empty response, only when the identity was verified.
        assert response == (b"" if verified else None), (mode, case)
        # alice's own list allows find; an anonymous unknown AE may not.
        assert (STUDY_ROOT_QR_FIND in classes) is verified, (mode, case)


async def test_dcmtk_passcode_and_token(start_server: ServerFactory, key: SigningKey,
                                        tmp_path: Path) -> None:
    server = await start_server(security=security(key, "required"))
    port = str(server.port)
    ct = tmp_path / "ct.dcm"
    write_part10(make_ct(4096), ct)
    good = await run_dcmtk("storescu", "-v", "-usr", "alice", "-pwd", "wonderland", "-rsp",
                           LOOPBACK, port, str(ct))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Received Store Response (Success)" in good.stdout + good.stderr
    bad = await run_dcmtk("storescu", "-usr", "alice", "-pwd", "nope", "-rsp",
                          LOOPBACK, port, str(ct))
    assert bad.returncode != 0
    assert "Association Rejected" in bad.stdout + bad.stderr
    token = tmp_path / "token.jwt"
    token.write_text(key.token("alice"))
    jwt_store = await run_dcmtk("storescu", "-v", "--jwt", str(token), "-rsp", LOOPBACK, port,
                                str(ct))
    assert jwt_store.returncode == 0, jwt_store.stdout + jwt_store.stderr
    expired = tmp_path / "expired.jwt"
    expired.write_text(key.token("alice", lifetime=-3600))
    late = await run_dcmtk("storescu", "--jwt", str(expired), LOOPBACK, port, str(ct))
    assert late.returncode != 0 and "Association Rejected" in late.stdout + late.stderr
    missing = await run_dcmtk("echoscu", LOOPBACK, port)
    assert missing.returncode != 0
    assert len(stored_files(tmp_path)) == 1  # the same instance twice: kept once


async def test_passcodes_over_plain_tcp_refused_by_default(
        start_server: ServerFactory, key: SigningKey, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    server = await start_server(security=security(key, "optional",
                                                  allow_passwords_without_tls=False))
    with caplog.at_level(logging.WARNING, logger="minipacs.security"):
        result = await asyncio.to_thread(present, server.port, 2, b"alice", b"wonderland")
    assert result[0] == BAD_IDENTITY
    assert "without TLS" in caplog.text
    # A token is no passcode: it goes over plain TCP.
    token = await asyncio.to_thread(present, server.port, 5, key.token("alice").encode())
    assert token[0] is None and token[1] == b""


async def test_repeated_failures_are_slowed_down(start_server: ServerFactory,
                                                 key: SigningKey) -> None:
    server = await start_server(security=security(key, "required", failure_delay=0.2))
    loop = asyncio.get_running_loop()
    took = []
    for _ in range(3):
        started = loop.time()
        result = await asyncio.to_thread(present, server.port, 2, b"alice", b"nope")
        took.append(loop.time() - started)
        assert result[0] == BAD_IDENTITY
    # 0.2 s, 0.4 s, 0.8 s: each failure from this address waits twice as long.
    assert took[0] >= 0.2 and took[1] >= 0.4 and took[2] >= 0.8, took
    ok = await asyncio.to_thread(present, server.port, 2, b"alice", b"wonderland")
    assert ok[0] is None


async def test_passcodes_over_dicom_tls_accepted(start_server: ServerFactory, key: SigningKey,
                                                 tmp_path: Path) -> None:
    """The rule "no passcode without TLS" lets a passcode through on the TLS listener (the
    transport says it is TLS) and still refuses the same passcode on the plain one."""
    pki = make_pki(tmp_path / "pki")
    server = await start_server(security=security(key, "required",
                                                  allow_passwords_without_tls=False),
                                listen_tls={"host": LOOPBACK, "port": 0},
                                tls=tls_section(pki.server))
    assert server.tls_port is not None
    ct = tmp_path / "ct.dcm"
    write_part10(make_ct(4096), ct)
    passcode = ["-usr", "alice", "-pwd", "wonderland", "-rsp"]
    over_tls = await run_dcmtk("storescu", "-v", *passcode, *dcmtk_tls(pki.client, pki.server.ca),
                               LOOPBACK, str(server.tls_port), str(ct))
    assert over_tls.returncode == 0, over_tls.stdout + over_tls.stderr
    assert "Received Store Response (Success)" in over_tls.stdout + over_tls.stderr
    plain = await run_dcmtk("storescu", *passcode, LOOPBACK, str(server.port), str(ct))
    assert plain.returncode != 0
    assert "Association Rejected" in plain.stdout + plain.stderr
