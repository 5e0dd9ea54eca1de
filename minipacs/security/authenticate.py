"""The `Authenticator` adapter: configured users (scrypt-hashed passcodes) and JWTs.

Passcodes are checked in a worker thread (scrypt takes ~0.1 s and 32 MiB), at most
`MAX_CONCURRENT_CHECKS` at a time so a burst of logins cannot exhaust memory; a successful
check is remembered for `CACHE_SECONDS` under a keyed digest (never the passcode itself) so
that HTTP Basic, which sends the passcode with every request, costs one scrypt per user and
passcode rather than one per request. An unknown user costs the same scrypt as a known one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Final

from ..ports import CredentialKind, Credentials, Verdict
from .passwords import DEFAULT_COST, KEY_BYTES, SALT_BYTES, ScryptHash, verify_password
from .tokens import TokenVerifier

__all__ = ["UserAuthenticator"]

MAX_CONCURRENT_CHECKS: Final = 2
CACHE_SECONDS: Final = 300.0
CACHE_ENTRIES: Final = 1024


class UserAuthenticator:
    """Verifies credentials against `passwords` (user → hash, None: no passcode) and
    `tokens` (None: JWTs refused)."""

    def __init__(self, passwords: Mapping[str, ScryptHash | None],
                 tokens: TokenVerifier | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.passwords = dict(passwords)
        self.tokens = tokens
        self.clock = clock
        self._checks = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        self._cache_key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        # Checked instead when the user is unknown, so that timing does not tell.
        n, r, p = DEFAULT_COST
        self._decoy = ScryptHash(n, r, p, secrets.token_bytes(SALT_BYTES),
                                 secrets.token_bytes(KEY_BYTES))

    async def verify(self, credentials: Credentials) -> Verdict:
        user = credentials.user
        if credentials.kind is CredentialKind.TOKEN:
            if self.tokens is None:
                return Verdict(None, "JSON Web Tokens are not configured (security.jwt)")
            return self.tokens.verify(credentials.secret)
        if credentials.kind is CredentialKind.USERNAME:
            if user not in self.passwords:
                return Verdict(None, f"unknown user {user!r}")
            if self.passwords[user] is not None:
                return Verdict(None, f"user {user!r} has a passcode; a user name is not enough")
            return Verdict(user)
        return await self._passcode(user, credentials.secret)

    async def _passcode(self, user: str, passcode: str) -> Verdict:
        digest = hmac.new(self._cache_key, f"{user}\0{passcode}".encode(),
                          hashlib.sha256).digest()
        now = self.clock()
        if self._verified.get(digest, 0.0) > now:
            self._verified.move_to_end(digest)
            return Verdict(user)
        stored = self.passwords.get(user)
        async with self._checks:
            good = await asyncio.to_thread(verify_password, passcode, stored or self._decoy)
        if stored is None:
            known = user in self.passwords
            return Verdict(None, f"user {user!r} has no passcode" if known
                           else f"unknown user {user!r}")
        if not good:
            return Verdict(None, f"wrong passcode for user {user!r}")
        self._verified[digest] = now + CACHE_SECONDS
        while len(self._verified) > CACHE_ENTRIES:
            self._verified.popitem(last=False)
        return Verdict(user)
