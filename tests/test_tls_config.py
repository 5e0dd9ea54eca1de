"""The DICOM TLS configuration: listeners, the ``tls:`` section, and its file checks (PS3.15
B.1). Each problem is one line naming the key, from loading and from `serve --check`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from minipacs.app import preflight
from minipacs.config import ConfigError, PeerCertificate, load_config
from tests.certs import Pki, make_pki

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), ec=True)


def config_file(folder: Path, text: str) -> Path:
    path = folder / "minipacs.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def tls_lines(pki: Pki, **extra: str) -> str:
    keys = {"certificate": str(pki.server.certificate),
            "private_key": str(pki.server.private_key),
            "ca_certificates": str(pki.ca.path), **extra}
    return "tls: {" + ", ".join(f"{key}: {value!r}" for key, value in keys.items()) + "}\n"


def error_for(folder: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(config_file(folder, text))
    return str(info.value)


# --- listeners -------------------------------------------------------------------------------


def test_which_listeners_each_combination_gives(tmp_path: Path, pki: Pki) -> None:
    embedded = load_config(None)
    assert embedded.listen_tls is None and embedded.tls is None
    assert embedded.listen is not None and embedded.listen.port == 11112
    tls_only = load_config(config_file(tmp_path, "listen_tls: {}\n" + tls_lines(pki)))
    assert tls_only.listen is None  # no plain listener at all
    assert tls_only.listen_tls is not None
    assert (tls_only.listen_tls.host, tls_only.listen_tls.port) == ("127.0.0.1", 2762)
    both = load_config(config_file(tmp_path, "listen: {port: 104}\n"
                                   "listen_tls: {host: 0.0.0.0, port: 2762}\n" + tls_lines(pki)))
    assert both.listen is not None and both.listen.port == 104
    assert both.listen_tls is not None and both.listen_tls.host == "0.0.0.0"
    assert both.tls is not None and both.tls.peer_certificate is PeerCertificate.REQUIRE
    clash = error_for(tmp_path, "listen: {port: 2762}\nlisten_tls: {}\n" + tls_lines(pki))
    assert clash == ("config error: listen_tls.port: 2762 is also listen.port: the plain and "
                     "the TLS listener need ports of their own")


def test_relative_tls_paths_follow_the_config_file(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, """\
        listen_tls: {}
        tls: {certificate: pki/me.pem, private_key: pki/me.key, peer_certificate: ignore}
        """))
    assert config.tls is not None
    assert config.tls.certificate == tmp_path.resolve() / "pki" / "me.pem"
    assert config.tls.ca_certificates is None  # ignore: no client certificate is checked


@pytest.mark.parametrize(("text", "expected"), [
    ("listen_tls: {}\n",
     "config error: tls: section missing: listen_tls needs tls.certificate and tls.private_key"),
    ("peers: {WS1: {host: 10.0.0.9, port: 11112, tls: true}}\nhttp: {tls: true}\n",
     "config error: tls: section missing: peers.WS1.tls, http.tls needs tls.certificate"),
    ("listen_tls: {}\ntls: {private_key: k.pem, ca_certificates: ca.pem}\n",
     "config error: tls.certificate: required key is missing (listen_tls uses TLS)"),
    ("listen_tls: {}\ntls: {certificate: c.pem, ca_certificates: ca.pem}\n",
     "config error: tls.private_key: required key is missing (listen_tls uses TLS)"),
    ("listen_tls: {}\ntls: {certificate: c.pem, private_key: k.pem}\n",
     "config error: tls.ca_certificates: required key is missing: the CA certificates that "
     "peers' certificates are checked against (listen_tls with peer_certificate require)"),
    ("peers: {WS1: {host: h, port: 1, tls: true}}\ntls: {certificate: c, private_key: k}\n",
     "config error: tls.ca_certificates: required key is missing: the CA certificates that "
     "peers' certificates are checked against (peers.WS1.tls)"),
    ("listen_tls: {}\ntls: {certificate: c, private_key: k, peer_certificate: maybe}\n",
     "config error: tls.peer_certificate: 'maybe' is not one of require, verify-if-present, "
     "ignore"),
    ("tls: {certificate: c, private_kee: k}\n",
     "config error: tls.private_kee: unknown key (did you mean 'private_key'?)"),
    ("peers: {WS1: {host: h, port: 1, tls: yes please}}\n",
     "config error: peers.WS1.tls: expected true or false"),
    ("listen_tls: {port: 70000}\n", "config error: listen_tls.port: 70000 is out of range"),
])
def test_tls_configuration_errors_name_the_key(tmp_path: Path, text: str,
                                               expected: str) -> None:
    assert error_for(tmp_path, text).startswith(expected)


# --- the files, checked before serving --------------------------------------------------------


def test_preflight_names_the_key_of_a_bad_file(tmp_path: Path, pki: Pki) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM at all")
    cases = {
        "certificate": (str(tmp_path / "absent.pem"), "file not found: "),
        "private_key": (str(pki.client.private_key), "is not the key of the certificate"),
        "ca_certificates": (str(garbage), "no PEM certificate in "),
    }
    for key, (value, reason) in cases.items():
        config = load_config(config_file(
            tmp_path, f"listen_tls: {{}}\nstorage: {{root: {tmp_path / 'store'}}}\n"
                      + tls_lines(pki, **{key: value})))
        with pytest.raises(ConfigError) as info:
            preflight.check(config)
        assert str(info.value).startswith(f"config error: tls.{key}: "), info.value
        assert reason in str(info.value)
    config = load_config(config_file(tmp_path, f"listen_tls: {{}}\nstorage: {{root: "
                                               f"{tmp_path / 'store'}}}\n" + tls_lines(pki)))
    preflight.check(config)  # the good files load


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "minipacs", *args], capture_output=True,
                          text=True, timeout=30, env=env, check=False)


def test_serve_check_reports_tls(tmp_path: Path, pki: Pki) -> None:
    good = config_file(tmp_path, "listen_tls: {port: 2762}\n" + tls_lines(pki)
                       + "peers: {WS1: {host: 10.0.0.9, port: 2762, tls: true}}\n"
                       + f"storage: {{root: {tmp_path / 'store'}}}\n")
    result = run("serve", "--config", str(good), "--check", "--port", "2763")
    assert result.returncode == 0, result.stderr
    # On a TLS-only server --port moves the TLS listener: there is no other.
    assert "listen: (none)\nlisten_tls: 127.0.0.1:2763\n" in result.stdout
    assert "peers: WS1 (TLS)\n" in result.stdout
    assert (f"tls: certificate {pki.server.certificate}, peer certificates require "
            f"(CA {pki.ca.path})") in result.stdout
    pki.server.private_key.rename(pki.server.private_key.with_suffix(".gone"))
    try:
        bad = run("serve", "--config", str(good), "--check")
    finally:
        pki.server.private_key.with_suffix(".gone").rename(pki.server.private_key)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr == (f"config error: tls.private_key: file not found: "
                          f"{pki.server.private_key}\n")
