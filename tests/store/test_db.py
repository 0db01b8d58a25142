"""The contract of `store/db.py`, the one place asyncpg's failures become the service's errors:
a duplicate is a store fact (UniqueViolation naming the constraint), an unreachable database or a
spent deadline is UNAVAILABLE, and anything else (a bug) is not disguised as either."""

from __future__ import annotations

import socket
import time

import asyncpg
import pytest

from service import request_context
from service.errors import AuthError, Reason
from service.store.db import Database, UniqueViolation, create_pool

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


async def test_a_spent_deadline_is_unavailable_before_any_query(db: Database) -> None:
    """With the caller's deadline already past, no statement is sent: UNAVAILABLE at once."""
    token = request_context.deadline.set(time.monotonic() - 1)
    try:
        with pytest.raises(AuthError) as caught:
            await db.fetch("SELECT 1")
    finally:
        request_context.deadline.reset(token)
    assert caught.value.reason is Reason.UNAVAILABLE


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
