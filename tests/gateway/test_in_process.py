"""In-process dispatch (`authsvc serve`): the gateway awaits the servicer objects themselves and
answers as it does for a gRPC channel: deadlines, aborts, unknown methods, unexpected errors,
/readyz, and routes for any annotated RPC."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import grpc
import pytest
from authsvc.v1 import auth_service_pb2, auth_service_pb2_grpc
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message_factory import GetMessageClass

from service import app, request_context
from service.config import Settings
from service.gateway.dispatch import InProcessDispatcher
from service.gateway.routes import Route, build_routes, service_files
from service.http_server import serving_gateway
from service.rpc.health import HealthServicer
from service.store.db import Database, create_pool
from tests.gateway.helpers import json_of

AUTH_SERVICE = auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
HEALTH_SERVICE = "grpc.health.v1.Health"
AUTHORIZE = "/v1/users/authorize"


@asynccontextmanager
async def in_process(servicers: dict[str, object], **options: Any) -> AsyncIterator[str]:
    async with serving_gateway(
        InProcessDispatcher(servicers), "127.0.0.1:0", shutdown_timeout=1.0, **options
    ) as port:
        yield f"http://127.0.0.1:{port}"


class SlowAuth(auth_service_pb2_grpc.AuthServiceServicer):
    """Never answers in time; records what it was told and whether it was cancelled."""

    def __init__(self) -> None:
        self.remaining: list[float] = []
        self.cancelled = asyncio.Event()

    async def Authorize(self, request: Any, context: Any) -> Any:
        self.remaining.append(context.time_remaining())
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return auth_service_pb2.AuthorizeResponse()


async def test_deadline_is_504_and_cancels_the_servicer() -> None:
    """A servicer that outlives the deadline is cancelled at it, as gRPC does, and the client
    gets 504 deadline_exceeded; time_remaining() told it what it had."""
    slow = SlowAuth()
    async with (
        in_process({AUTH_SERVICE: slow}, timeout=0.3) as url,
        aiohttp.ClientSession() as http,
    ):
        started = asyncio.get_running_loop().time()
        async with http.post(url + AUTHORIZE, json={}) as response:
            assert response.status == 504
            assert (await json_of(response))["error_code"] == "deadline_exceeded"
            assert response.headers["X-Request-Id"]
        elapsed = asyncio.get_running_loop().time() - started
    assert slow.cancelled.is_set()
    assert 0 < slow.remaining[0] <= 0.3
    assert 0.3 <= elapsed < 5


class FailingAuth(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(self, how: str) -> None:
        self.how = how

    async def Authorize(self, request: Any, context: Any) -> Any:
        if self.how == "raise":
            raise RuntimeError("boom: secret internals")
        if self.how == "set_code":
            context.set_code(grpc.StatusCode.PERMISSION_DENIED)
            context.set_details("not you")
            return auth_service_pb2.AuthorizeResponse(access_token="never sent")
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED, "plain abort", (("x-request-id", "r"),)
        )


async def test_unexpected_servicer_error_is_500_logged_not_echoed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A servicer exception (not an abort) is logged and answered 500 internal, with no detail,
    as grpc.aio makes it UNKNOWN."""
    caplog.set_level(logging.ERROR, logger="service.rpc.in_process")
    async with (
        in_process({AUTH_SERVICE: FailingAuth("raise")}) as url,
        aiohttp.ClientSession() as http,
        http.post(url + AUTHORIZE, json={}) as response,
    ):
        assert response.status == 500
        assert await json_of(response) == {"error_code": "unknown", "message": "internal error"}
    assert any(r.exc_info and "Authorize" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("how", "status", "code"),
    [("set_code", 403, "permission_denied"), ("abort", 429, "resource_exhausted")],
)
async def test_codes_without_error_info(how: str, status: int, code: str) -> None:
    """A code set with set_code() or a bare abort() becomes its HTTP status, like a channel's."""
    async with (
        in_process({AUTH_SERVICE: FailingAuth(how)}) as url,
        aiohttp.ClientSession() as http,
        http.post(url + AUTHORIZE, json={}) as response,
    ):
        assert response.status == status
        assert (await json_of(response))["error_code"] == code


