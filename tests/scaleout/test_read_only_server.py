"""A read-only or vanished PostgreSQL (what a failover looks like from a replica: the old primary
demoted, a standby, a backend ended) is a fault of the moment: the caller gets UNAVAILABLE (503)
with a retry hint, never INTERNAL, and the connection that met it leaves the pool, so the next
call, on a fresh connection, succeeds once the database is writable again. Read-only here is
`default_transaction_read_only` set on the test database, which (like a standby) refuses every
write with SQLSTATE 25006 and applies to sessions opened after it is set."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import aiohttp
import asyncpg
import grpc
import pytest
from authsvc.v1 import password_service_pb2, password_service_pb2_grpc

from service import app
from service.config import Settings
from service.errors import AuthError, Reason
from service.http_server import serving_gateway
from service.store.db import RETRY_AFTER_SECONDS
from tests.conftest import with_database
from tests.support import authorize, basic, error_info, new_user, retry_delay


@dataclass
class Stack:
    admin: asyncpg.Connection
    database: str
    services: app.Services
    settings: Settings
    channel: grpc.aio.Channel


@pytest.fixture
async def stack(pg_dsn: str, settings: Settings) -> AsyncIterator[Stack]:
    """A server on a database of its own, with a pool of at most one connection, opened on
    demand (so a stale connection kept in the pool would fail every later call, and none is
    opened ahead while the database is still read-only)."""
    name = f"test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    configured = replace(
        settings, database_url=with_database(pg_dsn, name), db_pool_min=0, db_pool_max=1
    )
    try:
        async with app.open_database(configured) as db, app.open_services(db, configured) as svc:
            await svc.keys.load()
            server, port = app.grpc_server(svc, replace(configured, grpc_addr="127.0.0.1:0"))
            await server.start()
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    yield Stack(admin, name, svc, configured, channel)
            finally:
                await server.stop(None)
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def end_pool_sessions(stack: Stack) -> None:
    """End the pool's sessions (as a failover does) and wait until they are gone."""
    await stack.admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = $1 AND application_name = 'authsvc'",
        stack.database,
    )
    for _ in range(100):
        left = await stack.admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = $1 AND application_name = 'authsvc'",
            stack.database,
        )
        if left == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the pool's sessions did not end")


async def set_read_only(stack: Stack, read_only: bool) -> None:
    """Make the database refuse writes in sessions opened from now on (or accept them again);
    with `read_only` the pool's current sessions are ended, so its next one is read-only."""
    if read_only:
        await stack.admin.execute(
            f'ALTER DATABASE "{stack.database}" SET default_transaction_read_only = on'
        )
        await end_pool_sessions(stack)
    else:
        await stack.admin.execute(
            f'ALTER DATABASE "{stack.database}" RESET default_transaction_read_only'
        )


async def add_password(stack: Stack, username: str, password: str, new: str) -> None:
    stub = password_service_pb2_grpc.PasswordServiceStub(stack.channel)
    await stub.AddPassword(
        password_service_pb2.AddPasswordRequest(new_password=new),
        metadata=basic(username, password),
    )


async def test_write_on_read_only_server_is_unavailable_with_retry_hint(stack: Stack) -> None:
    """A password change on a read-only server answers UNAVAILABLE with ErrorInfo UNAVAILABLE
    and a RetryInfo, not INTERNAL."""
    user = await new_user(stack.services, "first pw 1")
    await set_read_only(stack, True)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await add_password(stack, user.username, "first pw 1", "second pw 2")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(caught.value).reason == "UNAVAILABLE"
    assert retry_delay(caught.value) == RETRY_AFTER_SECONDS


async def test_read_only_connection_leaves_the_pool(stack: Stack) -> None:
    """After a write met a read-only session, the pool's only connection is replaced: once the
    database accepts writes again the very next change succeeds and is stored."""
    user = await new_user(stack.services, "first pw 1")
    await set_read_only(stack, True)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await add_password(stack, user.username, "first pw 1", "second pw 2")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    await set_read_only(stack, False)
    await add_password(stack, user.username, "first pw 1", "second pw 2")
    assert (await authorize(stack.channel, user.username, "second pw 2")).access_token


async def test_ended_session_mid_transaction_is_unavailable(stack: Stack) -> None:
    """A session ended by the server inside a transaction (administrator command, 57P01, or the
    connection gone, class 08) raises AuthError(UNAVAILABLE) with a retry hint; the next
    transaction commits on a new connection."""
    db = stack.services.db
    with pytest.raises(AuthError) as caught:
        async with db.transaction() as conn:
            pid = await conn.raw.fetchval("SELECT pg_backend_pid()")
            await stack.admin.execute("SELECT pg_terminate_backend($1)", pid)
            await asyncio.sleep(0.1)
            await conn.fetch("SELECT 1")
    assert caught.value.reason is Reason.UNAVAILABLE
    assert caught.value.retry_after == RETRY_AFTER_SECONDS
    async with db.transaction() as conn:
        assert await conn.raw.fetchval("SELECT pg_backend_pid()") != pid


async def test_rest_read_only_is_503_with_retry_after(stack: Stack) -> None:
    """Over REST, a password change on a read-only server is 503 with Retry-After and the JSON
    error `unavailable`; after the database is writable again the same request succeeds."""
    user = await new_user(stack.services, "first pw 1")
    auth = dict(basic(user.username, "first pw 1"))
    auth = {"Authorization": auth["authorization"]}
    async with (
        serving_gateway(
            app.in_process_gateway(app.build_servicers(stack.services, stack.settings)),
            "127.0.0.1:0",
            shutdown_timeout=1.0,
            timeout=5.0,
        ) as port,
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        await set_read_only(stack, True)
        body = {"new_password": "second pw 2"}
        async with http.post("/v1/users/password", json=body, headers=auth) as response:
            status, headers, error = response.status, response.headers, await response.json()
        assert status == 503, error
        assert error["error_code"] == "unavailable"
        assert headers["Retry-After"] == "1"
        await set_read_only(stack, False)
        async with http.post("/v1/users/password", json=body, headers=auth) as response:
            assert response.status == 200, await response.text()
