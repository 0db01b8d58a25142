"""The passwords table (and the history of retired ones): a user's list, and changes to it under
the user's row lock. The login path's reads are in `logins.py`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from uuid import UUID

import asyncpg

from service.domain.models import StoredPassword
from service.store.db import Connection, Database

SELECT_PASSWORDS = "SELECT id, hash, created_at FROM passwords WHERE user_id = $1 ORDER BY id"
# $2: how many of the newest retired passwords.
SELECT_HISTORY = """
SELECT id, hash, retired_at AS created_at FROM password_history
WHERE user_id = $1 ORDER BY id DESC LIMIT $2
"""
LOCK_USER = "SELECT 1 FROM users WHERE id = $1 FOR UPDATE"
SELECT_SALT = "SELECT password_salt FROM users WHERE id = $1"
INSERT_PASSWORD = "INSERT INTO passwords (user_id, hash) VALUES ($1, $2)"
# $2 ids to remove, $3 how many retired passwords to keep (0: none). One statement: the removed
# passwords go to the history, which keeps only its newest $3.
REMOVE_PASSWORDS = """
WITH removed AS (
    DELETE FROM passwords WHERE user_id = $1 AND id = ANY($2::bigint[]) RETURNING id, hash
), retired AS (
    INSERT INTO password_history (user_id, hash)
    SELECT $1, hash FROM (SELECT id, hash FROM removed ORDER BY id DESC LIMIT $3::int) AS r
    ORDER BY id
    RETURNING id
), pruned AS (
    DELETE FROM password_history WHERE user_id = $1 AND id IN (
        SELECT id FROM password_history WHERE user_id = $1
        ORDER BY id DESC OFFSET greatest($3::int - (SELECT count(*) FROM retired), 0)
    )
)
UPDATE users SET credential_version = credential_version + 1 WHERE id = $1
"""


def _password(row: asyncpg.Record) -> StoredPassword:
    return StoredPassword(id=row["id"], hash=row["hash"], created_at=row["created_at"])


class PgLockedPasswordList:
    def __init__(self, conn: Connection, user_id: UUID) -> None:
        self._conn = conn
        self._user_id = user_id

    async def passwords(self) -> list[StoredPassword]:
        return [_password(row) for row in await self._conn.fetch(SELECT_PASSWORDS, self._user_id)]

    async def add(self, password_hash: str) -> None:
        await self._conn.execute(INSERT_PASSWORD, self._user_id, password_hash)

    async def remove(self, password_ids: Sequence[int], keep_history: int) -> None:
        await self._conn.execute(REMOVE_PASSWORDS, self._user_id, list(password_ids), keep_history)


class PgPasswordListStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def passwords(self, user_id: UUID) -> list[StoredPassword]:
        return [_password(row) for row in await self._db.fetch(SELECT_PASSWORDS, user_id)]

    async def history(self, user_id: UUID, limit: int) -> list[StoredPassword]:
        return [_password(row) for row in await self._db.fetch(SELECT_HISTORY, user_id, limit)]

    async def salt(self, user_id: UUID) -> bytes | None:
        row = await self._db.fetchrow(SELECT_SALT, user_id)
        return None if row is None else bytes(row["password_salt"])

    @asynccontextmanager
    async def locked(self, user_id: UUID) -> AsyncIterator[PgLockedPasswordList | None]:
        async with self._db.transaction() as conn:
            found = await conn.fetchrow(LOCK_USER, user_id) is not None
            yield PgLockedPasswordList(conn, user_id) if found else None
