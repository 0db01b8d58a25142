"""Administration of accounts (the `authsvc user ...` commands): create, list, delete, lock,
unlock, expire, groups. Password rules apply to an administrator's first password as to anyone's.
Unlocking also lifts a lockout after failed logins and forgets those failures: the administrator
vouches for the owner."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from service.domain.audit import Auditor
from service.domain.groups import MAX_GROUPS, group_set, too_many_groups
from service.domain.models import AuditKind, User
from service.domain.password_policy import PasswordPolicy
from service.domain.passwords import PasswordHasher, new_salt
from service.domain.ports import UserStore
from service.domain.throttle import LoginThrottle
from service.domain.usernames import check_new_username, username_key
from service.errors import AuthError, Reason


def _not_found(username: str) -> AuthError:
    return AuthError(Reason.USER_NOT_FOUND, f"no such user: {username}")


class UserAdmin:
    def __init__(
        self,
        store: UserStore,
        hasher: PasswordHasher,
        policy: PasswordPolicy | None = None,
        throttle: LoginThrottle | None = None,
        audit: Auditor | None = None,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._policy = policy or PasswordPolicy()
        self._throttle = throttle
        self._audit = audit

    async def _record(self, kind: AuditKind, username: str, detail: str = "") -> None:
        if self._audit is not None:
            await self._audit.record(kind, username, detail)

    async def create(self, username: str, password: str, groups: Iterable[str] = ()) -> User:
        check_new_username(username)
        members = group_set(groups)
        self._policy.check_new(password, username)
        salt = new_salt()
        password_hash = await self._hasher.hash(password, salt)
        user = await self._store.create(
            username, username_key(username), salt, password_hash, members
        )
        if user is None:
            raise AuthError(Reason.USER_EXISTS, f"user already exists: {username}")
        await self._record(
            AuditKind.ACCOUNT_CREATED, user.username, f"groups: {','.join(user.groups) or '-'}"
        )
        return user

    async def get(self, username: str) -> User:
        user = await self._store.get(username_key(username))
        if user is None:
            raise _not_found(username)
        return user

    async def list(self) -> list[User]:
        return await self._store.list()

    async def delete(self, username: str) -> None:
        if not await self._store.delete(username_key(username)):
            raise _not_found(username)
        await self._record(AuditKind.ACCOUNT_DELETED, username)

    async def set_locked(self, username: str, locked: bool) -> None:
        if not await self._store.set_locked(username_key(username), locked):
            raise _not_found(username)
        if not locked and self._throttle is not None:
            await self._throttle.clear(username_key(username))
        if locked:
            await self._record(AuditKind.ACCOUNT_LOCKED, username)
        else:
            await self._record(AuditKind.ACCOUNT_UNLOCKED, username, "failed logins forgotten")

    async def change_groups(
        self, username: str, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> tuple[str, ...]:
        """Add and remove groups (atomically; the rest stay); the user's older tokens stop
        verifying when the set changes (they carry the old groups). Returns the new set."""
        added = group_set(add)
        changed = await self._store.change_groups(
            username_key(username), added, sorted(set(remove)), MAX_GROUPS
        )
        if changed is None:
            raise _not_found(username)
        groups, allowed = changed
        if not allowed:
            raise too_many_groups()
        await self._record(AuditKind.GROUPS_CHANGED, username, f"groups: {','.join(groups) or '-'}")
        return groups

    async def set_expiry(self, username: str, expires_at: datetime | None) -> None:
        if not await self._store.set_expiry(username_key(username), expires_at):
            raise _not_found(username)
        when = "never" if expires_at is None else expires_at.isoformat(timespec="seconds")
        await self._record(AuditKind.ACCOUNT_EXPIRY_SET, username, f"expires: {when}")
