"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import grpc
from authsvc.v1 import auth_service_pb2, auth_service_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from service import app
from service.config import Settings
from service.domain.models import User
from service.store.db import Database


def basic(username: str, password: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying Basic credentials."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return (("authorization", f"Basic {token}"),)


async def new_user(
    services: app.Services, password: str = "correct horse", prefix: str = "user"
) -> User:
    """A user with a unique name, so tests within a module never share accounts."""
    return await services.users.create(f"{prefix}-{secrets.token_hex(4)}", password)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The single ErrorInfo a failed call must carry."""
    status = rpc_status.from_call(error)  # also checks that code and message match the call's
    assert status is not None, "status details missing"
    infos = []
    for any_detail in status.details:
        if any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_detail.Unpack(info)
            infos.append(info)
    assert len(infos) == 1
    assert status.code == error.code().value[0]
    return infos[0]


def retry_delay(error: object) -> float | None:
    """The RetryInfo delay a failed call carries, in seconds, or None."""
    assert isinstance(error, grpc.aio.AioRpcError), error
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


async def sessions_and_backends(
    db: Database, application_name: str | None = None
) -> tuple[int, set[int]]:
    """pg_stat_database.sessions of the test database, and the pids of its backends (of one
    application, when named)."""
    row = await db.fetchrow(
        "SELECT (SELECT sessions FROM pg_stat_database WHERE datname = current_database()),"
        " array(SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND ($1::text IS NULL OR application_name = $1))",
        application_name,
    )
    assert row is not None
    return row[0], set(row[1])


async def authorize(
    channel: grpc.aio.Channel, username: str, password: str, /, **fields: object
) -> auth_service_pb2.AuthorizeResponse:
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    return await stub.Authorize(
        auth_service_pb2.AuthorizeRequest(**fields), metadata=basic(username, password)
    )


@asynccontextmanager
async def serving_services(
    db: Database, settings: Settings, **overrides: object
) -> AsyncIterator[tuple[Settings, app.Services]]:
    """Services on the module's database, configured with `overrides` (for an in-process
    gateway); yields the settings and the services."""
    configured = replace(settings, grpc_addr="127.0.0.1:0", **overrides)
    async with app.open_services(db, configured) as services:
        await services.keys.load()
        yield configured, services


@asynccontextmanager
async def serving_target(
    db: Database, settings: Settings, **overrides: object
) -> AsyncIterator[tuple[str, app.Services]]:
    """A real gRPC server on a free loopback port, on the module's database, configured with
    `overrides`; yields its target ("127.0.0.1:PORT") and its services."""
    async with serving_services(db, settings, **overrides) as (configured, services):
        server, port = app.grpc_server(services, configured)
        await server.start()
        try:
            yield f"127.0.0.1:{port}", services
        finally:
            await server.stop(None)


@asynccontextmanager
async def serving(
    db: Database, settings: Settings, **overrides: object
) -> AsyncIterator[tuple[grpc.aio.Channel, app.Services]]:
    """As `serving_target`, with a channel to the server."""
    async with (
        serving_target(db, settings, **overrides) as (target, services),
        grpc.aio.insecure_channel(target) as channel,
    ):
        yield channel, services
