"""The contract of `store/db.py`, the one place asyncpg's failures become the service's errors:
a duplicate is a store fact (UniqueViolation naming the constraint), an unreachable database is
UNAVAILABLE, the caller's spent deadline DEADLINE_EXCEEDED (closing no connection), and anything
else (a bug) is not disguised as any of these."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import asyncpg
import pytest

from service import request_context
from service.errors import AuthError, Reason
from service.store.db import MAX_ORPHANS, Database, UniqueViolation, create_pool
from tests.support import sessions_and_backends

TABLE = "db_contract_items"


@pytest.fixture(scope="module")
async def table(db: Database) -> str:
    await db.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (name text CONSTRAINT {TABLE}_name UNIQUE)"
    )
    return TABLE


async def test_a_duplicate_is_a_unique_violation_naming_its_constraint(
    db: Database, table: str
) -> None:
    """A row that would duplicate a unique key raises UniqueViolation with the constraint's name."""
    await db.execute(f"INSERT INTO {table} VALUES ('one')")
    with pytest.raises(UniqueViolation) as caught:
        await db.execute(f"INSERT INTO {table} VALUES ('one')")
    assert caught.value.constraint == f"{table}_name"


async def test_a_duplicate_inside_a_transaction_rolls_it_back(db: Database, table: str) -> None:
    """The same mapping holds on a transaction's connection, and the transaction's earlier rows
    are rolled back."""
    await db.execute(f"INSERT INTO {table} VALUES ('two')")
    with pytest.raises(UniqueViolation):
        async with db.transaction() as conn:
            await conn.execute(f"INSERT INTO {table} VALUES ('three')")
            await conn.execute(f"INSERT INTO {table} VALUES ('two')")
    assert await db.fetchrow(f"SELECT 1 FROM {table} WHERE name = 'three'") is None


async def test_a_bug_is_not_disguised(db: Database) -> None:
    """A statement PostgreSQL refuses as wrong propagates as asyncpg's error, not UNAVAILABLE."""
    with pytest.raises(asyncpg.UndefinedTableError):
        await db.fetch("SELECT * FROM no_such_table")


async def test_an_unreachable_database_is_unavailable() -> None:
    """A pool that cannot connect raises AuthError(UNAVAILABLE)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(AuthError) as caught:
        await create_pool(f"postgresql://nobody@127.0.0.1:{port}/none", 1, 1, 2.0)
    assert caught.value.reason is Reason.UNAVAILABLE


@contextmanager
def deadline_in(seconds: float) -> Iterator[None]:
    """The caller's deadline `seconds` from now, set as the transport sets it."""
    token = request_context.deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        request_context.deadline.reset(token)


