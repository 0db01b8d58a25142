"""Authorize: credentials in, a signed token out. Both REST dialects (Redis Enterprise and
Densify) and the gRPC method end here, so they cannot drift apart.

A password past its maximum age gets no token (PASSWORD_EXPIRED, told only after it was verified
right), but still authenticates the password RPCs, so its owner can replace it unaided."""

from __future__ import annotations

from service.domain.authenticator import Authenticator
from service.domain.models import IssuedToken
from service.domain.token_lifetime import check_ttl
from service.domain.tokens import TokenIssuer
from service.errors import AuthError, Reason

PASSWORD_EXPIRED_MESSAGE = "the password has expired and must be changed"


class AuthorizationService:
    def __init__(self, authenticator: Authenticator, issuer: TokenIssuer) -> None:
        self._authenticator = authenticator
        self._issuer = issuer

    async def authorize(
        self, username: str, password: str, source: str, ttl: int | None
    ) -> IssuedToken:
        lifetime = check_ttl(ttl)
        principal = await self._authenticator.authenticate(username, password, source)
        if principal.password_expired:
            raise AuthError(Reason.PASSWORD_EXPIRED, PASSWORD_EXPIRED_MESSAGE)
        return await self._issuer.issue(principal.user, lifetime)
