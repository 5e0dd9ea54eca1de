"""DICOMweb over HTTPS (``http.tls: true``): the same certificate and TLS policy as DICOM TLS,
no client certificate asked for; dicomweb-client and requests as the clients."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from tests.certs import make_pki, tls_section
from tests.support import LOOPBACK
from tests.web.webdata import ROOT, call, image, web_server, with_meta


async def test_dicomweb_over_https(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", ec=True)
    # DICOM's peer_certificate: require does not reach HTTP clients: they send none.
    async with web_server(tmp_path / "server", http={"tls": True},
                          tls=tls_section(pki.server, peer_certificate="require")) as web:
        await web.store([image(1, 1, 1), image(1, 1, 2)])
        base = f"https://{LOOPBACK}:{web.http_port}/dicom-web"
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would replace `verify`
        session.verify = str(pki.ca.path)
        client = DICOMwebClient(base, session=session)
        (study,) = await call(client.search_for_studies)
        # The URLs we hand out say https: viewers follow them.
        assert study["00081190"]["Value"] == [f"{base}/studies/{ROOT}.1"]
        instances = await call(client.retrieve_study, f"{ROOT}.1")
        assert sorted(ds.InstanceNumber for ds in instances) == [1, 2]
        await call(client.store_instances, [with_meta(image(1, 1, 3))])
        assert len(await call(client.search_for_instances, f"{ROOT}.1")) == 3
        health = await call(session.get, f"https://{LOOPBACK}:{web.http_port}/health/live",
                            timeout=10)
        assert health.ok
        with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP is not served
            await call(requests.get, f"http://{LOOPBACK}:{web.http_port}/health/live",
                       timeout=10)
        with pytest.raises(requests.exceptions.SSLError):  # nor to whoever distrusts us
            await call(requests.get, f"https://{LOOPBACK}:{web.http_port}/health/live",
                       timeout=10, verify=str(pki.stranger.ca))
        # BCP 195 here too: TLS 1.3 when offered; TLS 1.2 only with an AEAD suite.
        assert await call(_version_and_cipher, web.http_port, pki.ca.path, None) == (
            "TLSv1.3", "TLS_AES_256_GCM_SHA384")
        version, cipher = await call(_version_and_cipher, web.http_port, pki.ca.path,
                                     ssl.TLSVersion.TLSv1_2)
        assert version == "TLSv1.2" and cipher.startswith("ECDHE-ECDSA-") \
            and ("GCM" in cipher or "CHACHA20" in cipher), cipher


def _version_and_cipher(port: int, ca: Path, maximum: ssl.TLSVersion | None
                        ) -> tuple[str | None, str]:
    import socket

    context = ssl.create_default_context(cafile=str(ca))
    if maximum is not None:
        context.maximum_version = maximum
    with socket.create_connection((LOOPBACK, port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
        return tls.version(), tls.cipher()[0]  # type: ignore[index]
