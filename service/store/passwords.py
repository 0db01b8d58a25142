"""The passwords table: the authenticator's reads, and changes under the user's row lock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from uuid import UUID

from service.domain.models import StoredPassword, User
from service.errors import invalid_credentials
from service.store.db import Connection, Database
from service.store.users import USER_COLUMNS, user_from_row

SELECT_LOGIN = f"""
SELECT {", ".join("u." + c for c in USER_COLUMNS.split(", "))}, p.id AS password_id, p.hash,
    p.created_at AS password_created_at
FROM users u LEFT JOIN passwords p ON p.user_id = u.id
WHERE u.username_key = $1
ORDER BY p.last_used_at DESC NULLS LAST, p.id DESC
"""
SELECT_PASSWORDS = """
SELECT id, hash FROM passwords WHERE user_id = $1 ORDER BY last_used_at DESC NULLS LAST, id DESC
"""
UPDATE_USED = "UPDATE passwords SET last_used_at = now(), hash = coalesce($2, hash) WHERE id = $1"
LOCK_USER = "SELECT 1 FROM users WHERE id = $1 FOR UPDATE"
INSERT_PASSWORD = "INSERT INTO passwords (user_id, hash) VALUES ($1, $2)"
DELETE_PASSWORDS = "DELETE FROM passwords WHERE user_id = $1 AND id = ANY($2::bigint[])"
BUMP_CREDENTIAL_VERSION = (
    "UPDATE users SET credential_version = credential_version + 1 WHERE id = $1"
)


class PgCredentialStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def find_login(self, username_key: str) -> tuple[User, list[StoredPassword]] | None:
        rows = await self._db.fetch(SELECT_LOGIN, username_key)
        if not rows:
            return None
        passwords = [
            StoredPassword(
                id=row["password_id"], hash=row["hash"], created_at=row["password_created_at"]
            )
            for row in rows
            if row["password_id"] is not None
        ]
        return user_from_row(rows[0]), passwords

    async def record_use(self, password_id: int, rehashed: str | None) -> None:
        await self._db.execute(UPDATE_USED, password_id, rehashed)


class PgLockedPasswordList:
    def __init__(self, conn: Connection, user_id: UUID) -> None:
        self._conn = conn
        self._user_id = user_id

    async def passwords(self) -> list[StoredPassword]:
        rows = await self._conn.fetch(SELECT_PASSWORDS, self._user_id)
        return [StoredPassword(id=row["id"], hash=row["hash"]) for row in rows]

    async def add(self, password_hash: str) -> None:
        await self._conn.execute(INSERT_PASSWORD, self._user_id, password_hash)

    async def remove(self, password_ids: Sequence[int]) -> None:
        await self._conn.execute(DELETE_PASSWORDS, self._user_id, list(password_ids))
        await self._conn.execute(BUMP_CREDENTIAL_VERSION, self._user_id)


class PgPasswordListStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def passwords(self, user_id: UUID) -> list[StoredPassword]:
        rows = await self._db.fetch(SELECT_PASSWORDS, user_id)
        return [StoredPassword(id=row["id"], hash=row["hash"]) for row in rows]

    @asynccontextmanager
    async def locked(self, user_id: UUID) -> AsyncIterator[PgLockedPasswordList]:
        async with self._db.transaction() as conn:
            if await conn.fetchrow(LOCK_USER, user_id) is None:
                raise invalid_credentials()  # deleted since the caller authenticated
            yield PgLockedPasswordList(conn, user_id)
