"""The access policy as a pure object: (AE, address, user, operation) → allowed or not."""

from __future__ import annotations

import pytest

from minipacs.ports import ALL_OPERATIONS, Operation, Principal
from minipacs.security.policy import AccessPolicy, PeerRule, normal_address

CT = frozenset({Operation.ECHO, Operation.STORE, Operation.COMMITMENT, Operation.MPPS,
                Operation.WORKLIST})
DEFAULT_UNKNOWN = frozenset({Operation.ECHO, Operation.STORE})


def policy(**changes: object) -> AccessPolicy:
    options: dict[str, object] = {
        "peers": {"CT1": PeerRule(frozenset({"10.0.0.5"}), CT),
                  "WS1": PeerRule(frozenset({"10.0.0.9"}), ALL_OPERATIONS)},
        "unknown_aes": DEFAULT_UNKNOWN,
        "users": {"alice": frozenset({Operation.FIND, Operation.GET}), "bob": None},
    }
    options.update(changes)
    return AccessPolicy(**options)  # type: ignore[arg-type]


def dicom(ae: str, host: str = "10.0.0.5", user: str | None = None) -> Principal:
    return Principal(host, user, ae)


@pytest.mark.parametrize("operation", list(Operation))
def test_unknown_ae_may_echo_and_store_only(operation: Operation) -> None:
    allowed = policy().allowed(dicom("STRANGER", "192.0.2.1"), operation)
    assert allowed is (operation in (Operation.ECHO, Operation.STORE))


@pytest.mark.parametrize("operation", list(Operation))
def test_a_peer_does_its_allow_list(operation: Operation) -> None:
    assert policy().allowed(dicom("CT1"), operation) is (operation in CT)
    assert policy().allowed(dicom("WS1", "10.0.0.9"), operation)


def test_ae_titles_compare_without_padding() -> None:
    assert policy().operations(dicom(" CT1  ")) == CT
    assert policy().refusal("CT1  ", "10.0.0.5") is None


def test_empty_unknown_aes_refuses_the_association() -> None:
    closed = policy(unknown_aes=frozenset())
    reason = closed.refusal("STRANGER", "192.0.2.1")
    assert reason is not None and "'STRANGER'" in reason
    assert closed.refusal("CT1", "192.0.2.1") is None  # host not checked by default
    assert policy().refusal("STRANGER", "192.0.2.1") is None


def test_check_peer_host() -> None:
    checked = policy(check_peer_host=True)
    assert checked.refusal("CT1", "10.0.0.5") is None
    reason = checked.refusal("CT1", "10.0.0.6")
    assert reason is not None and "10.0.0.6" in reason
    # Defence in depth: the per-request answer agrees with the admission.
    assert checked.operations(dicom("CT1", "10.0.0.6")) == frozenset()
    assert checked.operations(dicom("CT1", "::ffff:10.0.0.5")) == CT  # dual-stack listener
    # Unknown AEs are not host-checked: they have no configured host.
    assert checked.refusal("STRANGER", "10.0.0.6") is None


def test_a_user_list_replaces_the_ae_list() -> None:
    access = policy()
    assert access.operations(dicom("CT1", user="alice")) == {Operation.FIND, Operation.GET}
    assert access.operations(dicom("STRANGER", user="alice")) == {Operation.FIND,
                                                                  Operation.GET}
    # Without a list of its own, a user does what its AE does.
    assert access.operations(dicom("CT1", user="bob")) == CT
    assert access.operations(dicom("STRANGER", user="bob")) == DEFAULT_UNKNOWN
    # A user (from a JWT) not configured at all likewise.
    assert access.operations(dicom("CT1", user="carol")) == CT


def test_http_principals() -> None:
    access = policy(http_anonymous=frozenset({Operation.FIND}))
    assert access.operations(Principal("192.0.2.1")) == {Operation.FIND}
    assert access.operations(Principal("192.0.2.1", "alice")) == {Operation.FIND,
                                                                  Operation.GET}
    assert access.operations(Principal("192.0.2.1", "bob")) == ALL_OPERATIONS
    assert policy().operations(Principal("127.0.0.1")) == frozenset()


@pytest.mark.parametrize(("given", "expected"), [
    ("::ffff:192.0.2.1", "192.0.2.1"), ("192.0.2.1", "192.0.2.1"), ("::1", "::1"),
    ("fe80::1%eth0", "fe80::1"), ("host.example", "host.example"),
])
def test_normal_address(given: str, expected: str) -> None:
    assert normal_address(given) == expected


def test_describe_names_every_rule() -> None:
    lines = policy(check_peer_host=True).describe()
    assert lines == [
        "peer 'CT1': [echo, store, commitment, mpps, worklist] from 10.0.0.5",
        "peer 'WS1': [all] from 10.0.0.9",
        "unknown calling AEs: [echo, store]",
        "user 'alice': [find, get]",
        "user 'bob': its AE's rights",
        "HTTP without credentials: []",
    ]
    assert "(associations refused)" in policy(unknown_aes=frozenset()).describe()[2]
