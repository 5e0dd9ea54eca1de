"""Throw-away PKI for the TLS tests: a CA, server and client certificates, made at test time.

Nothing is downloaded or kept: every key is new, every file lands in the caller's folder.
RSA keys by default (DCMTK's default BCP 195 profile proposes only *_RSA_* suites for
TLS 1.2); `ec=True` makes ECDSA ones (its extended profile proposes only *_ECDSA_* suites).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec as ec_keys
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RSA_BITS = 2048
Key = rsa.RSAPrivateKey | ec_keys.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class Identity:
    """A certificate and its private key as PEM files (and the CA file that signed it)."""

    certificate: Path
    private_key: Path
    ca: Path

    def pair(self) -> Path:
        """One PEM file holding the key and then the certificate (for tools that want one)."""
        both = self.certificate.with_suffix(".both.pem")
        both.write_bytes(self.private_key.read_bytes() + self.certificate.read_bytes())
        return both


def _new_key(ec: bool) -> Key:
    return ec_keys.generate_private_key(ec_keys.SECP256R1()) if ec \
        else rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def _write_key(key: Key, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "minipacs tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class TestCA:
    """A certification authority that issues certificates into `folder`."""

    __test__ = False  # not a pytest class

    def __init__(self, folder: Path, name: str = "minipacs test CA", *, ec: bool = False) -> None:
        self.folder = folder
        self.ec = ec
        folder.mkdir(parents=True, exist_ok=True)
        self.key = _new_key(ec)
        self.name = _name(name)
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        slug = name.replace(" ", "-")
        self.path = folder / f"{slug}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, *, expired: bool = False, ec: bool | None = None,
              hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Identity:
        """A certificate for `common_name` (server and client use), valid for `hosts`."""
        key = _new_key(self.ec if ec is None else ec)
        now = datetime.datetime.now(datetime.UTC)
        if expired:
            start, end = now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)
        else:
            start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        slug = common_name.replace(" ", "-")
        cert_path = self.folder / f"{slug}.crt.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return Identity(cert_path, _write_key(key, self.folder / f"{slug}.key.pem"), self.path)


@dataclass(frozen=True, slots=True)
class Pki:
    """What the TLS tests need: our CA with a server and a client, a client from another
    CA, an expired client, and a server certificate from the other CA."""

    ca: TestCA
    server: Identity
    client: Identity
    stranger: Identity  # issued by another CA
    expired: Identity  # ours, but no longer valid
    stranger_server: Identity  # a server certificate our CA did not issue


def make_pki(folder: Path, *, ec: bool = False) -> Pki:
    """A fresh PKI in `folder` (RSA keys unless `ec`)."""
    ca = TestCA(folder / "ca", ec=ec)
    other = TestCA(folder / "other", "other CA", ec=ec)
    return Pki(ca, ca.issue("server"), ca.issue("client"), other.issue("stranger"),
               ca.issue("expired", expired=True), other.issue("stranger-server"))


def tls_section(identity: Identity, **extra: object) -> dict[str, object]:
    """The ``tls:`` section of a test configuration for `identity` and its CA."""
    return {"certificate": str(identity.certificate),
            "private_key": str(identity.private_key),
            "ca_certificates": str(identity.ca), **extra}


def dcmtk_tls(identity: Identity | None, ca: Path) -> list[str]:
    """DCMTK's TLS options (+tls KEY CERT, or anonymous +tla without an identity; +cf CA)."""
    mine = ["+tla"] if identity is None else \
        ["+tls", str(identity.private_key), str(identity.certificate)]
    return [*mine, "+cf", str(ca)]
