"""The login store contract (store/logins.py and store/login_throttle.py), against PostgreSQL:
the one read, the failure and success records, the admin reset and the purge loop."""

from __future__ import annotations

import asyncio
import secrets

from service import app
from service.domain.models import SuccessRecord
from service.domain.throttle import LoginThrottle, ThrottlePolicy
from service.store.db import Database
from service.store.login_throttle import PgLoginThrottleStore
from service.store.logins import PgLoginStore
from service.store.users import PgUserStore

SOURCE, OTHER = "ip:192.0.2.1", "ip:192.0.2.2"
# Long enough never to pass during a test; none at all.
LONG, NONE = [3600.0], [0.0]
OPEN_GATE = "UPDATE login_throttle SET next_attempt_at = now() WHERE username_key = $1"


def name() -> str:
    return f"login-{secrets.token_hex(4)}"


async def user(db, hashes: tuple[str, ...] = ("h1",)):
    key = name()
    created = await PgUserStore(db).create(key, key, b"0123456789abcdef", hashes[0])
    assert created is not None
    for extra in hashes[1:]:
        await db.execute("INSERT INTO passwords (user_id, hash) VALUES ($1, $2)", created.id, extra)
    return key, created


async def fail(store: PgLoginStore, key: str, counter: str = "", delays=NONE, source=SOURCE):
    return await store.record_failure(key, counter, delays, 0, 60, source, NONE)


async def test_unknown_name_reads_as_no_user_with_its_counts(db: Database) -> None:
    """An unknown name reads as one row: no user, no passwords, and its failure counts."""
    store, key = PgLoginStore(db), name()
    await fail(store, key)
    view = await store.find_login(key, SOURCE)
    assert view.user is None and view.passwords == () and view.password_salt is None
    assert view.strangers.failures == 1 and view.source.failures == 1
    assert not view.source_known and view.now is not None


async def test_known_user_reads_salt_and_every_password(db: Database) -> None:
    """A user reads with its salt and all of its passwords, oldest first."""
    store = PgLoginStore(db)
    key, created = await user(db, ("h1", "h2", "h3"))
    view = await store.find_login(key, SOURCE)
    assert view.user == created and view.password_salt == b"0123456789abcdef"
    assert [p.hash for p in view.passwords] == ["h1", "h2", "h3"]
    assert all(p.last_used_at is None and p.created_at is not None for p in view.passwords)


async def test_failure_counts_the_name_and_the_source_with_the_schedule(db: Database) -> None:
    """Each failure counts on the name's count and the source's, and sets the next attempt
    delays[n-1] ahead (the last entry beyond the list)."""
    store, key = PgLoginStore(db), name()
    waits = []
    for _ in range(4):
        record = await store.record_failure(key, "", [0.0, 0.0, 5.0], 0, 60, SOURCE, NONE)
        waits.append(round(record.name.wait))
        await db.execute(OPEN_GATE, key)
    assert waits == [0, 0, 5, 5]
    assert record.name.failures == 4 and record.source.failures >= 4


async def test_a_known_sources_count_is_its_own(db: Database) -> None:
    """Failures on a source's own count of a name leave the strangers' count alone."""
    store, key = PgLoginStore(db), name()
    await fail(store, key, counter=SOURCE, delays=LONG)
    view = await store.find_login(key, SOURCE)
    assert view.this_source.failures == 1 and view.this_source.wait > 3500
    assert view.strangers.failures == 0 and view.strangers.wait == 0


async def test_every_threshold_th_failure_locks_and_a_lock_stops_counting(db: Database) -> None:
    """Every lock_every-th counted failure locks the count; failures during the lock are not
    counted but still set the delay."""
    store, key = PgLoginStore(db), name()
    for _ in range(2):
        record = await store.record_failure(key, "", NONE, 2, 60, SOURCE, NONE)
    assert record.name.failures == 2 and 59 < record.name.locked_for <= 60
    during = await store.record_failure(key, "", [0.0, 0.0, 7.0], 2, 60, SOURCE, NONE)
    assert during.name.failures == 2 and during.name.locked_for > 0


