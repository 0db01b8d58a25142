"""The failure counts of the brute-force defence, outside the login path (see `logins.py`):
an administrator's reset, and the purge of counts and known sources nobody needs any more."""

from __future__ import annotations

from service.store.db import Database

RESET = "DELETE FROM login_throttle WHERE username_key = $1"
# $1 seconds: rows whose delay and lock ended that long ago; $2 at most this many rows.
# SKIP LOCKED: replicas purging at once, or attempts in flight, never wait on each other.
PURGE_NAMES = """
DELETE FROM login_throttle WHERE (username_key, source) IN (
    SELECT username_key, source FROM login_throttle
    WHERE updated_at < now() - make_interval(secs => $1::float8)
      AND next_attempt_at < now() - make_interval(secs => $1::float8)
      AND (locked_until IS NULL OR locked_until < now() - make_interval(secs => $1::float8))
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
"""
PURGE_SOURCES = """
DELETE FROM source_throttle WHERE source IN (
    SELECT source FROM source_throttle
    WHERE updated_at < now() - make_interval(secs => $1::float8)
      AND next_attempt_at < now() - make_interval(secs => $1::float8)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
"""
# $1 seconds: sources that have not logged in to the user for that long; $2 as above.
PURGE_KNOWN_SOURCES = """
DELETE FROM known_sources WHERE (user_id, source) IN (
    SELECT user_id, source FROM known_sources
    WHERE last_login_at < now() - make_interval(secs => $1::float8)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
"""


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class PgLoginThrottleStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def reset(self, username_key: str) -> None:
        await self._db.execute(RESET, username_key)

    async def purge_name_counts(self, stale_seconds: float, limit: int) -> int:
        return _count(await self._db.execute(PURGE_NAMES, stale_seconds, limit))

    async def purge_source_counts(self, stale_seconds: float, limit: int) -> int:
        return _count(await self._db.execute(PURGE_SOURCES, stale_seconds, limit))

    async def purge_known_sources(self, unseen_seconds: float, limit: int) -> int:
        return _count(await self._db.execute(PURGE_KNOWN_SOURCES, unseen_seconds, limit))
