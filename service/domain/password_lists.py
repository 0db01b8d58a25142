"""The caller's own list of passwords: replace it with one, add one, delete one, never the last.

Hashing is slow, so it happens outside the transaction, once: the new password is hashed with
the user's salt, and that one digest is compared with every current password (and, with a
password history, every recently retired one). The check-and-write happens inside a transaction
that holds the user's row lock, re-checking only what changed since the slow part, by comparing
digests (no second hash). Two concurrent deletes therefore cannot both see "two passwords left",
and concurrent adds cannot overwrite each other. A caller whose own password was removed
meanwhile is no longer authenticated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from service.domain.audit import Auditor
from service.domain.models import AuditKind, Principal, StoredPassword, User
from service.domain.password_policy import PasswordPolicy
from service.domain.passwords import Match, PasswordHasher, check_password
from service.domain.ports import LockedPasswordList, PasswordListStore
from service.errors import AuthError, Reason, invalid_credentials

# A bound for storage, not for timing: a login costs one hash however long the list is.
MAX_PASSWORDS_DEFAULT = 32
# How many retired passwords a new one may not repeat (0: no history).
HISTORY_DEFAULT = 0


class PasswordManager:
    def __init__(
        self,
        store: PasswordListStore,
        hasher: PasswordHasher,
        policy: PasswordPolicy | None = None,
        max_passwords: int = MAX_PASSWORDS_DEFAULT,
        history: int = HISTORY_DEFAULT,
        audit: Auditor | None = None,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._policy = policy or PasswordPolicy()
        self._max_passwords = max_passwords
        # How many retired passwords a new one may not repeat (0: none).
        self._history = history
        self._audit = audit

    async def replace(self, principal: Principal, new_password: str) -> None:
        """Make `new_password` the caller's only password."""
        self._policy.check_new(new_password, principal.user.username, "new_password")
        match, checked = await self._ensure_new(principal, new_password)
        async with self._locked(principal) as locked:
            current = await self._recheck(principal, locked, new_password, match, checked)
            await locked.remove([p.id for p in current], self._history)
            await locked.add(match.candidate_hash)
        await self._record(AuditKind.PASSWORD_REPLACED, principal, f"{len(current)} replaced by 1")

    async def add(self, principal: Principal, new_password: str) -> None:
        """Add `new_password` to the caller's list."""
        self._policy.check_new(new_password, principal.user.username, "new_password")
        match, checked = await self._ensure_new(principal, new_password)
        async with self._locked(principal) as locked:
            current = await self._recheck(principal, locked, new_password, match, checked)
            if len(current) >= self._max_passwords:
                raise AuthError(
                    Reason.TOO_MANY_PASSWORDS,
                    f"a user holds at most {self._max_passwords} passwords: delete one first",
                )
            await locked.add(match.candidate_hash)
        await self._record(AuditKind.PASSWORD_ADDED, principal, f"{len(current) + 1} held")

    async def delete(self, principal: Principal, old_password: str) -> None:
        """Remove `old_password` from the caller's list, unless it is the last one."""
        check_password(old_password, "old_password")
        snapshot = await self._store.passwords(principal.user.id)
        match = await self._hasher.match(old_password, principal.password_salt, snapshot)
        checked = {p.id for p in snapshot}
        async with self._locked(principal) as locked:
            current = await locked.passwords()
            ids = {p.id for p in current}
            if principal.password_id not in ids:
                raise invalid_credentials()
            target = match.found
            if target is None or target.id not in ids:
                # Only passwords added since the snapshot can still match.
                target = await self._found_among(
                    old_password, principal, match, [p for p in current if p.id not in checked]
                )
            if target is None:
                raise AuthError(
                    Reason.PASSWORD_NOT_FOUND, "old_password is not one of your passwords"
                )
            if len(current) <= 1:
                raise AuthError(
                    Reason.CANNOT_DELETE_LAST_PASSWORD, "cannot delete the last password of a user"
                )
            await locked.remove([target.id], self._history)
        await self._record(AuditKind.PASSWORD_DELETED, principal, f"{len(current) - 1} held")

    async def _record(self, kind: AuditKind, principal: Principal, detail: str) -> None:
        if self._audit is not None:
            await self._audit.record(kind, principal.user.username, detail, principal.source)

    @asynccontextmanager
    async def _locked(self, principal: Principal) -> AsyncIterator[LockedPasswordList]:
        """The caller's list under the user's row lock. A user deleted since the caller
        authenticated is no longer authenticated: INVALID_CREDENTIALS."""
        async with self._store.locked(principal.user.id) as locked:
            if locked is None:
                raise invalid_credentials()
            yield locked

    async def set_by_admin(self, user: User, new_password: str) -> None:
        """An administrator's reset (`authsvc user set-password`): `new_password`, which must
        pass the password rules, becomes the user's only password, hashed with the user's salt;
        the credential version is bumped, so tokens issued before stop verifying. No current
        password is needed, and it may repeat one (the administrator does not know them)."""
        self._policy.check_new(new_password, user.username, "password")
        salt = await self._store.salt(user.id)
        if salt is None:
            raise AuthError(Reason.USER_NOT_FOUND, f"no such user: {user.username}")
        candidate_hash = await self._hasher.hash(new_password, salt)
        async with self._store.locked(user.id) as locked:
            if locked is None:
                raise AuthError(Reason.USER_NOT_FOUND, f"no such user: {user.username}")
            current = await locked.passwords()
            await locked.remove([p.id for p in current], self._history)
            await locked.add(candidate_hash)
        if self._audit is not None:
            await self._audit.record(
                AuditKind.PASSWORD_SET_BY_ADMIN, user.username, f"{len(current)} replaced by 1"
            )

    async def _ensure_new(self, principal: Principal, new_password: str) -> tuple[Match, set[int]]:
        """Hash `new_password` once and refuse it if it is on the list (or, with a history, was
        lately); return the match and the ids checked."""
        current = await self._store.passwords(principal.user.id)
        retired = (
            await self._store.history(principal.user.id, self._history) if self._history else []
        )
        match = await self._hasher.match(
            new_password, principal.password_salt, [*current, *retired]
        )
        if match.found is not None:
            if any(match.found is p for p in retired):
                raise _reused(self._history)
            raise _same_as_current()
        return match, {p.id for p in current}

    async def _recheck(
        self,
        principal: Principal,
        locked: LockedPasswordList,
        new_password: str,
        match: Match,
        checked: set[int],
    ) -> list[StoredPassword]:
        current = await locked.passwords()
        if principal.password_id not in {p.id for p in current}:
            raise invalid_credentials()
        added = [p for p in current if p.id not in checked]
        if await self._found_among(new_password, principal, match, added) is not None:
            raise _same_as_current()
        return current

    async def _found_among(
        self,
        password: str,
        principal: Principal,
        match: Match,
        stored: Sequence[StoredPassword],
    ) -> StoredPassword | None:
        """The password of `stored` that `password` (already hashed in `match`) is: by digest,
        and by hashing only for hashes made with other parameters or another salt."""
        found, others = self._hasher.compare(match.candidate_hash, stored)
        if found is None and others:
            found = (await self._hasher.match(password, principal.password_salt, others)).found
        return found


def _same_as_current() -> AuthError:
    return AuthError(
        Reason.NEW_PASSWORD_SAME_AS_CURRENT,
        "new_password is identical to one of the existing passwords",
    )


def _reused(history: int) -> AuthError:
    return AuthError(
        Reason.PASSWORD_REUSED,
        f"new_password was used recently: it may not be one of your last {history} passwords",
    )