async def test_success_changes_only_what_it_names(db: Database) -> None:
    """A success record resets the named counts, remembers the source and marks the password
    used (with its new hash); an empty one changes nothing."""
    store = PgLoginStore(db)
    key, created = await user(db)
    await fail(store, key)
    password_id = (await store.find_login(key, SOURCE)).passwords[0].id
    await store.record_success(key, SuccessRecord(user_id=created.id, source=SOURCE))
    unchanged = await store.find_login(key, SOURCE)
    assert unchanged.strangers.failures == 1 and not unchanged.source_known
    await store.record_success(
        key,
        SuccessRecord(
            user_id=created.id,
            source=SOURCE,
            reset_counter="",
            reset_source=True,
            remember_source=True,
            touch_password=password_id,
            rehashed="h1-new",
        ),
    )
    view = await store.find_login(key, SOURCE)
    assert view.strangers.failures == 0 and view.source.failures == 0 and view.source_known
    assert view.passwords[0].hash == "h1-new" and view.passwords[0].last_used_at is not None
    assert not (await store.find_login(key, OTHER)).source_known


async def test_parallel_failures_all_count(db: Database) -> None:
    """Failures recorded at once by many callers (replicas) are each counted once."""
    store, key = PgLoginStore(db), name()
    await asyncio.gather(*(fail(store, key) for _ in range(20)))
    assert (await store.find_login(key, SOURCE)).strangers.failures == 20


async def test_reset_forgets_every_count_of_the_name(db: Database) -> None:
    """An administrator's reset deletes the name's counts for strangers and known sources."""
    store, key = PgLoginStore(db), name()
    await fail(store, key)
    await fail(store, key, counter=SOURCE)
    await PgLoginThrottleStore(db).reset(key)
    view = await store.find_login(key, SOURCE)
    assert view.strangers.failures == 0 and view.this_source.failures == 0


async def test_purge_deletes_only_long_passed_rows_in_batches(db: Database) -> None:
    """Counts over a day old and sources unseen for 90 days go, a bounded batch at a time;
    current ones stay."""
    store, throttle_store = PgLoginStore(db), PgLoginThrottleStore(db)
    old, fresh = [name() for _ in range(3)], name()
    for key in (*old, fresh):
        await fail(store, key, source=f"ip:198.51.100.{len(key) % 200}")
    await db.execute(
        "UPDATE login_throttle SET updated_at = now() - interval '2 days',"
        " next_attempt_at = now() - interval '2 days' WHERE username_key = ANY($1)",
        old,
    )
    assert await throttle_store.purge_name_counts(86400, 2) == 2
    key, created = await user(db)
    await store.record_success(
        key, SuccessRecord(user_id=created.id, source=SOURCE, remember_source=True)
    )
    await db.execute(
        "UPDATE known_sources SET last_login_at = now() - interval '91 days' WHERE user_id = $1",
        created.id,
    )
    assert await LoginThrottle(ThrottlePolicy(), throttle_store).purge_stale() >= 2
    assert all([(await store.find_login(k, SOURCE)).strangers.failures == 0 for k in old])
    assert (await store.find_login(fresh, "ip:x")).strangers.failures == 1
    assert not (await store.find_login(key, SOURCE)).source_known


async def test_serve_purge_loop_runs_at_start_and_stops(db: Database) -> None:
    """The loop `serve` runs purges at once, then ends when asked to stop."""
    store, key = PgLoginStore(db), name()
    await fail(store, key)
    await db.execute(
        "UPDATE login_throttle SET updated_at = now() - interval '2 days',"
        " next_attempt_at = now() - interval '2 days' WHERE username_key = $1",
        key,
    )
    stop = asyncio.Event()
    throttle = LoginThrottle(ThrottlePolicy(), PgLoginThrottleStore(db))
    task = asyncio.create_task(
        app.every(60, stop, "purge", lambda: app.purge_login_throttle(throttle))
    )
    for _ in range(200):
        if (await store.find_login(key, SOURCE)).strangers.failures == 0:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert (await store.find_login(key, SOURCE)).strangers.failures == 0


async def test_a_failing_chore_keeps_its_loop_alive() -> None:
    """A chore that raises an unexpected error is logged and tried again, not silently ended."""
    calls = 0
    stop = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        stop.set()

    await asyncio.wait_for(app.every(0.01, stop, "flaky chore", flaky), 5)
    assert calls == 2
