"""Schema migrations: numbered SQL files applied at start-up, in one transaction, under an
advisory lock, so several replicas starting together apply each file exactly once."""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

# An arbitrary constant naming "authsvc schema migrations" among advisory locks.
MIGRATION_LOCK_KEY = 0x61757468737663

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT version FROM schema_migrations"
SERVER_VERSION = "SHOW server_version"
INSERT_APPLIED = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every `NNNN_name.sql`, in order."""
    found = []
    for entry in resources.files("service.store.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet applied; return their names."""
    applied_now = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(CREATE_LEDGER)
        applied = {row["version"] for row in await conn.fetch(SELECT_APPLIED)}
        for version, name, sql in migration_files():
            if version in applied:
                continue
            log.info("applying migration %s", name)
            await conn.execute(sql)
            await conn.execute(INSERT_APPLIED, version, name)
            applied_now.append(name)
    return applied_now


async def server_version(conn: asyncpg.Connection) -> str:
    """The PostgreSQL server's version, for the start-up log line."""
    return str(await conn.fetchval(SERVER_VERSION))
