"""The README's security example works as written: it loads, and it means what the README
says (issue 12 item 6)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from minipacs.app.security import build_access_policy, build_authenticator
from minipacs.app.users import insert_user
from minipacs.config import load_config
from minipacs.ports import Operation, Principal
from minipacs.security.passwords import ScryptHash, verify_password

REPO = Path(__file__).resolve().parent.parent
MODALITY = {Operation.ECHO, Operation.STORE, Operation.COMMITMENT, Operation.MPPS,
            Operation.WORKLIST}
READING = {Operation.ECHO, Operation.FIND, Operation.MOVE}


def example() -> str:
    """The YAML block of README "### A worked example"."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### A worked example", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


def _certificates(folder: Path) -> None:
    """tls/hospital-ca.crt and a server certificate it signed, as the example names them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir()
    now = datetime.now(UTC)

    def certificate(name: str, key: Any, issuer: x509.Name, signer: Any,
                    ca: bool) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .sign(signer, hashes.SHA256()))

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca = certificate("Hospital CA", ca_key, x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "Hospital CA")]), ca_key, True)
    server = certificate("minipacs", key, ca.subject, ca_key, False)
    pem = serialization.Encoding.PEM
    (folder / "hospital-ca.crt").write_bytes(ca.public_bytes(pem))
    (folder / "minipacs.crt").write_bytes(server.public_bytes(pem))
    (folder / "minipacs.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def test_the_worked_example(tmp_path: Path) -> None:
    text = example()
    path = tmp_path / "minipacs.yaml"
    _certificates(tmp_path / "tls")
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    assert config.logging.audit == Path("/var/log/minipacs/audit.jsonl")
    policy = build_access_policy(config)
    # Two modalities store (and commitment, MPPS, worklist), from their own addresses only.
    for title, host in (("CT1", "10.0.0.5"), ("MR1", "10.0.0.6")):
        assert policy.refusal(title, host) is None
        assert policy.operations(Principal(host, None, title)) == MODALITY
        assert policy.refusal(title, "10.0.0.99") is not None
    # One workstation finds and moves.
    assert policy.operations(Principal("10.0.0.9", None, "WS1")) == READING
    # Everyone else is refused.
    assert policy.refusal("STRANGER", "10.0.0.9") is not None
    # One user, who finds and moves whatever admitted AE it calls from.
    assert policy.operations(Principal("10.0.0.5", "alice", "CT1")) == READING
    assert config.security.identity.value == "optional"
    stored = config.security.users["alice"].password
    assert stored is not None and verify_password("change-me", ScryptHash.parse(stored))
    build_authenticator(config)  # the hash is one the server accepts at start


def test_user_add_edits_the_example_in_place() -> None:
    text = example()
    hashed = "scrypt$16$1$1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"
    result = insert_user(text, "alice", hashed)
    assert isinstance(result, tuple) and result[1] is True  # alice's password replaced
    before, after = text.splitlines(), result[0].splitlines()
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert len(changed) == 1 and hashed in changed[0][1]
    assert "# minipacs user add alice" in result[0]  # comments stay
