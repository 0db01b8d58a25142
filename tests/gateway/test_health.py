"""/healthz (the process is up) and /readyz (the gRPC server says SERVING within ~2 s)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from service.gateway.dispatch import ChannelDispatcher
from service.http_server import serving_gateway
from service.rpc.health import HealthServicer
from service.store.db import Database, create_pool
from tests.gateway.helpers import json_of


async def test_healthz_is_ok(http: aiohttp.ClientSession) -> None:
    """GET /healthz is 200 {"status": "ok"}."""
    async with http.get("/healthz") as response:
        assert response.status == 200
        assert await json_of(response) == {"status": "ok"}


async def test_healthz_refuses_other_methods(http: aiohttp.ClientSession) -> None:
    """POST /healthz is 405 with Allow: GET, HEAD."""
    async with http.post("/healthz") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"


async def test_readyz_is_ok_with_a_live_server(http: aiohttp.ClientSession) -> None:
    """GET /readyz is 200 while the gRPC server answers SERVING."""
    async with http.get("/readyz") as response:
        assert response.status == 200
        assert await json_of(response) == {"status": "ok"}


async def test_readyz_is_503_without_a_server_but_healthz_is_200(dead_target: str) -> None:
    """With no gRPC server, /readyz is 503 unavailable while /healthz stays 200."""
    async with (
        serving_gateway(
            ChannelDispatcher(dead_target), "127.0.0.1:0", shutdown_timeout=1.0
        ) as port,
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session,
    ):
        async with session.get("/readyz") as response:
            assert response.status == 503
            body = await json_of(response)
        assert body["status"] == "unavailable" and body["message"]
        async with session.get("/healthz") as response:
            assert response.status == 200


@pytest.fixture
async def server_with_lost_database(dead_target: str) -> AsyncIterator[str]:
    """A gRPC server whose (real) health servicer pings a database at an address nobody
    answers (a pool with no connection yet, as after the database went away)."""
    pool = await create_pool(f"postgresql://authsvc@{dead_target}/authsvc", 0, 1, 2.0)
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(Database(pool, 2.0).ping), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
        await pool.close()


async def test_readyz_is_503_when_the_database_is_gone(server_with_lost_database: str) -> None:
    """When the server's database is gone, /readyz is 503 (the server is not SERVING)."""
    async with (
        serving_gateway(
            ChannelDispatcher(server_with_lost_database), "127.0.0.1:0", shutdown_timeout=1.0
        ) as port,
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        assert response.status == 503
        body = await json_of(response)
    assert body == {"status": "unavailable", "message": "gRPC server is NOT_SERVING"}
