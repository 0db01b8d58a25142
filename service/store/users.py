"""The users table, for administration (never reads password hashes)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from service.domain.models import User
from service.store.db import Database, UniqueViolation

USER_COLUMNS = "id, username, created_at, locked, expires_at, credential_version, groups"
INSERT_USER = f"""
INSERT INTO users (username, username_key, password_salt, groups) VALUES ($1, $2, $3, $4)
RETURNING {USER_COLUMNS}
"""
INSERT_PASSWORD = "INSERT INTO passwords (user_id, hash) VALUES ($1, $2)"
SELECT_USERS = f"SELECT {USER_COLUMNS} FROM users ORDER BY username_key"
SELECT_USER = f"SELECT {USER_COLUMNS} FROM users WHERE username_key = $1"
SELECT_USER_BY_ID = f"SELECT {USER_COLUMNS} FROM users WHERE id = $1"
DELETE_USER = "DELETE FROM users WHERE username_key = $1"
UPDATE_LOCKED = "UPDATE users SET locked = $2 WHERE username_key = $1"
UPDATE_EXPIRY = "UPDATE users SET expires_at = $2 WHERE username_key = $1"
# $2 groups to add, $3 to remove, $4 at most this many after the change. One statement: the new
# set is computed from the row as it is (concurrent changes compose), and the credential
# version is bumped (revoking tokens that carry the old groups) only when the set changed.
# Returns no row for an unknown user; `allowed` false (nothing written) past the limit.
UPDATE_GROUPS = """
WITH current AS (
    SELECT id, groups FROM users WHERE username_key = $1 FOR UPDATE
), next AS (
    SELECT c.id, c.groups AS before, coalesce(
        (SELECT array_agg(DISTINCT g ORDER BY g)
         FROM unnest(c.groups || $2::text[]) AS g WHERE g <> ALL($3::text[])),
        '{}'
    ) AS after
    FROM current c
), changed AS (
    UPDATE users u SET groups = n.after, credential_version = u.credential_version + 1
    FROM next n
    WHERE u.id = n.id AND n.after IS DISTINCT FROM n.before AND cardinality(n.after) <= $4
    RETURNING u.id
)
SELECT n.after AS groups, cardinality(n.after) <= $4 AS allowed FROM next n
"""


def user_from_row(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        created_at=row["created_at"],
        locked=row["locked"],
        expires_at=row["expires_at"],
        credential_version=row["credential_version"],
        groups=tuple(row["groups"]),
    )


def _changed_one(status: str) -> bool:
    return status.rsplit(" ", 1)[-1] == "1"


class PgUserStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        username: str,
        username_key: str,
        password_salt: bytes,
        password_hash: str,
        groups: Sequence[str] = (),
    ) -> User | None:
        async with self._db.transaction() as conn:
            try:
                row = await conn.fetchrow(
                    INSERT_USER, username, username_key, password_salt, list(groups)
                )
            except UniqueViolation:
                return None
            assert row is not None
            user = user_from_row(row)
            await conn.execute(INSERT_PASSWORD, user.id, password_hash)
        return user

    async def list(self) -> list[User]:
        return [user_from_row(row) for row in await self._db.fetch(SELECT_USERS)]

    async def get(self, username_key: str) -> User | None:
        row = await self._db.fetchrow(SELECT_USER, username_key)
        return None if row is None else user_from_row(row)

    async def get_by_id(self, user_id: UUID) -> User | None:
        row = await self._db.fetchrow(SELECT_USER_BY_ID, user_id)
        return None if row is None else user_from_row(row)

    async def delete(self, username_key: str) -> bool:
        return _changed_one(await self._db.execute(DELETE_USER, username_key))

    async def set_locked(self, username_key: str, locked: bool) -> bool:
        return _changed_one(await self._db.execute(UPDATE_LOCKED, username_key, locked))

    async def change_groups(
        self, username_key: str, add: Sequence[str], remove: Sequence[str], limit: int
    ) -> tuple[tuple[str, ...], bool] | None:
        row = await self._db.fetchrow(UPDATE_GROUPS, username_key, list(add), list(remove), limit)
        if row is None:
            return None
        return tuple(row["groups"]), row["allowed"]

    async def set_expiry(self, username_key: str, expires_at: datetime | None) -> bool:
        return _changed_one(await self._db.execute(UPDATE_EXPIRY, username_key, expires_at))
