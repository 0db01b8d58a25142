"""The login path's statements: one read before the hash, at most one write after it.

`FIND_LOGIN` reads, in one round trip, the user, its salt and passwords, whether the caller's
source has logged in to it before, and every failure count that could apply (for unknown names
too). `RECORD_FAILURE` counts a failure on the name's count and on the source's, deciding the
next delay and any lock in the same atomic upsert (the row lock of INSERT ... ON CONFLICT
serialises replicas; `now()` is the database's clock), and appends the failure's audit event in
the same statement (still one write per failed login). `RECORD_SUCCESS` makes only the changes
the domain asks for; a login that changes nothing writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from service.domain.models import (
    AuditEvent,
    FailureCount,
    FailureRecord,
    LoginView,
    StoredPassword,
    SuccessRecord,
)
from service.store.audit import EVENT_COLUMNS, event_params
from service.store.db import Database
from service.store.users import USER_COLUMNS, user_from_row


def _wait(column: str) -> str:
    """Seconds from now until `column` (a timestamp), never negative; 0 when NULL."""
    return f"coalesce(greatest(extract(epoch FROM {column} - now()), 0), 0)::float8"


# $1 username key, $2 source.
FIND_LOGIN = f"""
SELECT {", ".join("u." + c for c in USER_COLUMNS.split(", "))}, u.password_salt,
    p.ids, p.hashes, p.created, p.used,
    ks.last_login_at AS source_last_login,
    coalesce(ns.failures, 0) AS strangers_failures,
    {_wait("ns.next_attempt_at")} AS strangers_wait,
    {_wait("ns.locked_until")} AS strangers_locked_for,
    coalesce(nk.failures, 0) AS known_failures,
    {_wait("nk.next_attempt_at")} AS known_wait,
    {_wait("nk.locked_until")} AS known_locked_for,
    coalesce(st.failures, 0) AS source_failures,
    {_wait("st.next_attempt_at")} AS source_wait,
    now() AS now
FROM (SELECT) AS one
LEFT JOIN users u ON u.username_key = $1
LEFT JOIN LATERAL (
    SELECT array_agg(id ORDER BY id) AS ids, array_agg(hash ORDER BY id) AS hashes,
        array_agg(created_at ORDER BY id) AS created, array_agg(last_used_at ORDER BY id) AS used
    FROM passwords WHERE user_id = u.id
) p ON u.id IS NOT NULL
LEFT JOIN known_sources ks ON ks.user_id = u.id AND ks.source = $2
LEFT JOIN login_throttle ns ON ns.username_key = $1 AND ns.source = ''
LEFT JOIN login_throttle nk ON nk.username_key = $1 AND nk.source = $2
LEFT JOIN source_throttle st ON st.source = $2
"""

# $1 username key, $2 the name's count ('' or the source), $3 the name's delays (seconds after
# 1, 2, ... failures; the last for more), $4 lock every so many counted failures (0: never),
# $5 lock duration (seconds), $6 source, $7 the source's delays; $8.. the audit event's
# columns (store/audit.py EVENT_COLUMNS; $8 NULL: no event). A failure during a lock is not
# counted, but still waits the current delay (so the lock is no faster oracle than the delay).
RECORD_FAILURE = f"""
WITH audit AS (
    INSERT INTO audit_events ({EVENT_COLUMNS})
    SELECT $8, $9, $10, $11, $12, $13 WHERE $8::text IS NOT NULL
), name AS (
    INSERT INTO login_throttle AS t
        (username_key, source, failures, next_attempt_at, locked_until, updated_at)
    VALUES (
        $1, $2, 1, now() + make_interval(secs => ($3::float8[])[1]),
        CASE WHEN $4::int = 1 THEN now() + make_interval(secs => $5::float8) END, now()
    )
    ON CONFLICT (username_key, source) DO UPDATE SET
        (failures, next_attempt_at, locked_until, updated_at) = (
            SELECT
                c.counted,
                now() + make_interval(secs => ($3::float8[])[
                    greatest(1, least(c.counted, cardinality($3::float8[])))
                ]),
                CASE
                    WHEN NOT c.locked AND $4::int > 0 AND c.counted % $4::int = 0
                    THEN now() + make_interval(secs => $5::float8)
                    ELSE t.locked_until
                END,
                now()
            FROM (
                SELECT l.locked, CASE WHEN l.locked THEN t.failures ELSE t.failures + 1 END
                    AS counted
                FROM (SELECT coalesce(t.locked_until > now(), false) AS locked) AS l
            ) AS c
        )
    RETURNING failures, next_attempt_at, locked_until
), src AS (
    INSERT INTO source_throttle AS s (source, failures, next_attempt_at, updated_at)
    VALUES ($6, 1, now() + make_interval(secs => ($7::float8[])[1]), now())
    ON CONFLICT (source) DO UPDATE SET
        failures = s.failures + 1,
        next_attempt_at = now() + make_interval(secs => ($7::float8[])[
            least(s.failures + 1, cardinality($7::float8[]))
        ]),
        updated_at = now()
    RETURNING failures, next_attempt_at
)
SELECT
    name.failures AS name_failures,
    {_wait("name.next_attempt_at")} AS name_wait,
    {_wait("name.locked_until")} AS name_locked_for,
    src.failures AS source_failures,
    {_wait("src.next_attempt_at")} AS source_wait
