"""A caller's tiny deadline costs the database nothing but the statement it asked for: calls with
1 to 3 ms deadlines (gRPC, or REST's Grpc-Timeout) close no pooled connection (no PostgreSQL
session is opened to replace one), log no database warning and are never told the database is
unavailable; a normal call right after answers at once."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import aiohttp
import grpc
import pytest
from authsvc.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)

from service import app
from service.config import Settings
from service.http_server import serving_gateway
from service.store.db import Database
from tests.support import authorize, basic, new_user, sessions_and_backends

CALLS = 60


async def settled(db: Database) -> None:
    """Wait for statements whose callers gave up to give their connections back, and for the
    backends to report their sessions (at most once a second)."""
    for _ in range(100):
        if db.pool.get_idle_size() == db.pool.get_size():
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.1)


def tiny() -> float:
    return random.uniform(0.001, 0.003)


async def test_tiny_deadlines_close_no_connection(
    channel: grpc.aio.Channel,
    services: app.Services,
    settings: Settings,
    db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    user = await new_user(services, "pw")
    token = (await authorize(channel, user.username, "pw")).access_token
    auth = auth_service_pb2_grpc.AuthServiceStub(channel)
    tokens = token_service_pb2_grpc.TokenServiceStub(channel)
    async with (
        serving_gateway(
            app.in_process_gateway(app.build_servicers(services, settings)),
            "127.0.0.1:0",
            shutdown_timeout=1.0,
        ) as port,
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        await settled(db)
        sessions, backends = await sessions_and_backends(db, "authsvc")
        codes: list[str] = []
        for _ in range(CALLS):
            for call in (
                auth.Authorize(
                    auth_service_pb2.AuthorizeRequest(),
                    metadata=basic("nobody", "pw"),
                    timeout=tiny(),
                ),
                tokens.VerifyToken(
                    token_service_pb2.VerifyTokenRequest(token=token), timeout=tiny()
                ),
            ):
                try:
                    await call
                    codes.append("OK")
                except grpc.aio.AioRpcError as error:
                    assert "database" not in (error.details() or ""), error
                    codes.append(error.code().name)
            headers = {"Grpc-Timeout": "1m"}
            async with http.post("/v1/tokens:verify", json={"token": token}, headers=headers) as r:
                assert r.status in (200, 504), await r.text()
                codes.append(str(r.status))
        assert "DEADLINE_EXCEEDED" in codes, "no deadline bit: the test proves nothing"
        assert set(codes) <= {
            "OK",
            "UNAUTHENTICATED",
            "DEADLINE_EXCEEDED",
            "UNAVAILABLE",
            "200",
            "504",
        }

        # The legitimate side: a normal call right after answers at once.
        started = time.monotonic()
        assert (await tokens.VerifyToken(token_service_pb2.VerifyTokenRequest(token=token))).active
        assert time.monotonic() - started < 1.0

    await settled(db)
    sessions_after, backends_after = await sessions_and_backends(db, "authsvc")
    # No connection was closed; a session opened since is one the pool grew by and still has.
    assert backends <= backends_after
    assert sessions_after - sessions == len(backends_after - backends)
    noisy = [r.getMessage() for r in caplog.records if r.name.startswith("service.store")]
    assert not [m for m in noisy if "unavailable" in m or "closed" in m], noisy
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and "database" in r.getMessage()
    ]
