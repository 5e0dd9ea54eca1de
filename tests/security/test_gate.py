"""Admission of associations: the policy, then the user identity (PS3.7 D.3.3.7), without
sockets — every mode against missing, good and bad identities of every type."""

from __future__ import annotations

import asyncio

import pytest

from minipacs.ports import ALL_OPERATIONS, AdmissionRequest, IdentityMode, Operation
from minipacs.proto.pdu import AAssociateRJ, UserIdentityRQ
from minipacs.security.authenticate import UserAuthenticator
from minipacs.security.gate import Gatekeeper
from minipacs.security.passwords import ScryptHash, hash_password
from minipacs.security.policy import AccessPolicy, PeerRule
from minipacs.security.throttle import FailureThrottle
from minipacs.security.tokens import TokenVerifier
from tests.tokens import SigningKey, signing_key

CHEAP = (1 << 4, 1, 1)
# PS3.8 §9.3.4: (result, source, reason) of the two refusals.
BAD_IDENTITY = AAssociateRJ(1, 2, 1)  # permanent, ACSE provider, no reason given
UNKNOWN_AE = AAssociateRJ(1, 1, 3)  # permanent, service user, calling AE not recognized
WS = frozenset({Operation.ECHO, Operation.FIND, Operation.MOVE})


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return signing_key(tmp_path_factory.mktemp("keys"))


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def gate(key: SigningKey, identity: IdentityMode, *, unknown: frozenset[Operation] = WS,
         passwords_without_tls: bool = True, sleeps: Sleeps | None = None) -> Gatekeeper:
    access = AccessPolicy(peers={"WS1": PeerRule(frozenset({"10.0.0.9"}), WS)},
                          unknown_aes=unknown,
                          users={"alice": frozenset({Operation.GET}), "bob": None,
                                 "kiosk": None})
    passwords: dict[str, ScryptHash | None] = {
        "alice": ScryptHash.parse(hash_password("wonderland", cost=CHEAP)),
        "bob": ScryptHash.parse(hash_password("builder", cost=CHEAP)),
        "kiosk": None,  # a user name alone identifies it (type 1)
    }
    tokens = TokenVerifier(issuer="https://idp.example", audience="minipacs",
                           key_file=key.pem, algorithms=("ES256",), leeway=0)
    return Gatekeeper(access, UserAuthenticator(passwords, tokens), identity=identity,
                      throttle=FailureThrottle(0.25), passwords_without_tls=passwords_without_tls,
                      sleep=sleeps or Sleeps())


def request(identity: UserIdentityRQ | None, *, calling: str = "WS1", tls: bool = False
            ) -> AdmissionRequest:
    return AdmissionRequest(calling, "MINIPACS", "10.0.0.9", tls, identity)


def passcode(user: str, secret: str, response: bool = False) -> UserIdentityRQ:
    return UserIdentityRQ(2, response, user.encode(), secret.encode())


def identities(key: SigningKey) -> dict[str, UserIdentityRQ | None]:
    return {
        "missing": None,
        "good passcode": passcode("alice", "wonderland"),
        "bad passcode": passcode("alice", "looking-glass"),
        "unknown user": passcode("mallory", "wonderland"),
        "good username": UserIdentityRQ(1, False, b"kiosk"),
        "username of a passcode user": UserIdentityRQ(1, False, b"alice"),
        "good JWT": UserIdentityRQ(5, False, key.token("bob").encode()),
        "bad JWT signature": UserIdentityRQ(5, False, signing_key(
            key.pem.parent, "forger").token("bob").encode()),
        "expired JWT": UserIdentityRQ(5, False, key.token("bob", lifetime=-60).encode()),
        "Kerberos": UserIdentityRQ(3, False, b"\x60\x82ticket"),
    }


GOOD = {"good passcode": "alice", "good username": "kiosk", "good JWT": "bob"}
BAD = {"bad passcode", "unknown user", "username of a passcode user", "bad JWT signature",
       "expired JWT"}


@pytest.mark.parametrize("mode", list(IdentityMode))
async def test_identity_matrix(key: SigningKey, mode: IdentityMode) -> None:
    """none: identities ignored; optional: checked when given; required: needed."""
    keeper = gate(key, mode)
    for name, identity in identities(key).items():
        admission = await keeper.admit(request(identity))
        if mode is IdentityMode.NONE:
            expected_user, refused = None, False
        elif name in GOOD:
            expected_user, refused = GOOD[name], False
        elif name in BAD:
            expected_user, refused = None, True
        else:  # missing, or a type we do not verify
            expected_user, refused = None, mode is IdentityMode.REQUIRED
        assert (admission.user, admission.rejection is not None) == (expected_user, refused), \
            (mode, name, admission.reason)
        if refused:
            assert admission.rejection == BAD_IDENTITY
            assert admission.reason.startswith("user identity: ")
            assert admission.operations == frozenset()


