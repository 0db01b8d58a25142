"""The login_throttle store contract, against PostgreSQL (and the purge loop `serve` runs)."""

from __future__ import annotations

import asyncio
import secrets

from service import app
from service.domain.throttle import LoginThrottle, ThrottlePolicy
from service.store.login_throttle import PgLoginThrottleStore

SELECT_ROW = """
SELECT failures, locked_until IS NOT NULL AS locked,
       extract(epoch FROM next_attempt_at - updated_at)::float8 AS delay
FROM login_throttle WHERE username_key = $1
"""
OPEN_GATE = "UPDATE login_throttle SET next_attempt_at = now() WHERE username_key = $1"
# Long enough never to pass during a test; short enough to pass at once.
LONG, NONE = [3600.0], [0.0]


def key() -> str:
    return f"throttle-{secrets.token_hex(4)}"


async def row(db, name: str):
    return await db.fetchrow(SELECT_ROW, name)


async def test_first_attempt_is_admitted_and_counted(db) -> None:
    """A name's first attempt is admitted and already counted as one failure."""
    store, name = PgLoginThrottleStore(db), key()
    attempt = await store.reserve(name, [5.0, 10.0], 0, 60)
    assert (attempt.admitted, attempt.failures, attempt.locked_for) == (True, 1, None)
    assert 4.9 < attempt.retry_after <= 5.0
    assert (await row(db, name))["failures"] == 1


async def test_early_attempt_is_refused_and_not_counted(db) -> None:
    """An attempt before the delay has passed is refused with the wait, counting nothing."""
    store, name = PgLoginThrottleStore(db), key()
    await store.reserve(name, LONG, 0, 60)
    refused = await store.reserve(name, LONG, 0, 60)
    assert not refused.admitted and 3500 < refused.retry_after <= 3600
    assert refused.failures == 1 and (await row(db, name))["failures"] == 1


async def test_delay_follows_the_schedule(db) -> None:
    """The n-th failure sets the next attempt delays[n-1] ahead, the last entry beyond the list."""
    store, name = PgLoginThrottleStore(db), key()
    delays = []
    for _ in range(4):
        await store.reserve(name, [0.0, 0.0, 5.0], 0, 60)
        delays.append((await row(db, name))["delay"])
        await db.execute(OPEN_GATE, name)
    assert delays == [0.0, 0.0, 5.0, 5.0]
    assert (await row(db, name))["failures"] == 4


async def test_every_threshold_th_failure_locks(db) -> None:
    """With lock_every=2 the second counted failure locks the name for lock_seconds."""
    store, name = PgLoginThrottleStore(db), key()
    first = await store.reserve(name, NONE, 2, 60)
    assert first.locked_for is None and not (await row(db, name))["locked"]
    second = await store.reserve(name, NONE, 2, 60)
    # The attempt that locks is itself not "during a lock": a right password may still clear it.
    assert second.admitted and second.locked_for is None
    assert (await row(db, name))["locked"]


async def test_attempts_during_a_lock_are_admitted_but_not_counted(db) -> None:
    """During a lock an attempt is admitted (once the delay allows), told the lock's time left,
    and not counted."""
    store, name = PgLoginThrottleStore(db), key()
    await store.reserve(name, NONE, 1, 60)
    during = await store.reserve(name, NONE, 1, 60)
    assert during.admitted and during.locked_for is not None and 59 < during.locked_for <= 60
    assert during.failures == 1 and (await row(db, name))["failures"] == 1


async def test_attempts_during_a_lock_are_still_delayed(db) -> None:
    """A lock does not lift the delay: an early attempt during a lock is refused."""
    store, name = PgLoginThrottleStore(db), key()
    await store.reserve(name, LONG, 1, 60)
    assert not (await store.reserve(name, LONG, 1, 60)).admitted


async def test_reset_forgets_the_name(db) -> None:
    """After a reset the next attempt is the first again."""
    store, name = PgLoginThrottleStore(db), key()
    await store.reserve(name, LONG, 0, 60)
    await store.reset(name)
    assert await row(db, name) is None
    assert (await store.reserve(name, LONG, 0, 60)).failures == 1


async def test_parallel_reservations_admit_one(db) -> None:
    """Twenty concurrent reservations on a new name admit exactly one and count exactly one."""
    store, name = PgLoginThrottleStore(db), key()
    attempts = await asyncio.gather(*(store.reserve(name, LONG, 0, 60) for _ in range(20)))
    assert sum(a.admitted for a in attempts) == 1
    assert (await row(db, name))["failures"] == 1


async def test_purge_deletes_only_long_passed_rows(db) -> None:
    """Purge deletes names whose delay and lock ended long ago, and nothing recent or locked."""
    store = PgLoginThrottleStore(db)
    stale, recent, locked = key(), key(), key()
    for name in (stale, recent, locked):
        await store.reserve(name, NONE, 0, 60)
    await db.execute(
        "UPDATE login_throttle SET updated_at = now() - interval '2 days',"
        " next_attempt_at = now() - interval '2 days' WHERE username_key = ANY($1)",
        [stale, locked],
    )
    await db.execute(
        "UPDATE login_throttle SET locked_until = now() + interval '1 hour'"
        " WHERE username_key = $1",
        locked,
    )
    assert await store.purge(86400, 1000) >= 1
    assert await row(db, stale) is None
    assert await row(db, recent) is not None and await row(db, locked) is not None


async def test_purge_is_bounded_per_statement(db) -> None:
    """One purge statement deletes at most `limit` rows; the throttle repeats until done."""
    store = PgLoginThrottleStore(db)
    names = [key() for _ in range(5)]
    for name in names:
        await store.reserve(name, NONE, 0, 60)
    await db.execute(
        "UPDATE login_throttle SET updated_at = now() - interval '2 days',"
        " next_attempt_at = now() - interval '2 days' WHERE username_key = ANY($1)",
        names,
    )
    assert await store.purge(86400, 2) == 2
    assert await LoginThrottle(store, ThrottlePolicy()).purge_stale() >= 3
    assert all([await row(db, name) is None for name in names])


async def test_serve_purge_loop_runs_at_start_and_stops(db) -> None:
    """The loop `serve` runs purges at once, then ends when asked to stop."""
    store, name = PgLoginThrottleStore(db), key()
    await store.reserve(name, NONE, 0, 60)
    await db.execute(
        "UPDATE login_throttle SET updated_at = now() - interval '2 days',"
        " next_attempt_at = now() - interval '2 days' WHERE username_key = $1",
        name,
    )
    stop = asyncio.Event()
    throttle = LoginThrottle(store, ThrottlePolicy())
    task = asyncio.create_task(
        app.every(60, stop, "purge", lambda: app.purge_login_throttle(throttle))
    )
    for _ in range(200):
        if await row(db, name) is None:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert await row(db, name) is None


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
