"""The security section of the configuration: permission words, defaults (embedded vs a
file), the known_calling_aes_only alias, users, JWT, the audit log path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from minipacs.config import ConfigError, load_config
from minipacs.ports import ALL_OPERATIONS, IdentityMode, Operation

HASH = "scrypt$16$1$1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "minipacs.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_config(path)


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return str(info.value)


def test_contract_keys(tmp_path: Path) -> None:
    config = load(tmp_path, f"""\
        peers:
          CT1: {{host: 10.0.0.5, port: 104, allow: [echo, store, commitment, mpps, worklist]}}
          WS1: {{host: 10.0.0.9, port: 11112, allow: [all]}}
          WS2: {{host: 10.0.0.10, port: 11112}}
        security:
          unknown_aes: [echo, store]
          check_peer_host: true
          identity: optional
          users: {{alice: {{password: "{HASH}", allow: [find, get]}}, kiosk: {{}}}}
          jwt: {{issuer: https://idp, audience: minipacs, key_file: keys/idp.pem,
                algorithms: [RS256, ES256]}}
          allow_passwords_without_tls: true
          http_anonymous: [find]
          failure_delay: 0.5
        logging: {{audit: logs/audit.jsonl}}
        """)
    base = tmp_path.resolve()
    assert config.peers["CT1"].allow == {Operation.ECHO, Operation.STORE, Operation.COMMITMENT,
                                         Operation.MPPS, Operation.WORKLIST}
    assert config.peers["WS1"].allow == ALL_OPERATIONS
    assert config.peers["WS2"].allow == ALL_OPERATIONS  # the default for a listed peer
    security = config.security
    assert config.unknown_ae_operations() == {Operation.ECHO, Operation.STORE}
    assert security.check_peer_host is True
    assert security.identity is IdentityMode.OPTIONAL
    assert security.users["alice"].password == HASH
    assert security.users["alice"].allow == {Operation.FIND, Operation.GET}
    assert security.users["kiosk"].password is None and security.users["kiosk"].allow is None
    assert security.jwt is not None
    assert security.jwt.key_file == base / "keys" / "idp.pem"
    assert security.jwt.algorithms == ("RS256", "ES256")
    assert (security.jwt.user_claim, security.jwt.leeway) == ("sub", 30.0)
    assert security.allow_passwords_without_tls is True
    assert config.anonymous_http_operations() == {Operation.FIND}
    assert security.failure_delay == 0.5
    assert config.logging.audit == base / "logs" / "audit.jsonl"


def test_defaults_beyond_the_embedded_ones(tmp_path: Path) -> None:
    """A file (even empty, even on loopback): unknown AEs echo and store, no anonymous HTTP."""
    config = load(tmp_path, "listen: {host: 127.0.0.1}\nhttp: {}\n")
    assert config.unknown_ae_operations() == {Operation.ECHO, Operation.STORE}
    assert config.anonymous_http_operations() == frozenset()
    assert config.security.identity is IdentityMode.NONE
    assert config.logging.audit is None


def test_embedded_defaults_are_open_on_loopback_only() -> None:
    config = load_config(None)
    assert config.listen.host == "127.0.0.1"
    assert config.unknown_ae_operations() == ALL_OPERATIONS
    assert config.anonymous_http_operations() == ALL_OPERATIONS
    from dataclasses import replace

    from minipacs.config import ListenConfig

    exposed = replace(config, listen=ListenConfig("0.0.0.0", 11112))  # serve --host 0.0.0.0
    assert exposed.unknown_ae_operations() == {Operation.ECHO, Operation.STORE}
    assert exposed.anonymous_http_operations() == frozenset()


def test_known_calling_aes_only_is_an_alias(tmp_path: Path) -> None:
    peers = "peers: {WS1: {host: 10.0.0.9, port: 104}}\n"
    closed = load(tmp_path, peers + "security: {known_calling_aes_only: true}\n")
    assert closed.unknown_ae_operations() == frozenset()
    open_ = load(tmp_path, peers + "security: {known_calling_aes_only: false}\n")
    assert open_.unknown_ae_operations() == {Operation.ECHO, Operation.STORE}
    assert "give only unknown_aes" in error(
        tmp_path, peers + "security: {known_calling_aes_only: true, unknown_aes: [echo]}\n")


@pytest.mark.parametrize(("text", "expected"), [
    ("security: {unknown_aes: [echo, read]}\n",
     "security.unknown_aes[1]: 'read' is not a permission word: echo, store, find, move, get, "
     "commitment, mpps, worklist or all"),
    ("security: {unknown_aes: [all, echo]}\n", "security.unknown_aes[0]: 'all' stands alone"),
    ("security: {unknown_aes: [echo, echo]}\n", "security.unknown_aes[1]: 'echo' is listed twice"),
    ("security: {unknown_aes: echo}\n", "security.unknown_aes: expected a list"),
    ("security: {unknown_aes: []}\n", "security.unknown_aes: refuses every calling AE not in "
                                      "peers, but no peers are configured"),
    ("peers: {WS: {host: a, port: 1, allow: [sto]}}\n", "peers.WS.allow[0]: 'sto' is not"),
    ("security: {identity: maybe}\n", "security.identity: 'maybe' is not one of none, "
                                      "optional, required"),
    ("security: {identity: required}\n", "security.identity: is required but neither users "
                                         "nor jwt"),
    ("security: {users: {alice: {password: hunter2}}}\n",
     "security.users.alice.password: expected a salted scrypt hash"),
    ("security: {users: {'al ice': {}}}\n",
     "security.users['al ice']: 'al ice' is not a user name: 1-64"),
    ("security: {users: {'a:b': {}}}\n", "is not a user name: 1-64 letters"),
    ("security: {users: {alice: {allow: [find], role: x}}}\n",
     "security.users.alice.role: unknown key"),
    ("security: {jwt: {issuer: i, audience: a}}\n",
     "security.jwt.key_file: required key is missing"),
    ("security: {jwt: {issuer: i, audience: a, key_file: k, algorithms: [HS256]}}\n",
     "security.jwt.algorithms[0]: 'HS256' is not one of"),
    ("security: {jwt: {issuer: i, audience: a, key_file: k, algorithms: [none]}}\n",
     "'none' is not one of"),
    ("security: {failure_delay: -1}\n", "security.failure_delay: -1 is not a valid duration"),
    ("security: {http_anonymous: [al]}\n", "security.http_anonymous[0]: 'al' is not"),
    ("logging: {audit: ''}\n", "logging.audit: must not be empty"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    message = error(tmp_path, text)
    assert "\n" not in message
    assert expected in message, message