class UntouchablePool:
    """Stands in for the pool where it must not be used at all."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the pool was touched ({name})")


@pytest.mark.parametrize("left", [-1.0, 0.0005])
async def test_a_spent_deadline_is_deadline_exceeded_before_the_pool(left: float) -> None:
    """With the caller's deadline past or nearly so, nothing is started, not even a pool
    acquisition: DEADLINE_EXCEEDED at once (the caller's doing, not the database's)."""
    db = Database(UntouchablePool(), 5.0)  # type: ignore[arg-type]
    for transaction in (False, True):
        with deadline_in(left), pytest.raises(AuthError) as caught:
            if transaction:
                async with db.transaction():
                    pass
            else:
                await db.fetch("SELECT 1")
        assert caught.value.reason is Reason.DEADLINE_EXCEEDED
        assert caught.value.grpc_code == "DEADLINE_EXCEEDED" and caught.value.retry_after is None


@pytest.fixture
async def fixed_pool(database_url: str) -> AsyncIterator[Database]:
    """A Database on a pool of exactly two connections: one closed would show as a new one."""
    pool = await create_pool(database_url, 2, 2, 5.0)
    try:
        yield Database(pool, 5.0)
    finally:
        await pool.close()


async def test_tiny_deadlines_leave_the_connections_alone(
    db: Database, fixed_pool: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Many calls whose deadline (1 to 5 ms) passes while they wait for the pool or mid-statement
    all answer DEADLINE_EXCEEDED, log no database warning, and close no connection: the same
    backends serve the database afterwards, no session was opened, and a normal call right
    after answers at once."""
    caplog.set_level(logging.INFO, logger="service.store.db")
    await fixed_pool.fetch("SELECT 1")
    before = await sessions_and_backends(db)
    for i in range(60):
        with deadline_in(0.001 + (i % 5) / 1000), pytest.raises(AuthError) as caught:
            # Longer than any of the deadlines: the caller gives up mid-statement, or waiting
            # for a connection the ones before still use.
            await fixed_pool.fetchrow("SELECT pg_sleep(0.02)")
        assert caught.value.reason is Reason.DEADLINE_EXCEEDED
    started = time.monotonic()
    with deadline_in(5.0):
        assert (await fixed_pool.fetchrow("SELECT 1 AS one")) == (1,)
    assert time.monotonic() - started < 1.0
    for _ in range(100):  # the abandoned statements finish, their connections come back
        if fixed_pool.pool.get_idle_size() == 2:
            break
        await asyncio.sleep(0.05)
    assert fixed_pool.pool.get_idle_size() == 2
    await asyncio.sleep(1.1)  # a backend reports its session at most once a second
    assert await sessions_and_backends(db) == before
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []


async def test_a_live_database_answers(db: Database) -> None:
    """The legitimate side: with time left, a statement runs and ping succeeds."""
    await db.ping()
    assert [dict(row) for row in await db.fetch("SELECT 1 AS one")] == [{"one": 1}]


async def test_a_connection_whose_backend_was_ended_is_unavailable_then_replaced(
    database_url: str,
) -> None:
    """A pooled connection whose backend an administrator ended while it sat idle (a failover,
    a restart) costs at most one UNAVAILABLE (503, retry), never INTERNAL; the next call runs on
    a fresh connection."""
    pool = await create_pool(database_url, 1, 1, 5.0)
    db = Database(pool, 5.0)
    admin = await asyncpg.connect(database_url)
    try:
        pid = await db.fetchrow("SELECT pg_backend_pid() AS pid")
        await admin.execute("SELECT pg_terminate_backend($1)", pid["pid"])
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append((await db.fetchrow("SELECT 1 AS one"))["one"])
            except AuthError as error:
                assert error.reason is Reason.UNAVAILABLE
                outcomes.append("unavailable")
        assert outcomes[-1] == 1 and outcomes.count("unavailable") <= 1
        fresh = await db.fetchrow("SELECT pg_backend_pid() AS pid")
        assert fresh["pid"] != pid["pid"]
    finally:
        await admin.close()
        await pool.close()


async def test_work_left_by_callers_who_gave_up_is_bounded(fixed_pool: Database) -> None:
    """With both connections busy, 200 callers giving up after 2 ms leave at most MAX_ORPHANS
    statements waiting on (the rest stop waiting); once the pool is free they drain, and a
    normal call answers."""
    busy = [asyncio.create_task(fixed_pool.fetch("SELECT pg_sleep(2)")) for _ in range(2)]
    await asyncio.sleep(0.1)
    for _ in range(200):
        with deadline_in(0.002), pytest.raises(AuthError):
            await fixed_pool.fetchrow("SELECT 1")
    await asyncio.sleep(0)  # the cancelled waits end
    waiting = [t for t in fixed_pool._orphans if not t.done()]
    assert len(waiting) <= MAX_ORPHANS
    await asyncio.gather(*busy)
    for _ in range(100):
        if not fixed_pool._orphans:
            break
        await asyncio.sleep(0.05)
    assert not fixed_pool._orphans
    with deadline_in(5.0):
        assert (await fixed_pool.fetchrow("SELECT 1 AS one")) == (1,)
