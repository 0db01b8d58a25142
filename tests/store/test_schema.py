"""Migrations: applied once, in order, even by replicas starting together."""

from __future__ import annotations

import asyncio

import asyncpg

from service.store.schema import migrate, migration_files


async def test_migrations_are_numbered_and_ordered() -> None:
    """Every migration file has a unique number and they apply in numeric order."""
    versions = [version for version, _, _ in migration_files()]
    assert versions == sorted(set(versions)) and versions[0] == 1


async def test_concurrent_migrations_apply_each_file_once(pg_dsn: str) -> None:
    """Five replicas migrating one fresh database at once apply each migration exactly once."""
    from tests.conftest import with_database

    admin = await asyncpg.connect(pg_dsn)
    await admin.execute('CREATE DATABASE "migrate_race"')
    try:
        dsn = with_database(pg_dsn, "migrate_race")
        conns = [await asyncpg.connect(dsn) for _ in range(5)]
        try:
            applied = await asyncio.gather(*(migrate(c) for c in conns))
            assert sorted(len(names) for names in applied) == [0, 0, 0, 0, len(migration_files())]
            assert await migrate(conns[0]) == []
            count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
            assert count == len(migration_files())
        finally:
            for conn in conns:
                await conn.close()
    finally:
        await admin.execute('DROP DATABASE "migrate_race" WITH (FORCE)')
        await admin.close()
