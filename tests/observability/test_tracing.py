"""OpenTelemetry tracing, into the SDK's in-memory exporter, over a real gRPC server, the REST
gateway dispatching in process, and PostgreSQL: a REST call is one trace (REST span -> RPC span
-> the argon2id job and each SQL statement), a gRPC call continues its caller's trace, a span
says how its RPC ended, and no password, token or Authorization header is ever an attribute."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import grpc
import pytest
from authsvc.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from service import app
from service.config import Settings
from service.gateway.dispatch import ChannelDispatcher
from service.http_server import serving_gateway
from service.observability import tracing
from tests.gateway.helpers import basic_auth
from tests.support import authorize, basic

PASSWORD = "trace check secret 1"
WRONG = "trace check wrong 2"
AUTHORIZE = "/authsvc.v1.AuthService/Authorize"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for this module's servers (built after it starts)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.start(provider)
    try:
        yield memory
    finally:
        tracing.stop()
        provider.shutdown()


@pytest.fixture(scope="module")
def services(exporter: InMemorySpanExporter, services: app.Services) -> app.Services:
    """The module's services (conftest's), built once tracing is on: the hasher takes its
    tracer then. The gRPC server (`grpc_target`) is built over them likewise."""
    return services


@pytest.fixture(scope="module")
async def base_url(services: app.Services, settings: Settings) -> AsyncIterator[str]:
    dispatcher = app.in_process_gateway(app.build_servicers(services, settings))
    async with serving_gateway(
        dispatcher, "127.0.0.1:0", shutdown_timeout=1.0, middlewares=tracing.http_middlewares()
    ) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
async def username(services: app.Services) -> str:
    name = f"tracer-{secrets.token_hex(4)}"
    await services.users.create(name, PASSWORD)
    return name


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """The exporter, emptied before the test."""
    exporter.clear()
    yield exporter


async def settled(exporter: InMemorySpanExporter, *names: str) -> list[ReadableSpan]:
    """The finished spans once one of each name in `names` is among them: a server span ends
    just after its answer is sent, so the caller may hold the answer a moment before."""
    for _ in range(250):
        finished = list(exporter.get_finished_spans())
        if all(any(s.name == name for s in finished) for name in names):
            break
        await asyncio.sleep(0.02)
    return finished


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    """The one span named `name`."""
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def rest_authorize(base_url: str, username: str, password: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base_url}/v1/users/authorize", headers=basic_auth(username, password)
        ) as reply,
    ):
        await reply.read()
        return reply.status


async def test_rest_authorize_is_one_trace(
    spans: InMemorySpanExporter, base_url: str, username: str
) -> None:
    """A REST Authorize: REST span -> RPC span -> the argon2id job and the SQL statements."""
    assert await rest_authorize(base_url, username, PASSWORD) == 200
    finished = await settled(spans, AUTHORIZE)
    rest = one(finished, "POST /v1/users/authorize")
    rpc = one(finished, AUTHORIZE)
    assert rest.kind is SpanKind.SERVER and rest.parent is None
    assert rest.attributes is not None and rest.attributes["http.route"] == "/v1/users/authorize"
    assert rpc.kind is SpanKind.SERVER
    assert rpc.context.trace_id == rest.context.trace_id
    assert rpc.parent is not None and rpc.parent.span_id == rest.context.span_id
    assert rpc.parent.is_remote  # carried across the in-process hop as a traceparent
    under_rpc = children(finished, rpc)
    assert [s.name for s in under_rpc if s.name == "argon2id"] == ["argon2id"]
    statements = [s for s in under_rpc if s.attributes and "db.statement" in s.attributes]
    assert statements and all(s.kind is SpanKind.CLIENT for s in statements)
    assert {s.context.trace_id for s in finished} == {rest.context.trace_id}


async def test_grpc_call_continues_the_callers_trace(
    spans: InMemorySpanExporter, grpc_target: str, username: str
) -> None:
    """A gRPC call with a `traceparent` is a child of the caller's span, in its trace."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        traceparent = ("traceparent", f"00-{trace_id}-{span_id}-01")
        await auth_service_pb2_grpc.AuthServiceStub(channel).Authorize(
            auth_service_pb2.AuthorizeRequest(), metadata=(*basic(username, PASSWORD), traceparent)
        )
    finished = await settled(spans, AUTHORIZE)
    rpc = one(finished, AUTHORIZE)
    assert rpc.kind is SpanKind.SERVER
    assert f"{rpc.context.trace_id:032x}" == trace_id
    assert rpc.parent is not None and f"{rpc.parent.span_id:016x}" == span_id
    assert [s.name for s in children(finished, rpc) if s.name == "argon2id"] == ["argon2id"]


