"""What the domain needs from storage, as Protocols (Dex's `Storage` interface, split by duty).

Only `CredentialStore` (the authenticator's port) and `PasswordListStore` (which must compare a new
password with the current ones) see password hashes; the admin port never does.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol
from uuid import UUID

from service.domain.models import LoginAttempt, SigningKey, StoredPassword, User


class CredentialStore(Protocol):
    async def find_login(self, username_key: str) -> tuple[User, list[StoredPassword]] | None:
        """The user and their passwords, most recently used first; None if there is no such user."""

    async def record_use(self, password_id: int, rehashed: str | None) -> None:
        """Mark a password as just used, replacing its hash when it was rehashed."""


class LoginThrottleStore(Protocol):
    """Consecutive failed logins per username key, on the database's clock (every replica's)."""

    async def reserve(
        self, username_key: str, delays: Sequence[float], lock_every: int, lock_seconds: float
    ) -> LoginAttempt:
        """In one atomic step: refuse the attempt if the name's next attempt is not due yet
        (counting nothing); otherwise admit it, count it as a failure unless the name is locked,
        and set the next attempt `delays[n-1]` seconds ahead for n failures (the last entry for
        more). Every `lock_every`-th counted failure (0: none) locks the name for
        `lock_seconds`."""

    async def reset(self, username_key: str) -> None:
        """Forget the name's failures (a success)."""

    async def purge(self, stale_seconds: float, limit: int) -> int:
        """Delete up to `limit` names whose delay and lock ended over `stale_seconds` ago."""


class LockedPasswordList(Protocol):
    """A user's password list inside a transaction that holds the user's row lock."""

    async def passwords(self) -> list[StoredPassword]: ...

    async def add(self, password_hash: str) -> None: ...

    async def remove(self, password_ids: Sequence[int]) -> None:
        """Remove passwords and bump the user's credential version (revoking older tokens)."""


class PasswordListStore(Protocol):
    async def passwords(self, user_id: UUID) -> list[StoredPassword]: ...

    def locked(self, user_id: UUID) -> AbstractAsyncContextManager[LockedPasswordList]:
        """Open a transaction with the user's row locked (FOR UPDATE) until it ends."""


class UserStore(Protocol):
    async def create(self, username: str, username_key: str, password_hash: str) -> User:
        """Create a user with one password; AuthError(USER_EXISTS) if the name is taken."""

    async def list(self) -> list[User]: ...

    async def get(self, username_key: str) -> User | None: ...

    async def get_by_id(self, user_id: UUID) -> User | None: ...

    async def delete(self, username_key: str) -> bool: ...

    async def set_locked(self, username_key: str, locked: bool) -> bool: ...

    async def set_expiry(self, username_key: str, expires_at: datetime | None) -> bool: ...


class KeyStore(Protocol):
    async def published(self, now: datetime) -> list[SigningKey]:
        """Keys not yet retired at `now`, most recently created first."""

    async def add_key(
        self,
        key: SigningKey,
        *,
        unless_newer_than: datetime,
        retire_others_at: datetime,
        ignore_retiring: bool = False,
    ) -> bool:
        """Atomically (one replica at a time): unless a published key for `key.algorithm` (with
        `ignore_retiring`, one not scheduled to retire) was created after `unless_newer_than`,
        insert `key` and retire every other key at `retire_others_at` (or sooner, if already
        due). True when inserted."""

    async def purge_retired(self, now: datetime) -> int:
        """Delete keys retired before `now` (their private halves with them)."""
