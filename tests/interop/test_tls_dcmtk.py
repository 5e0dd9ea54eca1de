"""DICOM TLS listener (PS3.15 B.1, BCP 195) with DCMTK's TLS tools as the peers.

One server for the module, with a plain and a TLS listener and `peer_certificate: require`;
the tests that need other settings start their own. Certificates are made at test time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import pytest
import pytest_asyncio

from minipacs.app.tls import client_tls
from minipacs.net.client import association
from minipacs.net.server import Server
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.sop import PROPOSABLE_UNCOMPRESSED, VERIFICATION
from minipacs.proto.status import Status
from minipacs.services.echo import echo
from tests.certs import Pki, dcmtk_tls, make_pki, tls_section
from tests.net.test_logs import write_cts
from tests.support import (
    LOOPBACK,
    TEST_LIMITS,
    WAIT,
    AssociationLog,
    make_config,
    run_dcmtk,
    running_server,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER_AE: Final = "TLS_PACS"
# The transport field of the association line for an established TLS association: the
# version, and an AEAD suite (TLS 1.3's, or TLS 1.2 ECDHE with GCM or ChaCha20-Poly1305).
TLS_FIELD: Final = re.compile(
    r" tls=(TLSv1\.3/TLS_(AES_\d+_GCM|CHACHA20_POLY1305)_SHA\d+"
    r"|TLSv1\.2/ECDHE-(RSA|ECDSA)-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305))"
    r" cert='client' ")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    # RSA: DCMTK's default profile proposes only ECDHE_RSA suites for TLS 1.2.
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_config(directory: Path, pki: Pki, **extra: Any) -> Any:
    """A server with a plain listener and a TLS one, both on free ports."""
    return make_config(directory, ae_title=SERVER_AE, limits=extra.pop("limits", TEST_LIMITS),
                       listen_tls={"host": LOOPBACK, "port": 0},
                       tls=tls_section(pki.server, **extra.pop("tls", {})), **extra)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running_server(tls_config(tmp_path_factory.mktemp("server"), pki)) as server:
        yield server


def tls_port(server: Server) -> str:
    assert server.tls_port is not None
    return str(server.tls_port)


async def echoscu(port: str, *options: str) -> str:
    """echoscu's output; fails the test unless it exited 0."""
    result = await run_dcmtk("echoscu", "-aec", SERVER_AE, *options, LOOPBACK, port)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


async def refused(port: str, *options: str) -> str:
    """echoscu's output; fails the test if it succeeded."""
    result = await run_dcmtk("echoscu", "-aec", SERVER_AE, *options, LOOPBACK, port)
    assert result.returncode != 0, result.stdout + result.stderr
    return result.stdout + result.stderr


# --- the DCMTK tools over TLS -------------------------------------------------------------------


async def test_echoscu_storescu_findscu_over_tls(server: Server, pki: Pki, tmp_path: Path,
                                                 assoc_log: AssociationLog) -> None:
    tls = dcmtk_tls(pki.client, pki.ca.path)
    # The profiles of PS3.15: non-downgrading BCP 195 (DCMTK's default), BCP 195, extended.
    for profile in ("+py", "+px", "+pz"):
        assert "Received Echo Response (Success)" in await echoscu(
            tls_port(server), "-v", profile, *tls)
    stored = await run_dcmtk("storescu", "-aec", SERVER_AE, *tls, LOOPBACK, tls_port(server),
                             str(write_cts(tmp_path, 1)[0]))
    assert stored.returncode == 0, stored.stdout + stored.stderr
    found = await run_dcmtk("findscu", "-S", "-aec", SERVER_AE, *tls, "-k",
                            "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k",
                            "PatientID=LOOP-1", LOOPBACK, tls_port(server))
    output = found.stdout + found.stderr
    assert found.returncode == 0, output
    assert output.count("Find Response: 1 (Pending)") == 1, output
    lines = await assoc_log.wait_for(5)
    assert len(lines) == 5
    for line in lines:
        assert TLS_FIELD.search(line), line
        assert line.endswith("result=released"), line
    assert " stored=1 duplicates=0 failed=0 " in lines[3]


