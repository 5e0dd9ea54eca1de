"""DICOM TLS on the way out (PS3.15 B.1): C-MOVE to `storescp +tls`, C-GET and C-MOVE by a
pynetdicom SCU over TLS, Storage Commitment reports to a TLS peer, `peers check`, and the
``--tls --cert --tls-key --ca`` options of the SCU commands.

One server for the module (a plain and a TLS listener), its peers reached over TLS: DCMTK's
storescp as the Move Destination and `minipacs commit --listen` waiting for its report.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import pytest
import pytest_asyncio
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from minipacs.net.server import Server
from minipacs.proto.sop import STUDY_ROOT_QR_GET, STUDY_ROOT_QR_MOVE
from minipacs.proto.status import Status
from tests.certs import Identity, Pki, dcmtk_tls, make_pki, tls_section
from tests.net.test_logs import write_cts
from tests.support import (
    LOOPBACK,
    TEST_LIMITS,
    UID_ROOT,
    WAIT,
    AssociationLog,
    StoreSCP,
    free_port,
    make_config,
    pynetdicom_ae,
    run_minipacs,
    running_server,
    storescp,
    write_config,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER_AE: Final = "TLS_PACS"
MODALITY: Final = "MODALITY"
STUDY: Final = f"{UID_ROOT}.1"
COUNT: Final = 3
# Reports are delivered after the N-ACTION's association: the peer's listener, over TLS.
COMMITMENT: Final = {"same_association": False, "retry_delay": 0.2, "max_retry_delay": 0.4,
                     "timeout": 5}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def commit_port() -> int:
    return free_port()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def destination(pki: Pki, tmp_path_factory: pytest.TempPathFactory
                      ) -> AsyncIterator[StoreSCP]:
    """DCMTK storescp accepting only TLS clients whose certificate our CA issued."""
    async with storescp(tmp_path_factory.mktemp("storescp"),
                        *dcmtk_tls(pki.client, pki.ca.path)) as scp:
        yield scp


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(pki: Pki, destination: StoreSCP, commit_port: int,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    directory = tmp_path_factory.mktemp("server")
    config = make_config(
        directory, ae_title=SERVER_AE, limits=TEST_LIMITS, commitment=COMMITMENT,
        listen_tls={"host": LOOPBACK, "port": 0}, tls=tls_section(pki.server),
        peers={"STORESCP": {"host": LOOPBACK, "port": destination.port, "tls": True},
               MODALITY: {"host": LOOPBACK, "port": commit_port, "tls": True}})
    async with running_server(config) as server:
        yield server


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_cts(tmp_path_factory.mktemp("files"), COUNT)


def tls_options(identity: Identity, ca: Path | None = None) -> list[str]:
    """The SCU commands' TLS options for `identity` (its own CA unless `ca`)."""
    return ["--tls", "--cert", str(identity.certificate), "--tls-key",
            str(identity.private_key), "--ca", str(ca or identity.ca)]


def tls_port(server: Server) -> str:
    assert server.tls_port is not None
    return str(server.tls_port)


async def minipacs(*args: str) -> tuple[int, str, str]:
    result = await run_minipacs(*args, timeout=30)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout, result.stderr


# --- the SCU commands --------------------------------------------------------------------------


async def test_scu_commands_over_tls(server: Server, pki: Pki, files: list[Path],
                                     tmp_path: Path, assoc_log: AssociationLog) -> None:
    mine = tls_options(pki.client)
    port = tls_port(server)
    code, out, err = await minipacs("store", LOOPBACK, port, *map(str, files), *mine)
    assert code == 0, err
    assert out.startswith(f"{COUNT} stored, 0 warnings, 0 failed"), out
    code, out, err = await minipacs("find", LOOPBACK, port, "-k", "StudyInstanceUID",
                                    "-k", "PatientID=LOOP-1", *mine)
    assert code == 0, err
    assert STUDY in out and "1 match " in err
    code, out, err = await minipacs("get", LOOPBACK, port, "-k", f"StudyInstanceUID={STUDY}",
                                    "--out", str(tmp_path / "got"), *mine)
    assert code == 0, err
    assert len(list((tmp_path / "got").glob("*.dcm"))) == COUNT
    code, out, err = await minipacs("move", LOOPBACK, port, "-k", f"StudyInstanceUID={STUDY}",
                                    "--dest", "STORESCP", *mine)  # to storescp over TLS too
    assert code == 0, err
    assert f"{COUNT} completed, 0 failed" in out, out
    code, out, err = await minipacs("echo", LOOPBACK, port, "--aec", SERVER_AE, *mine)
    assert code == 0, err
    lines = await assoc_log.wait_for(5)
    assert all(" tls=TLSv1.3/" in line and " cert='client' " in line for line in lines)


