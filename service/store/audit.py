"""The audit_events table: append an event, read the newest, purge the old in batches.

A failed login's event is not appended here: `logins.RECORD_FAILURE` inserts it in the same
statement that counts the failure (its `AUDIT_CTE`), so a failure still costs one write.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from service.domain.models import AuditEvent
from service.store.db import Database

EVENT_COLUMNS = "kind, username, username_key, source, request_id, detail"
INSERT_EVENT = f"INSERT INTO audit_events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
# $1 username key (NULL: every user), $2 from this time on (NULL: from the start), $3 at most.
SELECT_NEWEST = f"""
SELECT at, {EVENT_COLUMNS} FROM audit_events
WHERE ($1::text IS NULL OR username_key = $1) AND ($2::timestamptz IS NULL OR at >= $2)
ORDER BY at DESC, id DESC
LIMIT $3
"""
# $1 days: events older than that; $2 at most this many rows per statement, so no purge holds
# many row locks or writes a long transaction. SKIP LOCKED: replicas purging at once never wait.
PURGE_EVENTS = """
DELETE FROM audit_events WHERE id IN (
    SELECT id FROM audit_events
    WHERE at < now() - make_interval(days => $1::int)
    ORDER BY at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
"""


def event_params(event: AuditEvent) -> tuple[str, str, str, str, str, str]:
    """The values of EVENT_COLUMNS, in order (also `logins.RECORD_FAILURE`'s audit columns)."""
    return (
        str(event.kind),
        event.username,
        event.username_key,
        event.source,
        event.request_id,
        event.detail,
    )


def event_from_row(row: asyncpg.Record) -> AuditEvent:
    return AuditEvent(
        kind=row["kind"],
        username=row["username"],
        username_key=row["username_key"],
        source=row["source"],
        request_id=row["request_id"],
        detail=row["detail"],
        at=row["at"],
    )


class PgAuditLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, event: AuditEvent) -> None:
        await self._db.execute(INSERT_EVENT, *event_params(event))

    async def newest(
        self, username_key: str | None, since: datetime | None, limit: int
    ) -> list[AuditEvent]:
        rows = await self._db.fetch(SELECT_NEWEST, username_key, since, limit)
        return [event_from_row(row) for row in rows]

    async def purge(self, older_than_days: int, limit: int) -> int:
        status = await self._db.execute(PURGE_EVENTS, older_than_days, limit)
        return int(status.rsplit(" ", 1)[-1])