async def test_users_rights_replace_the_ae_rights(key: SigningKey) -> None:
    keeper = gate(key, IdentityMode.OPTIONAL)
    alice = await keeper.admit(request(passcode("alice", "wonderland")))
    assert alice.operations == {Operation.GET}
    assert alice.permits("1.2.840.10008.5.1.4.1.2.2.3")  # Study Root GET
    assert not alice.permits("1.2.840.10008.5.1.4.1.2.2.1")  # Study Root FIND
    bob = await keeper.admit(request(passcode("bob", "builder")))
    assert bob.operations == WS  # no list of his own: the AE's
    anonymous = await keeper.admit(request(None))
    assert anonymous.operations == WS


async def test_positive_response_only_when_asked(key: SigningKey) -> None:
    """PS3.7 D.3.3.7.2: an empty server response for a verified type 2, if requested."""
    keeper = gate(key, IdentityMode.OPTIONAL)
    asked = await keeper.admit(request(passcode("alice", "wonderland", response=True)))
    assert asked.identity_response == b""
    unasked = await keeper.admit(request(passcode("alice", "wonderland")))
    assert unasked.identity_response is None
    ignored = await gate(key, IdentityMode.NONE).admit(
        request(passcode("alice", "wonderland", response=True)))
    assert ignored.identity_response is None  # not verified: not answered


async def test_passcodes_need_tls_unless_allowed(key: SigningKey) -> None:
    keeper = gate(key, IdentityMode.OPTIONAL, passwords_without_tls=False)
    plain = await keeper.admit(request(passcode("alice", "wonderland")))
    assert plain.rejection == BAD_IDENTITY
    assert "without TLS" in plain.reason
    over_tls = await keeper.admit(request(passcode("alice", "wonderland"), tls=True))
    assert over_tls.user == "alice"
    token = await keeper.admit(request(UserIdentityRQ(5, False, key.token().encode())))
    assert token.user == "alice"  # a token is no passcode


async def test_policy_refusal_comes_first(key: SigningKey) -> None:
    keeper = gate(key, IdentityMode.REQUIRED, unknown=frozenset())
    stranger = await keeper.admit(request(passcode("alice", "wonderland"), calling="X"))
    assert stranger.rejection == UNKNOWN_AE
    assert "'X'" in stranger.reason


async def test_failures_are_slowed_down_and_success_resets(key: SigningKey) -> None:
    sleeps = Sleeps()
    keeper = gate(key, IdentityMode.REQUIRED, sleeps=sleeps)
    for _ in range(3):
        await keeper.admit(request(passcode("alice", "nope")))
    assert sleeps.delays == [0.25, 0.5, 1.0]
    await keeper.admit(request(passcode("alice", "wonderland")))
    await keeper.admit(request(None))
    assert sleeps.delays[-1] == 0.25


async def test_everything_for_an_open_gate_of_all(key: SigningKey) -> None:
    keeper = gate(key, IdentityMode.NONE, unknown=ALL_OPERATIONS)
    admission = await keeper.admit(request(None, calling="ANYONE"))
    assert admission.operations == ALL_OPERATIONS and admission.rejection is None



async def test_delayed_answers_are_bounded(key: SigningKey) -> None:
    """Delayed sockets count against no association limit: beyond a bound, no delay."""
    release = asyncio.Event()
    sleeps = Sleeps()

    async def held(delay: float) -> None:
        sleeps.delays.append(delay)
        await release.wait()

    keeper = gate(key, IdentityMode.REQUIRED)
    keeper.max_delayed, keeper.sleep = 2, held
    waiting = [asyncio.create_task(keeper.admit(request(passcode("alice", "x"))))
               for _ in range(2)]
    while len(sleeps.delays) < 2:
        await asyncio.sleep(0)
    third = await keeper.admit(request(passcode("alice", "x")))  # answered at once
    assert third.rejection == BAD_IDENTITY
    release.set()
    assert [(await task).rejection for task in waiting] == [BAD_IDENTITY, BAD_IDENTITY]
    assert len(sleeps.delays) == 2
