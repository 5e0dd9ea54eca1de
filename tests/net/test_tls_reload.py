"""SIGHUP reloads the TLS certificate, key and CA files of a real `minipacs serve` (uvloop):
new associations and HTTPS connections use the new ones, running associations go on, and
a reload that fails keeps the previous files' contexts and says so in one ERROR line."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
from pathlib import Path

from minipacs.app.scu import _echo
from minipacs.app.tls import client_tls
from minipacs.net.client import association
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.sop import PROPOSABLE_UNCOMPRESSED, VERIFICATION
from minipacs.proto.status import Status
from minipacs.services.echo import echo
from tests.certs import Identity, TestCA
from tests.support import LOOPBACK, WAIT, serve_process

MAX_PDU = 16384


def install(identity: Identity, ca: TestCA, folder: Path) -> None:
    """Put `identity` and `ca` where the configuration points (each file replaced at once)."""
    for source, name in ((identity.certificate, "server.pem"), (identity.private_key,
                         "server.key"), (ca.path, "ca.pem")):
        part = folder / f"{name}.part"
        part.write_bytes(source.read_bytes())
        os.replace(part, folder / name)


def server_name(port: int, trust: Path, client: Identity) -> str:
    """The common name of the certificate the server shows a new TLS connection."""
    context = ssl.create_default_context(cafile=str(trust))
    context.check_hostname = False
    context.load_cert_chain(client.certificate, client.private_key)
    with socket.create_connection((LOOPBACK, port), timeout=WAIT) as raw, \
            context.wrap_socket(raw) as tls:
        subject = dict(item for rdn in tls.getpeercert()["subject"] for item in rdn)
    return str(subject["commonName"])


async def test_sighup_reloads_certificates_for_new_associations(tmp_path: Path) -> None:
    ca_a, ca_b = TestCA(tmp_path / "a", "CA A", ec=True), TestCA(tmp_path / "b", "CA B", ec=True)
    server_a, server_b = ca_a.issue("server-a"), ca_b.issue("server-b")
    client_a, client_b = ca_a.issue("client-a"), ca_b.issue("client-b")
    trust = tmp_path / "both-cas.pem"  # the clients trust both servers
    trust.write_bytes(ca_a.path.read_bytes() + ca_b.path.read_bytes())
    live = tmp_path / "tls"
    live.mkdir()
    install(server_a, ca_a, live)
    files = {"certificate": str(live / "server.pem"), "private_key": str(live / "server.key"),
             "ca_certificates": str(live / "ca.pem")}
    with serve_process(tmp_path, listen_tls={"host": LOOPBACK, "port": 0}, tls=files,
                       http={"host": LOOPBACK, "port": 0, "tls": True}) as served:
        port = int(served.wait_for_line(r"listening on \S+ and [^ ]+:(\d+) \(TLS\)")[1])
        https = int(served.wait_for_line(r"DICOMweb at https://[^:]+:(\d+)")[1])

        async def name(on: int, client: Identity = client_a) -> str:
            return await asyncio.to_thread(server_name, on, trust, client)

        async def echo_as(client: Identity) -> tuple[bool, str]:
            context = client_tls(client.certificate, client.private_key, trust)
            return await _echo(LOOPBACK, port, "PROBE", "ANY-SCP", WAIT, MAX_PDU, context)

        assert (await name(port), await name(https)) == ("server-a", "server-a")
        request = build_associate_rq("HELD", "ANY-SCP", [(VERIFICATION, PROPOSABLE_UNCOMPRESSED)])
        held_context = client_tls(client_a.certificate, client_a.private_key, trust)
        async with association(LOOPBACK, port, request, tls=held_context) as held:
            install(server_b, ca_b, live)
            served.signal(signal.SIGHUP)
            served.wait_for_line("SIGHUP: TLS certificates reloaded")
            assert (await name(port, client_b), await name(https)) == ("server-b", "server-b")
            assert (await echo_as(client_b))[0]
            ok, message = await echo_as(client_a)  # CA A is no longer trusted
            assert not ok and "TLS: " in message, message
            async with asyncio.timeout(WAIT):  # the association from before goes on
                assert await echo(held) == Status.SUCCESS
            (live / "server.key").write_text("not a key")
            served.signal(signal.SIGHUP)
            error = served.wait_for_line(r" ERROR .*SIGHUP").string
            assert error.endswith("SIGHUP: TLS reload failed, the previous certificates stay "
                                  f"in use: config error: tls.private_key: no usable PEM private "
                                  f"key in {live / 'server.key'}"), error
            assert (await name(port, client_b), await name(https)) == ("server-b", "server-b")
            assert (await echo_as(client_b))[0]
        served.signal(signal.SIGTERM)
        assert served.wait() == 0, served.log
    assert served.log.count(" ERROR ") == 1, served.log
    held_line = next(line for line in served.lines if "calling='HELD'" in line)
    assert "tls=TLSv1.3/" in held_line and held_line.endswith("messages=1 result=released")
