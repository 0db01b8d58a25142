"""Authentication: a username and a password in, a Principal out, or one of a few reasons.

The order matters for what a caller can learn. Every attempt costs the same argon2 work whether
or not the user exists (a dummy verification for unknown names), and account states (locked,
expired) are told only to a caller who has just proven the password: to anyone else every
failure is the same INVALID_CREDENTIALS.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from service.domain.models import Principal
from service.domain.passwords import PasswordHasher, check_password
from service.domain.ports import CredentialStore
from service.domain.usernames import check_username, username_key
from service.errors import AuthError, Reason

INVALID_CREDENTIALS_MESSAGE = "invalid username or password"


def invalid_credentials() -> AuthError:
    return AuthError(Reason.INVALID_CREDENTIALS, INVALID_CREDENTIALS_MESSAGE)


class Authenticator:
    def __init__(
        self, store: CredentialStore, hasher: PasswordHasher, clock: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._clock = clock

    async def authenticate(self, username: str, password: str) -> Principal:
        check_username(username)
        check_password(password)
        found = await self._store.find_login(username_key(username))
        if found is None:
            await self._hasher.verify_dummy(password)
            raise invalid_credentials()
        user, passwords = found
        # Most recently used first: the usual login costs one verification however long the list.
        match = await self._hasher.first_match(passwords, password)
        if match is None:
            raise invalid_credentials()
        if user.locked:
            raise AuthError(Reason.ACCOUNT_LOCKED, "the account is locked")
        if user.expires_at is not None and user.expires_at <= self._clock():
            raise AuthError(Reason.ACCOUNT_EXPIRED, "the account has expired")
        rehashed = None
        if self._hasher.needs_rehash(match.hash):
            rehashed = await self._hasher.hash(password)
        await self._store.record_use(match.id, rehashed)
        return Principal(user=user, password_id=match.id)
