"""Shared fixtures: one PostgreSQL per test session, a fresh database per test module.

The server is the embedded one the service itself uses (so the tests exercise it too), unless
AUTHSVC_TEST_DATABASE_URL names an existing server to use instead. Argon2 runs with cheap
parameters so the suite stays fast; the production defaults are measured in the benchmark.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest

from service import app
from service.config import Argon2Parameters, Settings
from service.embedded_postgres import EmbeddedPostgres
from service.store.db import Database
from tests.support import serving_target

CHEAP_ARGON2 = Argon2Parameters(time_cost=1, memory_kib=64, parallelism=1)


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A DSN for the session's PostgreSQL server (its maintenance database)."""
    external = os.environ.get("AUTHSVC_TEST_DATABASE_URL")
    if external:
        yield external
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    dsn = server.start()
    try:
        yield dsn
    finally:
        server.stop()


@asynccontextmanager
async def fresh_database(pg_dsn: str) -> AsyncIterator[str]:
    """The URL of a new, empty database on the server of `pg_dsn`, dropped afterwards."""
    name = f"test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(pg_dsn, name)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def database_url(pg_dsn: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test module."""
    async with fresh_database(pg_dsn) as url:
        yield url


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=Path(tmp_path_factory.mktemp("data")),
        grpc_addr="127.0.0.1:0",
        http_addr="127.0.0.1:0",
        argon2=CHEAP_ARGON2,
        hash_workers=2,
        db_timeout=10.0,
        # No delay after a failed login: many tests log in wrongly, then rightly, at once.
        # tests/rpc/test_brute_force.py runs servers with the delay (and lockout) on.
        failed_login_delay_base=0.0,
        # Room for the concurrency tests' long lists; tests/rpc/test_password_count.py checks
        # the default limit.
        max_passwords=16,
        # Each login reserves max_passwords of hashing room: keep bursts of 20 within it.
        hash_queue_limit=1024,
    )


@pytest.fixture(scope="module")
async def db(settings: Settings) -> AsyncIterator[Database]:
    async with app.open_database(settings) as database:
        yield database


@pytest.fixture(scope="module")
async def services(db: Database, settings: Settings) -> AsyncIterator[app.Services]:
    async with app.open_services(db, settings) as built:
        await built.keys.load()
        yield built


@pytest.fixture(scope="module")
async def grpc_target(services: app.Services, settings: Settings) -> AsyncIterator[str]:
    """A real gRPC server on a free loopback port."""
    server, port = app.grpc_server(services, replace(settings, grpc_addr="127.0.0.1:0"))
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@pytest.fixture(scope="module")
async def channel(grpc_target: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(grpc_target) as chan:
        yield chan


@pytest.fixture(scope="module")
async def delayed(db: Database, settings: Settings) -> AsyncIterator[tuple[str, app.Services]]:
    """A server whose first failed login delays the name's next attempt 0.4 s (no allowance), so
    the clients' retry handling meets RetryInfo at once; yields its target and services."""
    async with serving_target(
        db,
        settings,
        failed_login_allowance=0,
        failed_login_delay_base=0.4,
        failed_login_delay_max=0.4,
    ) as served:
        yield served
