"""JSON Web Token verification (RFC 7519) with PyJWT: PS3.7 D.3.3.7 type 5 and HTTP Bearer.

A token is accepted only when its signature verifies with the configured public key (a PEM
file, or a JWKS file whose key the token's ``kid`` names), with one of the configured
algorithms, and it names the configured issuer and audience, is not expired (``exp`` is
required) nor early (``nbf``), and carries the user claim.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt

from ..ports import Verdict

__all__ = ["TokenVerifier"]

# A token's whole form bounds what we parse (a header field or a user identity sub-item).
MAX_TOKEN_LENGTH = 16 * 1024


class TokenVerifier:
    """Verifies tokens against one issuer, audience and key (or key set)."""

    def __init__(self, *, issuer: str, audience: str, key_file: Path,
                 algorithms: tuple[str, ...], user_claim: str = "sub",
                 leeway: float = 30.0) -> None:
        """Reads the key file; ValueError (one line) when it holds no usable public key."""
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)
        self.user_claim = user_claim
        self.leeway = leeway
        self._keys, self._single = _load_keys(key_file)

    def verify(self, token: str) -> Verdict:
        """The token's user, or why it is refused (for the log, never for the peer)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return Verdict(None, "token empty or too long")
        try:
            key = self._key_for(token)
            claims = jwt.decode(
                token, key, algorithms=self.algorithms, audience=self.audience,
                issuer=self.issuer, leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", self.user_claim]})
        except jwt.ExpiredSignatureError:
            return Verdict(None, "token expired")
        except jwt.InvalidSignatureError:
            return Verdict(None, "token signature does not verify")
        except jwt.InvalidAudienceError:
            return Verdict(None, "token for another audience")
        except jwt.InvalidIssuerError:
            return Verdict(None, "token from another issuer")
        except jwt.ImmatureSignatureError:
            return Verdict(None, "token not valid yet (nbf)")
        except jwt.MissingRequiredClaimError as exc:
            return Verdict(None, f"token without the {exc.claim!r} claim")
        except jwt.InvalidAlgorithmError:
            return Verdict(None, "token signed with an algorithm not configured")
        except (jwt.PyJWTError, ValueError) as exc:
            return Verdict(None, f"token refused: {type(exc).__name__}")
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or not user:
            return Verdict(None, f"token claim {self.user_claim!r} is not a user name")
        return Verdict(user)

    def _key_for(self, token: str) -> Any:
        if self._single is not None:
            return self._single
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str) or kid not in self._keys:
            raise ValueError("no key with the token's kid")
        return self._keys[kid]


def _load_keys(path: Path) -> tuple[dict[str, Any], Any]:
    """(keys by kid, the single key or None) from a JWKS or a PEM public key file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if text.lstrip().startswith("{"):
        try:
            keys = jwt.PyJWKSet.from_dict(json.loads(text)).keys
        except (ValueError, jwt.PyJWTError) as exc:
            raise ValueError(f"{path} is not a usable JWKS: {exc}") from None
        by_kid = {key.key_id: key.key for key in keys if key.key_id}
        single = keys[0].key if len(keys) == 1 else None
        if single is None and not by_kid:
            raise ValueError(f"{path}: a JWKS of several keys needs a 'kid' on each")
        return by_kid, single
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return {}, load_pem_public_key(text.encode())
    except ValueError:
        raise ValueError(f"{path} holds no PEM public key (a private key is refused)") from None
