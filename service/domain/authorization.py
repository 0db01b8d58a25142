"""Authorize: credentials in, a signed token out. Both REST dialects (Redis Enterprise and
Densify) and the gRPC method end here, so they cannot drift apart.

A password past its maximum age gets no token (PASSWORD_EXPIRED, told only after it was verified
right), but still authenticates the password RPCs, so its owner can replace it unaided."""

from __future__ import annotations

from service.domain.audit import Auditor
from service.domain.authenticator import Authenticator
from service.domain.models import IssuedToken
from service.domain.token_lifetime import check_ttl
from service.domain.tokens import TokenIssuer
from service.errors import AuthError, Reason

PASSWORD_EXPIRED_MESSAGE = "the password has expired and must be changed"


class AuthorizationService:
    def __init__(
        self, authenticator: Authenticator, issuer: TokenIssuer, audit: Auditor | None = None
    ) -> None:
        self._authenticator = authenticator
        self._issuer = issuer
        self._audit = audit

    async def authorize(
        self, username: str, password: str, source: str, ttl: int | None
    ) -> IssuedToken:
        lifetime = check_ttl(ttl)
        principal = await self._authenticator.authenticate(username, password, source)
        if principal.password_expired:
            expired = AuthError(Reason.PASSWORD_EXPIRED, PASSWORD_EXPIRED_MESSAGE)
            if self._audit is not None:
                self._audit.login_refused(username, source, expired)
            raise expired
        issued = await self._issuer.issue(principal.user, lifetime)
        if self._audit is not None:
            self._audit.login_succeeded(principal.user.username, source)  # if asked: a write
        return issued