async def test_a_service_with_no_servicer_is_501() -> None:
    """A route whose service has no servicer here is 501 unimplemented, as a gRPC server says."""
    async with (
        in_process({}) as url,
        aiohttp.ClientSession() as http,
        http.post(url + AUTHORIZE, json={}) as response,
    ):
        assert response.status == 501
        assert (await json_of(response))["error_code"] == "unimplemented"


class RequestContextAuth(auth_service_pb2_grpc.AuthServiceServicer):
    """Sets the request context variables, as rpc_method does, and reports what it found."""

    def __init__(self) -> None:
        self.found: list[float | None] = []

    async def Authorize(self, request: Any, context: Any) -> Any:
        self.found.append(request_context.deadline.get())
        request_context.deadline.set(0.0)  # an already passed deadline
        return auth_service_pb2.AuthorizeResponse(access_token="t")


async def test_each_call_has_its_own_context_variables() -> None:
    """One call's request context (its deadline) never reaches the next call on the same
    keep-alive connection: each call runs as its own task, as on the gRPC server."""
    servicer = RequestContextAuth()
    async with in_process({AUTH_SERVICE: servicer}) as url, aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(url + AUTHORIZE, json={}) as response:
                assert response.status == 200
    assert servicer.found == [None, None]


@pytest.fixture
async def lost_database(dead_target: str) -> AsyncIterator[Database]:
    """A database at an address nobody answers (as after the database went away)."""
    pool = await create_pool(f"postgresql://authsvc@{dead_target}/authsvc", 0, 1, 2.0)
    try:
        yield Database(pool, 2.0)
    finally:
        await pool.close()


async def test_readyz_calls_the_health_servicer_in_process(lost_database: Database) -> None:
    """/readyz asks the health servicer itself: 503 NOT_SERVING when its database is gone, and
    503 when there is no health servicer at all."""
    health = HealthServicer(lost_database.ping)
    async with in_process({HEALTH_SERVICE: health}) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/readyz") as response:
            assert response.status == 503
            body = await json_of(response)
        assert body == {"status": "unavailable", "message": "gRPC server is NOT_SERVING"}
    async with (
        in_process({}) as url,
        aiohttp.ClientSession() as http,
        http.get(url + "/readyz") as response,
    ):
        assert response.status == 503


async def test_every_routed_rpc_has_its_servicer_method(
    services: app.Services, settings: Settings
) -> None:
    """serve's registry holds, under each routed service's name, a servicer with a method for
    every routed RPC, and the health servicer: no REST route of ours is 501."""
    registry = app.build_servicers(services, settings).by_service()
    routes = build_routes(service_files())
    assert {r.method.containing_service.full_name for r in routes} | {HEALTH_SERVICE} == set(
        registry
    )
    for route in routes:
        servicer = registry[route.method.containing_service.full_name]
        assert callable(getattr(servicer, route.method.name))


class Library:
    """A servicer for the test library API, written as any servicer: methods named as RPCs."""

    def __init__(self, file: FileDescriptor) -> None:
        self.book_class = GetMessageClass(file.message_types_by_name["Book"])

    async def CreateBook(self, request: Any, context: Any) -> Any:
        return self.book_class(name="b1", title=request.title, pages=412)


async def test_any_annotated_rpc_is_dispatched_by_name(
    library_file: FileDescriptor, library_routes: list[Route]
) -> None:
    """A new annotated service needs no gateway change: its servicer, registered under the
    service's name, is found by the RPC's name; its other RPCs are 501."""
    service = library_file.services_by_name["LibraryService"].full_name
    async with (
        in_process({service: Library(library_file)}, routes=library_routes) as url,
        aiohttp.ClientSession() as http,
    ):
        async with http.post(url + "/v1/books", json={"title": "Dune"}) as response:
            assert response.status == 200, await response.text()
            book = await json_of(response)
        assert (book["name"], book["title"], book["pages"]) == ("b1", "Dune", 412)
        async with http.get(url + "/v1/shelf") as response:
            assert response.status == 501