async def test_failures_end_cleanly_while_other_associations_go_on(
        server: Server, pki: Pki, assoc_log: AssociationLog) -> None:
    request = build_associate_rq("HELD", SERVER_AE, [(VERIFICATION, PROPOSABLE_UNCOMPRESSED)])
    context = client_tls(pki.client.certificate, pki.client.private_key, pki.ca.path)
    async with contextlib.AsyncExitStack() as held:
        # One TLS and one plain association stay open while the others fail.
        over_tls = await held.enter_async_context(
            association(LOOPBACK, int(tls_port(server)), request, tls=context))
        plain = await held.enter_async_context(association(LOOPBACK, server.port, request))
        port = tls_port(server)
        wrong_ca = await refused(port, *dcmtk_tls(pki.stranger, pki.ca.path))
        expired = await refused(port, *dcmtk_tls(pki.expired, pki.ca.path))
        untrusted = await refused(port, *dcmtk_tls(pki.client, pki.stranger.ca))
        plain_on_tls = await refused(port)
        tls_on_plain = await refused(str(server.port), *dcmtk_tls(pki.client, pki.ca.path))
        for conn in (over_tls, plain):
            async with asyncio.timeout(WAIT):
                assert await echo(conn) == Status.SUCCESS
    assert "TLS error: certificate verify failed" in untrusted
    assert "TLS error: wrong version number" in tls_on_plain
    for output in (wrong_ca, expired, plain_on_tls):
        assert "Association Request Failed" in output, output
    lines = await assoc_log.wait_for(7)
    failures, held_lines = lines[:5], lines[5:]
    assert [line.split(" result=", 1)[1] for line in failures] == [
        "tls-failed (certificate verify failed: unable to get local issuer certificate)",
        "tls-failed (certificate verify failed: certificate has expired)",
        "tls-failed (the peer does not trust our certificate (tlsv1 alert unknown ca))",
        "tls-failed (the peer does not speak TLS (a plain DICOM client?) "
        "(wrong version number))",
        "aborted (we: unrecognized PDU type 0x16 (a TLS client on the plain port?))",
    ]
    assert all(" tls=failed calling=- " in line for line in failures[:4])
    assert " tls=no calling=- " in failures[4]
    assert sorted(" tls=no " in line for line in held_lines) == [False, True]
    assert all(line.endswith("messages=1 result=released") for line in held_lines)


# --- tls.peer_certificate --------------------------------------------------------------------


async def test_peer_certificate_modes(server: Server, pki: Pki, tmp_path: Path,
                                      assoc_log: AssociationLog) -> None:
    anonymous = dcmtk_tls(None, pki.ca.path)
    no_cert = await refused(tls_port(server), *anonymous)  # require (the module's server)
    assert "Association Request Failed" in no_cert
    (line,) = await assoc_log.wait_for(1)
    assert line.endswith("result=tls-failed (the peer sent no certificate "
                         "(peer did not return a certificate))"), line
    outcomes: dict[str, list[bool]] = {}
    for mode in ("verify-if-present", "ignore"):
        (tmp_path / mode).mkdir()
        config = tls_config(tmp_path / mode, pki, tls={"peer_certificate": mode})
        async with running_server(config) as other:
            outcomes[mode] = []
            for identity in (None, pki.client, pki.stranger):
                result = await run_dcmtk("echoscu", *dcmtk_tls(identity, pki.ca.path),
                                         LOOPBACK, tls_port(other))
                outcomes[mode].append(result.returncode == 0)
    # verify-if-present: no certificate or a good one; ignore: none is asked for.
    assert outcomes == {"verify-if-present": [True, True, False], "ignore": [True, True, True]}
    lines = (await assoc_log.wait_for(7))[1:]
    # A certificate is named only where one was asked for, sent and verified.
    assert [" cert='client' " in line for line in lines] == [False, True, False] + [False] * 3
    assert "certificate verify failed" in lines[2]
    assert all(line.endswith("result=released") for line in lines[3:])


# --- the handshake phase --------------------------------------------------------------------


async def test_silent_tls_clients_hold_no_slot(pki: Pki, tmp_path: Path,
                                               assoc_log: AssociationLog) -> None:
    limits = {**TEST_LIMITS, "max_handshakes": 2, "handshake_timeout": 2.0}
    async with running_server(tls_config(tmp_path, pki, limits=limits)) as server:
        port = int(tls_port(server))
        silent = []
        for _ in range(3):  # connect and never say a word: no ClientHello
            async with asyncio.timeout(WAIT):
                silent.append(await asyncio.open_connection(LOOPBACK, port))
        try:  # a TLS client gets its turn at once: the oldest silent ones make room
            await echoscu(str(port), *dcmtk_tls(pki.client, pki.ca.path))
            lines = await assoc_log.wait_for(4)
        finally:
            for _, writer in silent:
                writer.close()
    outcomes = sorted(line.split(" result=", 1)[1] for line in lines)
    assert outcomes == [
        "dropped (2 connections were waiting for their A-ASSOCIATE-RQ; the oldest made room)",
        "dropped (2 connections were waiting for their A-ASSOCIATE-RQ; the oldest made room)",
        "released",
        "timeout (no TLS handshake within 2 s)",
    ], lines