async def test_standalone_gateway_carries_the_trace(
    spans: InMemorySpanExporter, grpc_target: str, username: str
) -> None:
    """`authsvc gateway`, calling over a channel: the server's RPC span is the REST span's child."""
    async with serving_gateway(
        ChannelDispatcher(grpc_target),
        "127.0.0.1:0",
        shutdown_timeout=1.0,
        middlewares=tracing.http_middlewares(),
    ) as port:
        assert await rest_authorize(f"http://127.0.0.1:{port}", username, PASSWORD) == 200
    finished = await settled(spans, AUTHORIZE)
    rest = one(finished, "POST /v1/users/authorize")
    rpc = one(finished, AUTHORIZE)
    assert rpc.context.trace_id == rest.context.trace_id
    assert rpc.parent is not None and rpc.parent.span_id == rest.context.span_id


async def test_grpc_failure_is_on_its_span(
    spans: InMemorySpanExporter, grpc_target: str, username: str
) -> None:
    """A refused login over gRPC: the span holds UNAUTHENTICATED and the reason."""
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await authorize(channel, username, WRONG)
    rpc = one(await settled(spans, AUTHORIZE), AUTHORIZE)
    assert rpc.attributes is not None
    assert rpc.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert rpc.attributes["authsvc.reason"] == "INVALID_CREDENTIALS"
    assert rpc.status.status_code is not StatusCode.ERROR  # the caller's mistake, not a fault


async def test_rest_failure_is_on_its_spans(
    spans: InMemorySpanExporter, base_url: str, username: str
) -> None:
    """A refused REST login: the RPC span holds the code and reason, the REST span the 401."""
    assert await rest_authorize(base_url, username, WRONG) == 401
    finished = await settled(spans, AUTHORIZE)
    rpc = one(finished, AUTHORIZE)
    rest = one(finished, "POST /v1/users/authorize")
    assert rpc.attributes is not None and rest.attributes is not None
    assert rpc.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert rpc.attributes["authsvc.reason"] == "INVALID_CREDENTIALS"
    assert rest.attributes["http.status_code"] == 401


def _values(span: ReadableSpan) -> list[Any]:
    values: list[Any] = [span.name, *(span.attributes or {}).values()]
    for event in span.events:
        values.extend((event.attributes or {}).values())
    return values


async def test_no_secret_in_any_span(
    spans: InMemorySpanExporter, base_url: str, grpc_target: str, username: str
) -> None:
    """No password, token or Authorization header in a span's name, attributes or events."""
    headers = basic_auth(username, PASSWORD)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/v1/users/authorize?ttl=60", headers=headers) as reply:
            token = (await reply.json())["access_token"]
        body = {"username": username, "password": PASSWORD}
        async with http.post(f"{base_url}/v1/users/authorize", json=body) as reply:
            assert reply.status == 200
        async with http.post(f"{base_url}/v1/tokens:verify", json={"token": token}) as reply:
            assert reply.status == 200
        async with http.post(f"{base_url}/v1/users/authorize", headers=basic_auth(username, WRONG)):
            pass
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        await authorize(channel, username, PASSWORD)
        await token_service_pb2_grpc.TokenServiceStub(channel).VerifyToken(
            token_service_pb2.VerifyTokenRequest(token=token)
        )
    finished = list(spans.get_finished_spans())
    assert len(finished) > 10
    secrets_ = (PASSWORD, WRONG, token, headers["Authorization"], headers["Authorization"][6:])
    for span in finished:
        for value in _values(span):
            text = str(value)
            assert not any(secret in text for secret in secrets_), (span.name, text)


async def test_captured_secret_headers_are_redacted(
    spans: InMemorySpanExporter, base_url: str, username: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator capturing every request header still gets no Authorization value."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    assert await rest_authorize(base_url, username, PASSWORD) == 200
    rest = one(list(spans.get_finished_spans()), "POST /v1/users/authorize")
    assert rest.attributes is not None
    assert rest.attributes["http.request.header.authorization"] == ("[REDACTED]",)
    assert "http.request.header.user_agent" in rest.attributes  # captured: the switch works


async def test_health_watch_works_with_tracing_on(grpc_target: str) -> None:
    """Health's Watch streams its status with tracing on, as without (the interceptor leaves it
    out: it cannot run a stream written with context.write)."""
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        first = await asyncio.wait_for(stream.read(), 10)
        stream.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


def test_no_baggage_crosses_into_the_calls_metadata(spans: InMemorySpanExporter) -> None:
    """Only the trace context goes into a call's metadata: baggage a client sent does not."""
    token = otel_context.attach(baggage.set_baggage("tenant", "chosen-by-the-client"))
    try:
        with TracerProvider().get_tracer("test").start_as_current_span("edge"):
            injected = tracing.inject((("x-request-id", "r1"),))
    finally:
        otel_context.detach(token)
    assert {key for key, _ in injected} == {"x-request-id", "traceparent"}
