"""JWT issuance (RFC 7519), signed with the key ring's current key.

Claims: `iss` (configured issuer), `sub` (the user's stable id, which survives a rename),
`username`, `iat`, `exp`, `jti` (128 random bits, so each token can be told apart and revoked),
and `cv`, the user's credential version, which a password change bumps to revoke older tokens.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import jwt

from service.config import TTL_DEFAULT, TTL_MAX, TTL_MIN
from service.domain.models import IssuedToken, User, VerifiedToken
from service.domain.ports import UserStore
from service.domain.signing_keys import KeyRing
from service.errors import invalid_argument


def check_ttl(ttl: int | None) -> int:
    """The token lifetime in seconds: 1..86400, 300 when not given (the Redis Enterprise rules)."""
    if ttl is None:
        return TTL_DEFAULT
    if not TTL_MIN <= ttl <= TTL_MAX:
        raise invalid_argument(f"ttl must be between {TTL_MIN} and {TTL_MAX} seconds, got {ttl}")
    return ttl


# RFC 9068 explicit typing (RFC 8725 section 3.11): an access token says so in its header, so it
# cannot be confused with another JWT signed by the same key.
TOKEN_TYPE = "at+jwt"


class TokenIssuer:
    def __init__(
        self, keys: KeyRing, issuer: str, audience: str, clock: Callable[[], datetime]
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._clock = clock

    async def issue(self, user: User, ttl: int) -> IssuedToken:
        active = await self._keys.signing_key()
        issued_at = self._clock().replace(microsecond=0)
        expires_at = issued_at + timedelta(seconds=ttl)
        jti = secrets.token_urlsafe(16)
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user.id),
            "username": user.username,
            "iat": int(issued_at.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": jti,
            "cv": user.credential_version,
        }
        token = jwt.encode(
            claims,
            active.private,
            algorithm=active.key.algorithm,
            headers={"kid": active.key.kid, "typ": TOKEN_TYPE},
        )
        return IssuedToken(token=token, jti=jti, issued_at=issued_at, expires_at=expires_at)


class TokenVerifier:
    """Checks tokens this service issued (RFC 8725 hardening).

    The algorithm comes from the stored key that the `kid` names, never from the token's header;
    `none`, an unknown `kid`, any `crit` header (we implement no extension), a wrong `iss`,
    expired and not-yet-valid tokens are all refused, with `leeway` seconds of clock skew. A token
    is also refused once its user is gone, locked or expired, or once a password change bumped
    the user's credential version past the token's `cv`.
    """

    REQUIRED_CLAIMS = ("iss", "aud", "sub", "username", "iat", "exp", "jti", "cv")
    MAX_TOKEN_CHARS = 8192

    def __init__(
        self,
        keys: KeyRing,
        users: UserStore,
        issuer: str,
        audience: str,
        leeway: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._keys = keys
        self._users = users
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._clock = clock

    async def verify(self, token: str) -> VerifiedToken | None:
        """The token's claims if it is active now, else None (never an error)."""
        claims = await self._signed_claims(token)
        if claims is None:
            return None
        try:
            user_id = UUID(claims["sub"])
        except (ValueError, TypeError, AttributeError):
            return None
        user = await self._users.get_by_id(user_id)
        if (
            user is None
            or user.locked
            or (user.expires_at is not None and user.expires_at <= self._clock())
            or claims["cv"] != user.credential_version
        ):
            return None
        return VerifiedToken(
            subject=str(claims["sub"]),
            username=str(claims["username"]),
            issuer=str(claims["iss"]),
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            jti=str(claims["jti"]),
        )

    async def _signed_claims(self, token: str) -> dict[str, Any] | None:
        if not token or len(token) > self.MAX_TOKEN_CHARS:
            return None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return None
        kid = header.get("kid")
        if "crit" in header or not isinstance(kid, str) or header.get("typ") != TOKEN_TYPE:
            return None
        key = await self._keys.verification_key(kid)
        if key is None or header.get("alg") != key.key.algorithm:
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public,
                algorithms=[key.key.algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": list(self.REQUIRED_CLAIMS)},
            )
        except jwt.InvalidTokenError:
            return None
        if claims["iat"] > self._clock().timestamp() + self._leeway:
            return None
        return claims
