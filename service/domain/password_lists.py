"""The caller's own list of passwords: replace it with one, add one, delete one, never the last.

Hashing is slow, so it happens outside the transaction; the check-and-write happens inside one
that holds the user's row lock, re-checking only what changed since the slow part. Two concurrent
deletes therefore cannot both see "two passwords left", and concurrent adds cannot overwrite each
other. A caller whose own password was removed meanwhile is no longer authenticated.
"""

from __future__ import annotations

from service.domain.models import Principal, StoredPassword
from service.domain.password_policy import PasswordPolicy
from service.domain.passwords import PasswordHasher, check_password
from service.domain.ports import LockedPasswordList, PasswordListStore
from service.errors import AuthError, Reason, invalid_credentials


class PasswordManager:
    def __init__(
        self,
        store: PasswordListStore,
        hasher: PasswordHasher,
        policy: PasswordPolicy | None = None,
        max_passwords: int = 2,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._policy = policy or PasswordPolicy()
        self._max_passwords = max_passwords

    async def replace(self, principal: Principal, new_password: str) -> None:
        """Make `new_password` the caller's only password."""
        self._policy.check_new(new_password, principal.user.username, "new_password")
        checked = await self._ensure_new(principal, new_password)
        new_hash = await self._hasher.hash(new_password)
        async with self._store.locked(principal.user.id) as locked:
            current = await self._recheck(principal, locked, new_password, checked)
            await locked.remove([p.id for p in current])
            await locked.add(new_hash)

    async def add(self, principal: Principal, new_password: str) -> None:
        """Add `new_password` to the caller's list."""
        self._policy.check_new(new_password, principal.user.username, "new_password")
        checked = await self._ensure_new(principal, new_password)
        new_hash = await self._hasher.hash(new_password)
        async with self._store.locked(principal.user.id) as locked:
            current = await self._recheck(principal, locked, new_password, checked)
            if len(current) >= self._max_passwords:
                raise AuthError(
                    Reason.TOO_MANY_PASSWORDS,
                    f"a user holds at most {self._max_passwords} passwords: delete one first",
                )
            await locked.add(new_hash)

    async def delete(self, principal: Principal, old_password: str) -> None:
        """Remove `old_password` from the caller's list, unless it is the last one."""
        check_password(old_password, "old_password")
        snapshot = await self._store.passwords(principal.user.id)
        target = await self._hasher.first_match(snapshot, old_password)
        checked = {p.id for p in snapshot}
        async with self._store.locked(principal.user.id) as locked:
            current = await locked.passwords()
            ids = {p.id for p in current}
            if principal.password_id not in ids:
                raise invalid_credentials()
            if target is None or target.id not in ids:
                # Only passwords added since the snapshot can still match.
                target = await self._hasher.first_match(
                    [p for p in current if p.id not in checked], old_password
                )
            if target is None:
                raise AuthError(
                    Reason.PASSWORD_NOT_FOUND, "old_password is not one of your passwords"
                )
            if len(current) <= 1:
                raise AuthError(
                    Reason.CANNOT_DELETE_LAST_PASSWORD, "cannot delete the last password of a user"
                )
            await locked.remove([target.id])

    async def _ensure_new(self, principal: Principal, new_password: str) -> set[int]:
        """Refuse a password equal to one on the list; return the ids checked."""
        snapshot = await self._store.passwords(principal.user.id)
        await self._refuse_reuse(snapshot, new_password)
        return {p.id for p in snapshot}

    async def _recheck(
        self,
        principal: Principal,
        locked: LockedPasswordList,
        new_password: str,
        checked: set[int],
    ) -> list[StoredPassword]:
        current = await locked.passwords()
        if principal.password_id not in {p.id for p in current}:
            raise invalid_credentials()
        await self._refuse_reuse([p for p in current if p.id not in checked], new_password)
        return current

    async def _refuse_reuse(self, passwords: list[StoredPassword], new_password: str) -> None:
        if await self._hasher.first_match(passwords, new_password) is not None:
            raise AuthError(
                Reason.NEW_PASSWORD_SAME_AS_CURRENT,
                "new_password is identical to one of the existing passwords",
            )
