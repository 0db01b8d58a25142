"""The login_throttle table: consecutive failed logins per username key.

`RESERVE` decides and records an attempt in one statement: the row lock that INSERT ... ON
CONFLICT DO UPDATE takes serialises concurrent attempts on one name across every replica, each
sees the row as the one before it left it, and `now()` is the database's clock. RETURNING can
only show the new row, so the row keeps the outcome of its latest attempt (`last_outcome`), which
is how the caller learns whether its own attempt was admitted, and whether during a lock.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.domain.models import LoginAttempt
from service.store.db import Database

# $1 username key, $2 delays (seconds after 1, 2, ... failures; the last for more),
# $3 lock every so many counted failures (0: never), $4 lock duration (seconds).
RESERVE = """
INSERT INTO login_throttle AS t
    (username_key, failures, next_attempt_at, locked_until, last_outcome, updated_at)
VALUES (
    $1, 1, now() + make_interval(secs => ($2::float8[])[1]),
    CASE WHEN $3::int = 1 THEN now() + make_interval(secs => $4::float8) END, 'counted', now()
)
ON CONFLICT (username_key) DO UPDATE SET
    (failures, next_attempt_at, locked_until, last_outcome, updated_at) = (
        SELECT
            CASE a.outcome WHEN 'counted' THEN t.failures + 1 ELSE t.failures END,
            CASE a.outcome
                WHEN 'refused' THEN t.next_attempt_at
                ELSE now() + make_interval(secs => ($2::float8[])[greatest(1, least(
                    t.failures + CASE a.outcome WHEN 'counted' THEN 1 ELSE 0 END,
                    cardinality($2::float8[])
                ))])
            END,
            CASE
                WHEN a.outcome = 'counted' AND $3::int > 0 AND (t.failures + 1) % $3::int = 0
                THEN now() + make_interval(secs => $4::float8)
                ELSE t.locked_until
            END,
            a.outcome,
            CASE a.outcome WHEN 'refused' THEN t.updated_at ELSE now() END
        FROM (
            SELECT CASE
                WHEN t.next_attempt_at > now() THEN 'refused'
                WHEN t.locked_until > now() THEN 'locked'
                ELSE 'counted'
            END AS outcome
        ) AS a
    )
RETURNING
    last_outcome,
    failures,
    greatest(extract(epoch FROM next_attempt_at - now()), 0)::float8 AS retry_after,
    greatest(extract(epoch FROM locked_until - now()), 0)::float8 AS locked_for
"""
RESET = "DELETE FROM login_throttle WHERE username_key = $1"
# SKIP LOCKED: replicas purging at once, or attempts in flight, never wait on each other.
PURGE_STALE = """
DELETE FROM login_throttle WHERE username_key IN (
    SELECT username_key FROM login_throttle
    WHERE updated_at < now() - make_interval(secs => $1::float8)
      AND next_attempt_at < now() - make_interval(secs => $1::float8)
      AND (locked_until IS NULL OR locked_until < now() - make_interval(secs => $1::float8))
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
"""


class PgLoginThrottleStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def reserve(
        self, username_key: str, delays: Sequence[float], lock_every: int, lock_seconds: float
    ) -> LoginAttempt:
        row = await self._db.fetchrow(RESERVE, username_key, list(delays), lock_every, lock_seconds)
        assert row is not None  # INSERT ... ON CONFLICT DO UPDATE always returns its row
        outcome = row["last_outcome"]
        return LoginAttempt(
            admitted=outcome != "refused",
            failures=row["failures"],
            retry_after=row["retry_after"],
            locked_for=row["locked_for"] if outcome == "locked" else None,
        )

    async def reset(self, username_key: str) -> None:
        await self._db.execute(RESET, username_key)

    async def purge(self, stale_seconds: float, limit: int) -> int:
        status = await self._db.execute(PURGE_STALE, stale_seconds, limit)
        return int(status.rsplit(" ", 1)[-1])
