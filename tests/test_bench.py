"""The benchmark's database accounting (bench/pgstats.py) counts what a pool really ran."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from bench.pgstats import bench_postgres, classify


def test_classify_tells_writes_from_row_locks() -> None:
    """INSERT/UPDATE/DELETE (also in a CTE or with ON CONFLICT) are writes; FOR UPDATE is not."""
    assert classify("INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = $2") == "write"
    assert classify("WITH d AS (DELETE FROM t WHERE a = $1 RETURNING a) SELECT a FROM d") == (
        "write"
    )
    assert classify("SELECT a FROM t WHERE a = $1 FOR NO KEY UPDATE") == "read"
    assert classify("SELECT pg_advisory_unlock_all()") == "reset"
    assert classify("COMMIT") == "transaction"


async def test_window_counts_statements_transactions_and_writes(tmp_path: Path) -> None:
    """Three reads, one written transaction and one DELETE of nothing: each counted once."""
    async with bench_postgres(tmp_path) as pg:
        dsn = await pg.create_database("counted")
        async with asyncpg.create_pool(dsn, min_size=1, max_size=1) as pool:
            await pool.execute("CREATE TABLE t (a int PRIMARY KEY)")
            await pg.log_statements(True)
            before = await pg.snapshot("counted")
            for _ in range(3):
                await pool.fetchval("SELECT count(*) FROM t WHERE a > $1", 0)
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO t VALUES ($1)", 1)
                await conn.execute("UPDATE t SET a = $1 WHERE a = $2", 2, 1)
            await pool.execute("DELETE FROM t WHERE a = $1", 99)  # no row: no xid, no commit
            await asyncio.sleep(0.2)
            after = await pg.snapshot("counted")
        window = await pg.window("w", "counted", before, after, attempts=1)
    totals = window.totals()
    assert (totals["reads"], totals["writes"], totals["write_rows"]) == (3, 3, 2)
    assert totals["transaction_control"] == 2  # BEGIN, COMMIT
    assert totals["pool_releases"] == 5 and totals["reset_statements"] == 20
    # 3 reads + the block + the DELETE + one reset per release (the reset is one transaction).
    assert totals["transactions"] == 10
    assert totals["write_transactions"] == 1
    assert totals["statements_with_wal"] == 2