FROM name, src
"""

# $1 username key, $2 the name's count to reset (NULL: none), $3 source, $4 reset the source's
# count, $5 user id, $6 remember the source, $7 password to mark used (NULL: none), $8 its new
# hash (NULL: keep).
RECORD_SUCCESS = """
WITH reset_name AS (
    DELETE FROM login_throttle WHERE username_key = $1 AND source = $2
), reset_source AS (
    DELETE FROM source_throttle WHERE $4 AND source = $3
), remember AS (
    INSERT INTO known_sources (user_id, source, last_login_at)
    SELECT $5, $3, now() WHERE $6
    ON CONFLICT (user_id, source) DO UPDATE SET last_login_at = now()
), touch AS (
    UPDATE passwords SET last_used_at = now(), hash = coalesce($8, hash) WHERE id = $7
)
SELECT 1
"""


def _passwords(row: asyncpg.Record) -> tuple[StoredPassword, ...]:
    if row["ids"] is None:
        return ()
    return tuple(
        StoredPassword(id=i, hash=h, created_at=c, last_used_at=u)
        for i, h, c, u in zip(row["ids"], row["hashes"], row["created"], row["used"], strict=True)
    )


def _count(row: asyncpg.Record, prefix: str) -> FailureCount:
    return FailureCount(
        failures=row[f"{prefix}_failures"],
        wait=row[f"{prefix}_wait"],
        locked_for=row.get(f"{prefix}_locked_for", 0.0),
    )


class PgLoginStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def find_login(self, username_key: str, source: str) -> LoginView:
        row = await self._db.fetchrow(FIND_LOGIN, username_key, source)
        assert row is not None  # FROM (SELECT) always yields one row
        return LoginView(
            user=user_from_row(row) if row["id"] is not None else None,
            password_salt=row["password_salt"],
            passwords=_passwords(row),
            source_last_login=row["source_last_login"],
            strangers=_count(row, "strangers"),
            this_source=_count(row, "known"),
            source=_count(row, "source"),
            now=row["now"],
        )

    async def record_failure(
        self,
        username_key: str,
        counter: str,
        name_delays: Sequence[float],
        lock_every: int,
        lock_seconds: float,
        source: str,
        source_delays: Sequence[float],
        audit: AuditEvent | None = None,
    ) -> FailureRecord:
        row = await self._db.fetchrow(
            RECORD_FAILURE,
            username_key,
            counter,
            list(name_delays),
            lock_every,
            lock_seconds,
            source,
            list(source_delays),
            *(event_params(audit) if audit is not None else (None,) * 6),
        )
        assert row is not None  # both upserts always return their row
        return FailureRecord(name=_count(row, "name"), source=_count(row, "source"))

    async def record_success(self, username_key: str, record: SuccessRecord) -> None:
        await self._db.execute(
            RECORD_SUCCESS,
            username_key,
            record.reset_counter,
            record.source,
            record.reset_source,
            record.user_id,
            record.remember_source,
            record.touch_password,
            record.rehashed,
        )
