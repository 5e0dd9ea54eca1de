"""Salted scrypt hashes of passcodes (RFC 7914, with the standard library's hashlib.scrypt).

The stored form is one line: ``scrypt$N$r$p$SALT$HASH`` — the cost parameters, then the
16-byte salt and the 32-byte derived key in base64. `minipacs user add` writes it; the
configuration only ever holds it, never a passcode.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_COST", "ScryptHash", "hash_password", "verify_password"]

PREFIX: Final = "scrypt"
# N = 2^15, r = 8, p = 1: 32 MiB and about 0.1 s per check on one core (OWASP's floor is
# 2^17 at 128 MiB; we check a passcode per HTTP Basic request, so a cache spares repeats).
DEFAULT_COST: Final = (1 << 15, 8, 1)
SALT_BYTES: Final = 16
KEY_BYTES: Final = 32
# Bounds on what a configured hash may ask for (memory = 128 * N * r bytes).
MAX_N: Final = 1 << 20
MAX_R: Final = 32
MAX_P: Final = 16


@dataclass(frozen=True, slots=True)
class ScryptHash:
    """A parsed ``scrypt$N$r$p$SALT$HASH``."""

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, text: str) -> ScryptHash:
        """Raises ValueError (naming what is wrong) unless `text` is a hash we can check."""
        parts = text.split("$")
        if len(parts) != 6 or parts[0] != PREFIX:
            raise ValueError("not of the form scrypt$N$r$p$SALT$HASH")
        try:
            n, r, p = (int(part, 10) for part in parts[1:4])
            salt = base64.b64decode(parts[4], validate=True)
            key = base64.b64decode(parts[5], validate=True)
        except (ValueError, binascii.Error):
            raise ValueError("N, r and p must be integers, SALT and HASH base64") from None
        if n < 2 or n & (n - 1) or n > MAX_N:
            raise ValueError(f"N must be a power of 2 from 2 to {MAX_N}")
        if not 1 <= r <= MAX_R or not 1 <= p <= MAX_P:
            raise ValueError(f"r must be 1-{MAX_R} and p 1-{MAX_P}")
        if len(salt) < 8 or len(key) < 16:
            raise ValueError("the salt or the hash is too short")
        return cls(n, r, p, salt, key)

    def format(self) -> str:
        encode = base64.b64encode
        return (f"{PREFIX}${self.n}${self.r}${self.p}$"
                f"{encode(self.salt).decode()}${encode(self.key).decode()}")

    def derive(self, passcode: str) -> bytes:
        """The scrypt key of `passcode` under this hash's salt and cost (CPU and memory)."""
        return _scrypt(passcode, self.salt, self.n, self.r, self.p, len(self.key))


def _scrypt(passcode: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    memory = 128 * r * (n + p + 2) + (1 << 20)  # RFC 7914 §6, with room to spare
    return hashlib.scrypt(passcode.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=memory, dklen=length)


def hash_password(passcode: str, *, cost: tuple[int, int, int] = DEFAULT_COST) -> str:
    """A new salted hash of `passcode`, in the stored form."""
    n, r, p = cost
    salt = secrets.token_bytes(SALT_BYTES)
    return ScryptHash(n, r, p, salt, _scrypt(passcode, salt, n, r, p, KEY_BYTES)).format()


def verify_password(passcode: str, stored: ScryptHash) -> bool:
    """Whether `passcode` is the one `stored` was made from (constant-time comparison)."""
    return hmac.compare_digest(stored.derive(passcode), stored.key)
