"""The signing_keys table: every replica's signing and verification keys."""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg

from service.domain.models import SigningKey
from service.store.db import Database

KEY_COLUMNS = (
    "kid, algorithm, private_pem, public_jwk, created_at, activates_at, retires_at, encrypted"
)
SELECT_PUBLISHED = f"""
SELECT {KEY_COLUMNS} FROM signing_keys
WHERE retires_at IS NULL OR retires_at > $1
ORDER BY created_at DESC, kid
"""
# Serialises key creation between replicas within one transaction.
LOCK_KEYS = "SELECT pg_advisory_xact_lock(hashtext('authsvc.signing_keys'))"
# The newest key of an algorithm that is still published at $2; with $3, only among keys not
# already scheduled to retire.
SELECT_NEWEST_CREATED = """
SELECT max(created_at) FROM signing_keys
WHERE algorithm = $1 AND (retires_at IS NULL OR (NOT $3 AND retires_at > $2))
"""
INSERT_KEY = f"""
INSERT INTO signing_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4::jsonb, $5, $6, NULL, $7)
"""
RETIRE_OTHERS = """
UPDATE signing_keys SET retires_at = $2
WHERE kid <> $1 AND (retires_at IS NULL OR retires_at > $2)
"""
DELETE_RETIRED = "DELETE FROM signing_keys WHERE retires_at <= $1"


def key_from_row(row: asyncpg.Record) -> SigningKey:
    return SigningKey(
        kid=row["kid"],
        algorithm=row["algorithm"],
        private_pem=bytes(row["private_pem"]),
        public_jwk=json.loads(row["public_jwk"]),
        created_at=row["created_at"],
        activates_at=row["activates_at"],
        retires_at=row["retires_at"],
        encrypted=row["encrypted"],
    )


class PgKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def published(self, now: datetime) -> list[SigningKey]:
        return [key_from_row(row) for row in await self._db.fetch(SELECT_PUBLISHED, now)]

    async def add_key(
        self,
        key: SigningKey,
        *,
        unless_newer_than: datetime,
        retire_others_at: datetime,
        ignore_retiring: bool = False,
    ) -> bool:
        async with self._db.transaction() as conn:
            await conn.execute(LOCK_KEYS)
            newest = await conn.fetchrow(
                SELECT_NEWEST_CREATED, key.algorithm, key.created_at, ignore_retiring
            )
            if newest is not None and newest[0] is not None and newest[0] > unless_newer_than:
                return False
            await conn.execute(
                INSERT_KEY,
                key.kid,
                key.algorithm,
                key.private_pem,
                json.dumps(key.public_jwk),
                key.created_at,
                key.activates_at,
                key.encrypted,
            )
            await conn.execute(RETIRE_OTHERS, key.kid, retire_others_at)
        return True

    async def purge_retired(self, now: datetime) -> int:
        status = await self._db.execute(DELETE_RETIRED, now)
        return int(status.rsplit(" ", 1)[-1])
