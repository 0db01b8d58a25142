"""The audit store contract (store/audit.py), against PostgreSQL: append, the newest events by
user and time, the batched purge, and the failed login's event written by the statement that
counts it (store/logins.py)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from service.domain.models import AuditEvent, AuditKind
from service.domain.usernames import username_key
from service.store.audit import PgAuditLog
from service.store.db import Database
from service.store.logins import PgLoginStore

AGE_EVENTS = "UPDATE audit_events SET at = now() - make_interval(days => $2) WHERE username = $1"
COUNT_EVENTS = "SELECT count(*) AS n FROM audit_events WHERE username_key = $1"


def event(
    username: str, kind: AuditKind = AuditKind.ACCOUNT_LOCKED, detail: str = ""
) -> AuditEvent:
    return AuditEvent(
        kind=kind,
        username=username,
        username_key=username_key(username),
        source="ip:192.0.2.9",
        request_id=secrets.token_hex(8),
        detail=detail,
    )


def name() -> str:
    return f"Audit-{secrets.token_hex(4)}"


async def count(db, username: str) -> int:
    row = await db.fetchrow(COUNT_EVENTS, username_key(username))
    assert row is not None
    return int(row["n"])


async def test_an_appended_event_reads_back_whole_with_its_time(db: Database) -> None:
    """An appended event reads back with every field and the database's time."""
    store, who = PgAuditLog(db), name()
    written = event(who, AuditKind.PASSWORD_ADDED, "2 held")
    before = datetime.now(UTC) - timedelta(seconds=5)
    await store.append(written)
    [read] = await store.newest(username_key(who), None, 10)
    assert read == written and read.at is not None and read.at > before


async def test_newest_first_filtered_by_user_since_and_limit(db: Database) -> None:
    """Events come newest first, only the user's, only from `since`, at most `limit`."""
    store, who, other = PgAuditLog(db), name(), name()
    for detail in ("first", "second", "third"):
        await store.append(event(who, detail=detail))
    await store.append(event(other))
    await db.execute(AGE_EVENTS, who, 0)  # all three "now": ties break by insertion, newest first
    assert [e.detail for e in await store.newest(username_key(who), None, 10)] == [
        "third",
        "second",
        "first",
    ]
    assert len(await store.newest(username_key(who), None, 2)) == 2
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await store.newest(username_key(who), future, 10) == []
    everyone = await store.newest(None, None, 1000)
    assert {e.username for e in everyone} >= {who, other}


async def test_purge_deletes_only_events_past_retention_in_batches(db: Database) -> None:
    """The purge deletes at most `limit` events per call, only those older than the days."""
    store, old, recent = PgAuditLog(db), name(), name()
    for _ in range(5):
        await store.append(event(old))
    await store.append(event(recent))
    await db.execute(AGE_EVENTS, old, 31)
    await db.execute(AGE_EVENTS, recent, 29)
    assert await store.purge(30, 3) == 3
    assert await store.purge(30, 3) == 2
    assert await store.purge(30, 3) == 0
    assert (await count(db, old), await count(db, recent)) == (0, 1)


async def test_a_counted_failure_appends_its_event_in_the_same_statement(db: Database) -> None:
    """record_failure with an event counts the failure and appends the event; without, none."""
    logins, who = PgLoginStore(db), name()
    key = username_key(who)
    failed = event(who, AuditKind.LOGIN_FAILED, "invalid_credentials: no such user")
    record = await logins.record_failure(key, "", [0.0], 0, 60, "ip:192.0.2.9", [0.0], failed)
    assert record.name.failures == 1
    assert await PgAuditLog(db).newest(key, None, 10) == [failed]
    await logins.record_failure(key, "", [0.0], 0, 60, "ip:192.0.2.9", [0.0])
    assert await count(db, who) == 1
