"""grpc.health.v1 follows the database: SERVING while it answers, NOT_SERVING once it is gone."""

from __future__ import annotations

from dataclasses import replace

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service import app
from tests.conftest import with_database


async def test_health_follows_the_database(pg_dsn, settings) -> None:
    """Health is SERVING, then NOT_SERVING (not an error) after the database is dropped."""
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute('CREATE DATABASE "health_probe"')
    try:
        configured = replace(
            settings, database_url=with_database(pg_dsn, "health_probe"), db_timeout=2.0
        )
        async with app.open_database(configured) as db, app.open_services(db, configured) as svc:
            server, port = app.grpc_server(svc, replace(configured, grpc_addr="127.0.0.1:0"))
            await server.start()
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    health = health_pb2_grpc.HealthStub(channel)
                    request = health_pb2.HealthCheckRequest()
                    serving = health_pb2.HealthCheckResponse.SERVING
                    assert (await health.Check(request)).status == serving
                    await admin.execute('DROP DATABASE "health_probe" WITH (FORCE)')
                    reply = await health.Check(request)
                    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            finally:
                await server.stop(None)
    finally:
        await admin.execute('DROP DATABASE IF EXISTS "health_probe" WITH (FORCE)')
        await admin.close()
