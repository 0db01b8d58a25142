"""Authentication: a username and a password in, a Principal out, or one of a few reasons.

The order matters for what a caller can learn. Every failed attempt costs the same argon2 work,
`max_passwords` verifications, whether or not the user exists and however many passwords it
holds (dummy verifications make up the difference), and account states (locked,
expired) are told only to a caller who has just proven the password: to anyone else every
failure is the same INVALID_CREDENTIALS.

Before any of that, the brute-force throttle (`throttle.py`) admits the attempt, counting it as a
failure up front, for unknown names too; only a right password on a usable account resets it. A
right password on a locked account (by an administrator or by the throttle) or an expired account
resets nothing, so it buys an attacker no faster guesses. A password older than the maximum age
still authenticates (and resets the count): `Principal.password_expired` lets the caller decide;
Authorize refuses it, the password RPCs accept it so the user can replace it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from service.domain.models import Principal
from service.domain.passwords import PasswordHasher, check_password
from service.domain.ports import CredentialStore
from service.domain.throttle import LoginThrottle
from service.domain.usernames import check_username, username_key
from service.errors import AuthError, Reason, invalid_credentials


class Authenticator:
    def __init__(
        self,
        store: CredentialStore,
        hasher: PasswordHasher,
        clock: Callable[[], datetime],
        *,
        throttle: LoginThrottle | None = None,
        password_max_age: timedelta | None = None,
        max_passwords: int = 2,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._clock = clock
        self._throttle = throttle
        self._password_max_age = password_max_age
        self._max_passwords = max_passwords

    async def authenticate(self, username: str, password: str) -> Principal:
        check_username(username)
        check_password(password)
        # Room for this login's hashing is reserved before the attempt is counted: once counted,
        # it is sure to be verified, never refused for want of room.
        with self._hasher.admission(self._max_passwords):
            return await self._admitted(username_key(username), password)

    async def _admitted(self, key: str, password: str) -> Principal:
        attempt = await self._throttle.admit(key) if self._throttle is not None else None
        found = await self._store.find_login(key)
        if found is None:
            await self._hasher.verify_dummy(password, self._max_passwords)
            raise invalid_credentials()
        user, stored = found
        # Most recently used first: the usual login costs one verification. Only the newest
        # `max_passwords` count (a list can be longer if the limit was lowered since).
        passwords = stored[: self._max_passwords]
        match = await self._hasher.first_match(passwords, password)
        if match is None:
            # A failure always costs `max_passwords` verifications, so its timing tells neither
            # whether the user exists nor how many passwords it holds.
            await self._hasher.verify_dummy(password, self._max_passwords - len(passwords))
            raise invalid_credentials()
        if user.locked:
            raise AuthError(Reason.ACCOUNT_LOCKED, "the account is locked")
        if attempt is not None and attempt.locked_for is not None:
            raise AuthError(
                Reason.ACCOUNT_LOCKED,
                "the account is locked after repeated failed logins, retry later",
                retry_after=attempt.locked_for,
            )
        now = self._clock()
        if user.expires_at is not None and user.expires_at <= now:
            raise AuthError(Reason.ACCOUNT_EXPIRED, "the account has expired")
        if self._throttle is not None:
            await self._throttle.succeeded(key)
        password_expired = (
            self._password_max_age is not None
            and match.created_at is not None
            and now - match.created_at > self._password_max_age
        )
        rehashed = None
        if self._hasher.needs_rehash(match.hash):
            rehashed = await self._hasher.hash(password)
        await self._store.record_use(match.id, rehashed)
        return Principal(user=user, password_id=match.id, password_expired=password_expired)
