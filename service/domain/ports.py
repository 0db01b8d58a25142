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

from service.domain.models import (
    AuditEvent,
    FailureRecord,
    LoginView,
    SigningKey,
    StoredPassword,
    SuccessRecord,
    User,
)


class CredentialStore(Protocol):
    """The login path: one read before the hash, at most one write after it."""

    async def find_login(self, username_key: str, source: str) -> LoginView:
        """The user (if any), its salt and passwords, whether `source` has logged in to it, and
        the failure counts: the name's for strangers, the name's for `source`, and `source`'s
        across names."""

    async def record_failure(
        self,
        username_key: str,
        counter: str,
        name_delays: Sequence[float],
        lock_every: int,
        lock_seconds: float,
        source: str,
        source_delays: Sequence[float],
        audit: AuditEvent | None = None,
    ) -> FailureRecord:
        """In one atomic step, count a failure on the name's `counter` ("" for strangers, or
        the source) and on `source`'s count, and append `audit` (if any) to the audit trail;
        each count's next attempt waits `delays[n-1]` seconds after n failures (the last entry
        for more). Every `lock_every`-th counted failure (0: none) locks the name's count for
        `lock_seconds`; during a lock a failure is not counted but still waits the current
        delay."""

    async def record_success(self, username_key: str, record: SuccessRecord) -> None:
        """Make the changes `record` asks for, in one statement."""


class LoginThrottleStore(Protocol):
    """Failure counts outside the login path."""

    async def reset(self, username_key: str) -> None:
        """Forget every count of the name (an administrator's unlock)."""

    async def purge_name_counts(self, stale_seconds: float, limit: int) -> int:
        """Delete up to `limit` name counts whose delay and lock ended over `stale_seconds` ago."""

    async def purge_source_counts(self, stale_seconds: float, limit: int) -> int:
        """Delete up to `limit` source counts whose delay ended over `stale_seconds` ago."""

    async def purge_known_sources(self, unseen_seconds: float, limit: int) -> int:
        """Forget up to `limit` sources that have not logged in for `unseen_seconds`."""


class LockedPasswordList(Protocol):
    """A user's password list inside a transaction that holds the user's row lock."""

    async def passwords(self) -> list[StoredPassword]: ...

    async def add(self, password_hash: str) -> None: ...

    async def remove(self, password_ids: Sequence[int], keep_history: int) -> None:
        """Remove passwords and bump the user's credential version (revoking older tokens);
        keep the newest `keep_history` retired passwords (0: none)."""


class PasswordListStore(Protocol):
    async def passwords(self, user_id: UUID) -> list[StoredPassword]: ...

    async def history(self, user_id: UUID, limit: int) -> list[StoredPassword]:
        """The newest `limit` retired passwords."""

    def locked(self, user_id: UUID) -> AbstractAsyncContextManager[LockedPasswordList | None]:
        """Open a transaction with the user's row locked (FOR UPDATE) until it ends; None when
        there is no such user."""

    async def salt(self, user_id: UUID) -> bytes | None:
        """The salt the user's passwords are hashed with; None if there is no such user."""


class UserStore(Protocol):
    async def create(
        self,
        username: str,
        username_key: str,
        password_salt: bytes,
        password_hash: str,
        groups: Sequence[str] = (),
    ) -> User | None:
        """Create a user with one password (hashed with `password_salt`, the user's) and
        `groups` (sorted, distinct); None if the name is taken."""

    async def list(self) -> list[User]: ...

    async def get(self, username_key: str) -> User | None: ...

    async def get_by_id(self, user_id: UUID) -> User | None: ...

    async def delete(self, username_key: str) -> bool: ...

    async def set_locked(self, username_key: str, locked: bool) -> bool: ...

    async def set_expiry(self, username_key: str, expires_at: datetime | None) -> bool: ...

    async def change_groups(
        self, username_key: str, add: Sequence[str], remove: Sequence[str], limit: int
    ) -> tuple[tuple[str, ...], bool] | None:
        """Atomically add and remove groups; bump the credential version if the set changed.
        None for an unknown user; else the resulting set and whether it is within `limit`
        (if not, nothing was written)."""


class KeyStore(Protocol):
    async def published(self, now: datetime) -> list[SigningKey]:
        """Keys not yet retired at `now`, most recently created first."""

    # Each adds `key` atomically (one replica at a time) and retires every other key at
    # `retire_others_at` (or sooner, if already due); True when it inserted.
    async def add_first_key(self, key: SigningKey, *, retire_others_at: datetime) -> bool:
        """Bootstrap: add `key` unless its algorithm has a key not scheduled to retire."""

    async def add_scheduled_key(
        self, key: SigningKey, *, unless_newer_than: datetime, retire_others_at: datetime
    ) -> bool:
        """Scheduled rotation: add `key` unless a published key of its algorithm was created
        after `unless_newer_than` (another replica rotated first)."""

    async def add_forced_key(self, key: SigningKey, *, retire_others_at: datetime) -> None:
        """Forced rotation: add `key` whatever the table holds."""

    async def purge_retired(self, now: datetime) -> int:
        """Delete keys retired before `now` (their private halves with them)."""


class AuditLog(Protocol):
    """Where events are kept (store/audit.py)."""

    async def append(self, event: AuditEvent) -> None: ...

    async def newest(
        self, username_key: str | None, since: datetime | None, limit: int
    ) -> list[AuditEvent]:
        """Up to `limit` events, newest first, of one user (None: everyone), from `since`."""

    async def purge(self, older_than_days: int, limit: int) -> int:
        """Delete up to `limit` events older than `older_than_days`; how many went."""