async def test_scu_tls_problems_are_one_line(server: Server, pki: Pki, tmp_path: Path) -> None:
    port = tls_port(server)
    untrusting = await minipacs("echo", LOOPBACK, port, *tls_options(pki.client, pki.stranger.ca))
    assert untrusting[0] == 1
    assert untrusting[2].startswith(f"TLS handshake with {LOOPBACK}:{port} failed: "
                                    "certificate verify failed: "), untrusting
    assert untrusting[2].count("\n") == 1
    refused = await minipacs("echo", LOOPBACK, port, *tls_options(pki.stranger, pki.ca.path))
    assert refused[0] == 1
    assert refused[2] == (f"association with {LOOPBACK}:{port} failed: peer: TLS: the peer "
                          "does not trust our certificate (tlsv1 alert unknown ca)\n")
    plain = await minipacs("echo", LOOPBACK, str(server.port), *tls_options(pki.client))
    assert plain[0] == 1
    assert "the peer does not speak TLS" in plain[2]
    no_pem = tmp_path / "empty.pem"
    no_pem.write_text("")
    usage = [
        (["--cert", str(pki.client.certificate)], "minipacs echo: error: --cert needs --tls"),
        (["--tls", "--ca", str(no_pem)], f"minipacs echo: error: --ca: no PEM certificate in "
                                         f"{no_pem}"),
        (["--tls", "--cert", str(pki.client.certificate), "--tls-key",
          str(pki.server.private_key)], "minipacs echo: error: --tls-key: "),
    ]
    for options, message in usage:
        code, _, err = await minipacs("echo", LOOPBACK, port, *options)
        assert code == 2, (options, err)
        assert err.startswith(message) and err.count("\n") == 1, err


# --- retrieving over TLS, to a TLS destination -------------------------------------------------


def pynetdicom_retrieve(port: int, context: ssl.SSLContext, sop_class: str,
                        destination: str | None) -> tuple[int, dict[str, Dataset]]:
    """C-MOVE (to `destination`) or C-GET over TLS with pynetdicom: final status, received."""
    from pynetdicom import build_role, evt

    received: dict[str, Dataset] = {}

    def on_store(event: Any) -> int:
        received[event.request.AffectedSOPInstanceUID] = event.dataset
        return 0

    ae = pynetdicom_ae("PYNET_TLS")
    ae.add_requested_context(sop_class)
    roles = []
    if destination is None:
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        roles = [build_role(CTImageStorage, scp_role=True)]
    assoc = ae.associate(LOOPBACK, port, ae_title=SERVER_AE, tls_args=(context, None),
                         ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = STUDY
    try:
        responses = (assoc.send_c_move(query, destination, sop_class) if destination
                     else assoc.send_c_get(query, sop_class))
        final = [status.Status for status, _ in responses][-1]
    finally:
        assoc.release()
    return int(final), received


def client_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki.ca.path)
    context.check_hostname = False
    context.load_cert_chain(pki.client.certificate, pki.client.private_key)
    return context


async def test_pynetdicom_move_to_storescp_and_get_over_tls(
        server: Server, pki: Pki, destination: StoreSCP, files: list[Path],
        assoc_log: AssociationLog) -> None:
    code, _, err = await minipacs("store", LOOPBACK, tls_port(server), *map(str, files),
                                  *tls_options(pki.client))
    assert code == 0, err
    for earlier in destination.directory.iterdir():  # what other tests moved there
        earlier.unlink()
    context = client_context(pki)
    status, _ = await asyncio.to_thread(pynetdicom_retrieve, int(tls_port(server)), context,
                                        STUDY_ROOT_QR_MOVE, "STORESCP")
    assert status == Status.SUCCESS
    arrived = {dcmread(path).SOPInstanceUID for path in destination.directory.iterdir()}
    assert arrived == {dcmread(path).SOPInstanceUID for path in files}
    status, got = await asyncio.to_thread(pynetdicom_retrieve, int(tls_port(server)), context,
                                          STUDY_ROOT_QR_GET, None)
    assert status == Status.SUCCESS
    assert set(got) == arrived
    (_, move_line, get_line) = await assoc_log.wait_for(3)
    for line in (move_line, get_line):
        assert " tls=TLSv1.3/" in line and "calling='PYNET_TLS'" in line, line


# --- reports and checks to TLS peers ----------------------------------------------------------


async def test_commitment_report_comes_over_tls(server: Server, pki: Pki, files: list[Path],
                                                commit_port: int) -> None:
    code, _, err = await minipacs("store", LOOPBACK, tls_port(server), str(files[0]),
                                  *tls_options(pki.client))
    assert code == 0, err
    # Our association to the server and the server's to our listener are both TLS.
    code, out, err = await minipacs(
        "commit", LOOPBACK, tls_port(server), str(files[0]), "--calling-ae", MODALITY,
        "--called-ae", SERVER_AE, "--listen", str(commit_port), "--listen-host", LOOPBACK,
        "--timeout", str(WAIT), *tls_options(pki.client))
    assert code == 0, (commit_port, err)
    assert "1 of 1 instance(s) committed (event type 1" in out


async def test_peers_check_over_tls(server: Server, pki: Pki, tmp_path: Path) -> None:
    config = write_config(tmp_path, ae_title="CHECKER", tls=tls_section(pki.client), peers={
        "PACS_TLS": {"host": LOOPBACK, "port": int(tls_port(server)), "tls": True},
        "PACS_PLAIN": {"host": LOOPBACK, "port": server.port, "tls": True},
    })
    code, out, _ = await minipacs("peers", "check", "--config", str(config))
    assert code == 1
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert f"{LOOPBACK}:{tls_port(server)} TLS  OK " in lines["PACS_TLS"]
    assert lines["PACS_PLAIN"].endswith(
        f"FAILED  TLS handshake with {LOOPBACK}:{server.port} failed: the peer does not speak "
        "TLS (a plain DICOM client?) (wrong version number)")
