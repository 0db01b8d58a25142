"""grpc.health.v1 as its spec says: "" and the authsvc services are known and follow the
database (SERVING while it answers, NOT_SERVING once it is gone); another name is NOT_FOUND;
Watch streams the status and its changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service import app
from service.config import Settings
from service.rpc.health import SERVICE_NAMES, HealthServicer
from tests.conftest import with_database

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
PROBE_SECONDS = 0.2


def health(channel: grpc.aio.Channel) -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(channel)


def request(service: str = "") -> health_pb2.HealthCheckRequest:
    return health_pb2.HealthCheckRequest(service=service)


@asynccontextmanager
async def server_on_own_database(
    pg_dsn, settings, name: str
) -> AsyncIterator[tuple[grpc.aio.Channel, HealthServicer, asyncpg.Connection]]:
    """A server on a database of its own (which the test may drop), probing every 0.2 s while
    watched; yields a channel, its health servicer, and an admin connection."""
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        configured = replace(
            settings,
            database_url=with_database(pg_dsn, name),
            db_timeout=2.0,
            grpc_addr="127.0.0.1:0",
        )
        async with app.open_database(configured) as db, app.open_services(db, configured) as svc:
            servicer = HealthServicer(db.ping, probe_seconds=PROBE_SECONDS)
            servicers = replace(app.build_servicers(svc, configured), health=servicer)
            server, port = app.grpc_server(svc, configured, servicers)
            await server.start()
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    yield channel, servicer, admin
            finally:
                await server.stop(None)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_known_names_are_serving(channel: grpc.aio.Channel) -> None:
    """Check of "" and of each authsvc service's full name is SERVING."""
    assert "authsvc.v1.TokenService" in SERVICE_NAMES
    for name in SERVICE_NAMES:
        assert (await health(channel).Check(request(name))).status == SERVING, name


async def test_unknown_service_is_not_found(channel: grpc.aio.Channel) -> None:
    """Check of a name the server does not serve is NOT_FOUND (not SERVING)."""
    for name in ("no.such.Service", "authsvc.v1", "AuthService"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health(channel).Check(request(name))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, name


async def test_health_follows_the_database(pg_dsn, settings: Settings) -> None:
    """Check is SERVING, then NOT_SERVING (not an error) after the database is dropped."""
    async with server_on_own_database(pg_dsn, settings, "health_probe") as (channel, _, admin):
        assert (await health(channel).Check(request())).status == SERVING
        await admin.execute('DROP DATABASE "health_probe" WITH (FORCE)')
        assert (await health(channel).Check(request())).status == NOT_SERVING


async def test_watch_streams_the_change_when_the_database_goes(
    pg_dsn, settings: Settings, caplog
) -> None:
    """Watch sends SERVING at once, then NOT_SERVING soon after the database goes away, with
    no traceback logged."""
    caplog.set_level(logging.INFO)
    async with server_on_own_database(pg_dsn, settings, "health_watch") as (channel, _, admin):
        stream = health(channel).Watch(request("authsvc.v1.AuthService"), timeout=30)
        first = await asyncio.wait_for(stream.read(), 5)
        assert first.status == SERVING
        await admin.execute('DROP DATABASE "health_watch" WITH (FORCE)')
        second = await asyncio.wait_for(stream.read(), 5)
        assert second.status == NOT_SERVING
        stream.cancel()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_a_tiny_deadline_does_not_mark_the_replica_not_serving(
    pg_dsn, settings: Settings, caplog
) -> None:
    """A Check whose own deadline (1 ms) is too short to ask the database answers, or times out,
    but does not turn the replica NOT_SERVING for its watchers (a load balancer): anyone may
    send one. The database is still checked by the next Check with time to spare."""
    caplog.set_level(logging.INFO)
    async with server_on_own_database(pg_dsn, settings, "health_tiny") as (channel, _, _admin):
        stream = health(channel).Watch(request("authsvc.v1.AuthService"), timeout=30)
        assert (await asyncio.wait_for(stream.read(), 5)).status == SERVING
        for _ in range(20):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await health(channel).Check(request(), timeout=0.001)
        assert (await health(channel).Check(request())).status == SERVING
        with pytest.raises(asyncio.TimeoutError):  # nothing new was streamed to the watcher
            await asyncio.wait_for(stream.read(), 0.5)
        stream.cancel()
    assert not [r for r in caplog.records if "NOT_SERVING" in r.getMessage()]


async def test_watch_of_an_unknown_service_says_so(channel: grpc.aio.Channel) -> None:
    """Watch of a name the server does not serve answers SERVICE_UNKNOWN and stays open."""
    stream = health(channel).Watch(request("no.such.Service"), timeout=30)
    assert (await asyncio.wait_for(stream.read(), 5)).status == SERVICE_UNKNOWN
    stream.cancel()


async def test_shutdown_ends_watches_with_not_serving(pg_dsn, settings: Settings) -> None:
    """On shutdown a watcher is told NOT_SERVING and its stream ends (so it does not hold the
    server's drain), and Check answers NOT_SERVING."""
    async with server_on_own_database(pg_dsn, settings, "health_stop") as (channel, servicer, _):
        stream = health(channel).Watch(request(), timeout=30)
        assert (await asyncio.wait_for(stream.read(), 5)).status == SERVING
        await servicer.shutdown()
        assert (await asyncio.wait_for(stream.read(), 5)).status == NOT_SERVING
        assert await asyncio.wait_for(stream.read(), 5) == grpc.aio.EOF
        assert await stream.code() == grpc.StatusCode.OK
        assert (await health(channel).Check(request())).status == NOT_SERVING
