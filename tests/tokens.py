"""Test identities: a signing key pair written as PEM and JWKS, and tokens made with it.

Keys are generated at test time with `cryptography` (EC P-256: fast); nothing is fetched.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "https://idp.example"
AUDIENCE = "minipacs"
KID = "test-key-1"


@dataclass(frozen=True)
class SigningKey:
    """A private key (to mint tokens) and the files holding its public half."""

    private: ec.EllipticCurvePrivateKey
    pem: Path
    jwks: Path

    def token(self, user: str = "alice", *, lifetime: float = 300, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": user, "iat": now,
                   "exp": now + int(lifetime)} | claims
        return jwt.encode(payload, self.private, algorithm="ES256", headers={"kid": KID})

    def jwt_config(self, key_file: Path | None = None) -> dict[str, Any]:
        """The `security.jwt` section trusting this key."""
        return {"issuer": ISSUER, "audience": AUDIENCE,
                "key_file": str(key_file or self.pem), "algorithms": ["ES256"]}


def signing_key(directory: Path, name: str = "idp") -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key()
    pem = directory / f"{name}.pem"
    pem.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    jwks = directory / f"{name}.jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk | {"kid": KID, "use": "sig"}]}), encoding="utf-8")
    return SigningKey(private, pem, jwks)
