"""The signing_keys table: every replica's signing and verification keys, and the notice every
change sends to the replicas (PostgreSQL LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import asyncpg

from service.domain.models import SigningKey
from service.store.db import Database

log = logging.getLogger(__name__)

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
# Whether an algorithm ($1) has a key not scheduled to retire (bootstrap is then done).
SELECT_HAS_CURRENT = """
SELECT EXISTS (SELECT 1 FROM signing_keys WHERE algorithm = $1 AND retires_at IS NULL)
"""
# Whether an algorithm ($1) has a key published at $2 that was created after $3 (a scheduled
# rotation is then not due).
SELECT_HAS_NEWER = """
SELECT EXISTS (
    SELECT 1 FROM signing_keys
    WHERE algorithm = $1 AND (retires_at IS NULL OR retires_at > $2) AND created_at > $3
)
"""
INSERT_KEY = f"""
INSERT INTO signing_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4::jsonb, $5, $6, NULL, $7)
"""
RETIRE_OTHERS = """
UPDATE signing_keys SET retires_at = $2
WHERE kid <> $1 AND (retires_at IS NULL OR retires_at > $2)
"""
DELETE_RETIRED = "DELETE FROM signing_keys WHERE retires_at <= $1"
# Every change to the table tells the listening replicas, from inside its transaction, so the
# notice goes out when (and only if) the change commits.
KEYS_CHANNEL = "authsvc_signing_keys"
NOTIFY_KEYS_CHANGED = f"SELECT pg_notify('{KEYS_CHANNEL}', $1)"
LISTEN_PING = "SELECT 1"


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

    async def add_first_key(self, key: SigningKey, *, retire_others_at: datetime) -> bool:
        return await self._add(key, retire_others_at, SELECT_HAS_CURRENT, key.algorithm)

    async def add_scheduled_key(
        self, key: SigningKey, *, unless_newer_than: datetime, retire_others_at: datetime
    ) -> bool:
        return await self._add(
            key,
            retire_others_at,
            SELECT_HAS_NEWER,
            key.algorithm,
            key.created_at,
            unless_newer_than,
        )

    async def add_forced_key(self, key: SigningKey, *, retire_others_at: datetime) -> None:
        await self._add(key, retire_others_at, None)

    async def _add(
        self, key: SigningKey, retire_others_at: datetime, refused_if: str | None, *args: object
    ) -> bool:
        """In one transaction under the key lock: unless the `refused_if` query (with `args`)
        says true, insert `key`, retire the others, tell the replicas."""
        async with self._db.transaction() as conn:
            await conn.execute(LOCK_KEYS)
            if refused_if is not None and (await conn.fetchrow(refused_if, *args) or [False])[0]:
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
            await conn.execute(NOTIFY_KEYS_CHANGED, key.kid)
        return True

    async def purge_retired(self, now: datetime) -> int:
        # No notice: a purged key had retired already, and every replica checks retires_at.
        status = await self._db.execute(DELETE_RETIRED, now)
        return int(status.rsplit(" ", 1)[-1])


# How long the listener waits before connecting again after losing its connection, and how
# often it checks that a quiet connection is still alive (a network can drop it silently).
LISTEN_RETRY_SECONDS = 2.0
LISTEN_CHECK_SECONDS = 10.0


@contextlib.asynccontextmanager
async def key_changes(
    dsn: str, on_change: Callable[[], None], db_timeout: float
) -> AsyncIterator[None]:
    """While the block runs, call `on_change()` whenever any process changes the key table,
    and each time listening starts (again), for what changed meanwhile.

    LISTEN needs a session of its own that stays open, so this is a direct connection, not one
    from the pool (and not through PgBouncer in transaction mode, which cannot carry LISTEN).
    Failing to listen is only logged, and retried: the key ring's periodic re-read still brings
    every change, only later.
    """
    task = asyncio.create_task(_listen(dsn, on_change, db_timeout))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _listen(dsn: str, on_change: Callable[[], None], db_timeout: float) -> None:
    failing = False
    while True:
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(
                dsn, timeout=db_timeout, server_settings={"application_name": "authsvc-keys"}
            )
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn, event=lost: event.set())
            async with asyncio.timeout(db_timeout):
                await conn.add_listener(KEYS_CHANNEL, lambda *_: on_change())
            on_change()
            if failing:
                log.info("listening for signing key changes again")
                failing = False
            while not lost.is_set():
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation
                # that comes as its awaitable completes, and the task would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LISTEN_CHECK_SECONDS):
                        await lost.wait()
                if not lost.is_set():
                    async with asyncio.timeout(db_timeout):
                        await conn.execute(LISTEN_PING)
            raise ConnectionError("listening connection closed")
        except Exception as exc:  # whatever it is, the server goes on: log, retry later
            if not failing:  # a line per outage, not per retry
                log.warning(
                    "not listening for signing key changes (%s): other processes' key changes"
                    " reach this one by its periodic re-read instead",
                    exc.__class__.__name__,
                )
                failing = True
        finally:
            if conn is not None:
                conn.terminate()  # no goodbye round trip to a database that may be stalled
        await asyncio.sleep(LISTEN_RETRY_SECONDS)
