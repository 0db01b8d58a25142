"""JWT issuance (RFC 7519), signed with the key ring's current key.

Claims: `iss` (configured issuer), `sub` (the user's stable id, which survives a rename),
`username`, `iat`, `exp`, `jti` (128 random bits, so each token can be told apart and revoked),
and `cv`, the user's credential version, which a password change bumps to revoke older tokens.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

import jwt

from service.config import TTL_DEFAULT, TTL_MAX, TTL_MIN
from service.domain.models import IssuedToken, User
from service.domain.signing_keys import KeyRing
from service.errors import invalid_argument


def check_ttl(ttl: int | None) -> int:
    """The token lifetime in seconds: 1..86400, 300 when not given (the Redis Enterprise rules)."""
    if ttl is None:
        return TTL_DEFAULT
    if not TTL_MIN <= ttl <= TTL_MAX:
        raise invalid_argument(f"ttl must be between {TTL_MIN} and {TTL_MAX} seconds, got {ttl}")
    return ttl


class TokenIssuer:
    def __init__(self, keys: KeyRing, issuer: str, clock: Callable[[], datetime]) -> None:
        self._keys = keys
        self._issuer = issuer
        self._clock = clock

    async def issue(self, user: User, ttl: int) -> IssuedToken:
        active = await self._keys.signing_key()
        issued_at = self._clock().replace(microsecond=0)
        expires_at = issued_at + timedelta(seconds=ttl)
        jti = secrets.token_urlsafe(16)
        claims = {
            "iss": self._issuer,
            "sub": str(user.id),
            "username": user.username,
            "iat": int(issued_at.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": jti,
            "cv": user.credential_version,
        }
        token = jwt.encode(
            claims, active.private, algorithm=active.key.algorithm, headers={"kid": active.key.kid}
        )
        return IssuedToken(token=token, jti=jti, issued_at=issued_at, expires_at=expires_at)
