"""The signing_keys table: every replica's signing and verification keys."""

from __future__ import annotations

import json

import asyncpg

from service.domain.models import SigningKey
from service.store.db import Database

KEY_COLUMNS = "kid, algorithm, private_pem, public_jwk, created_at"
SELECT_NEWEST = f"""
SELECT {KEY_COLUMNS} FROM signing_keys WHERE algorithm = $1 ORDER BY created_at DESC, kid LIMIT 1
"""
SELECT_PUBLISHED = f"SELECT {KEY_COLUMNS} FROM signing_keys ORDER BY created_at DESC, kid"
# Serialises the first-key race between replicas within one transaction.
LOCK_KEYS = "SELECT pg_advisory_xact_lock(hashtext('authsvc.signing_keys'))"
INSERT_KEY = f"""
INSERT INTO signing_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4::jsonb, $5)
"""


def key_from_row(row: asyncpg.Record) -> SigningKey:
    return SigningKey(
        kid=row["kid"],
        algorithm=row["algorithm"],
        private_pem=bytes(row["private_pem"]),
        public_jwk=json.loads(row["public_jwk"]),
        created_at=row["created_at"],
    )


class PgKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def newest(self, algorithm: str) -> SigningKey | None:
        row = await self._db.fetchrow(SELECT_NEWEST, algorithm)
        return None if row is None else key_from_row(row)

    async def add_if_none(self, key: SigningKey) -> SigningKey:
        async with self._db.transaction() as conn:
            await conn.execute(LOCK_KEYS)
            row = await conn.fetchrow(SELECT_NEWEST, key.algorithm)
            if row is not None:
                return key_from_row(row)
            await conn.execute(
                INSERT_KEY,
                key.kid,
                key.algorithm,
                key.private_pem,
                json.dumps(key.public_jwk),
                key.created_at,
            )
        return key

    async def published(self) -> list[SigningKey]:
        return [key_from_row(row) for row in await self._db.fetch(SELECT_PUBLISHED)]
