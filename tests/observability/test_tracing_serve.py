"""`authsvc serve` traced as an operator configures it, with the OTEL_* variables alone: its spans
reach a small OTLP/HTTP collector (and the console exporter) as one trace per REST call; a gRPC
caller's `traceparent` is continued; no secret is in what is sent; OTEL_SDK_DISABLED=true, or
no OTEL_* variable at all, sends nothing. And in process, with tracing off, nothing is hooked."""

from __future__ import annotations

import asyncio
import functools
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest
from aiohttp import web
from authsvc.v1 import auth_service_pb2, auth_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from service.observability import tracing
from tests.gateway.helpers import basic_auth
from tests.support import basic
from tests.test_cli import cli, env_with, serve

PASSWORD = "trace serve secret 1"
WRONG = "trace serve wrong 2"


@dataclass
class Collector:
    """What an OTLP/HTTP collector received: the raw request bodies, and the spans in them with
    their resources' service names."""

    port: int
    bodies: list[bytes] = field(default_factory=list)

    def spans(self) -> list[tuple[str, Span]]:
        found = []
        for body in self.bodies:
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                names = [
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ]
                for scope_spans in resource_spans.scope_spans:
                    found.extend((names[0] if names else "", s) for s in scope_spans.spans)
        return found


@pytest.fixture
def collector() -> Iterator[Collector]:
    """An OTLP/HTTP trace receiver on a free loopback port (POST /v1/traces, protobuf)."""
    bodies: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/v1/traces":
                bodies.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Collector(server.server_address[1], bodies)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def username(database_url: str) -> str:
    name = f"traced-{secrets.token_hex(4)}"
    env = env_with(AUTHSVC_DATABASE_URL=database_url)
    made = cli(env, "user", "create", name, "--password-stdin", stdin=PASSWORD)
    assert made.returncode == 0, made.stderr
    return name


def run_server(env: dict[str, str], calls: Any) -> tuple[str, str, Any]:
    """Serve with `env`, make `calls(grpc_port, http_port)`, stop (SIGTERM flushes the spans);
    the run's stdout, stderr and what the calls returned."""
    ended: dict[str, Any] = {}
    with serve(env, ended) as (grpc_port, http_port):
        result = asyncio.run(calls(grpc_port, http_port))
    assert ended["returncode"] == 0, ended["err"]
    return ended["out"], ended["err"], result


async def rest_and_grpc_calls(username: str, grpc_port: int, http_port: int) -> dict[str, str]:
    """A REST login, a refused one, and a gRPC login under a caller's traceparent."""
    url = f"http://127.0.0.1:{http_port}/v1/users/authorize"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, headers=basic_auth(username, PASSWORD)) as reply:
            token = (await reply.json())["access_token"]
        async with http.post(url, headers=basic_auth(username, WRONG)) as reply:
            assert reply.status == 401
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        await auth_service_pb2_grpc.AuthServiceStub(channel).Authorize(
            auth_service_pb2.AuthorizeRequest(),
            metadata=(*basic(username, PASSWORD), ("traceparent", f"00-{trace_id}-{span_id}-01")),
        )
    return {"token": token, "trace_id": trace_id, "span_id": span_id}


def test_serve_sends_its_spans_to_a_collector(
    database_url: str, username: str, collector: Collector
) -> None:
    """OTLP/HTTP to a collector and the console: a REST login is REST -> RPC -> argon2id and SQL
    in one trace, a gRPC login continues its caller's trace, no secret is sent."""
    env = env_with(
        AUTHSVC_DATABASE_URL=database_url,
        OTEL_TRACES_EXPORTER="otlp,console",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
    )
    out, err, calls = run_server(env, functools.partial(rest_and_grpc_calls, username))
    assert "tracing: exporting spans" in err
    spans = collector.spans()
    assert {service for service, _ in spans} == {"authsvc"}
    rest = [s for _, s in spans if s.name == "POST /v1/users/authorize"]
    assert len(rest) == 2 and all(s.kind == Span.SPAN_KIND_SERVER for s in rest)
    rpc = [s for _, s in spans if s.name == "/authsvc.v1.AuthService/Authorize"]
    for parent in rest:
        (child,) = [s for s in rpc if s.parent_span_id == parent.span_id]
        assert child.trace_id == parent.trace_id
        under = [s for _, s in spans if s.parent_span_id == child.span_id]
        assert "argon2id" in {s.name for s in under}
        assert any(a.key == "db.statement" for s in under for a in s.attributes)
    (continued,) = [s for s in rpc if s.trace_id.hex() == calls["trace_id"]]
    assert continued.parent_span_id.hex() == calls["span_id"]
    assert '"name": "POST /v1/users/authorize"' in out  # the console exporter's JSON
    sent = b"".join(collector.bodies)
    header = basic_auth(username, PASSWORD)["Authorization"]
    for secret in (PASSWORD, WRONG, calls["token"], header, header.removeprefix("Basic ")):
        assert secret.encode() not in sent
        assert secret not in out


async def one_rest_login(username: str, grpc_port: int, http_port: int) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{http_port}/v1/users/authorize",
            headers=basic_auth(username, PASSWORD),
        ) as reply,
    ):
        assert reply.status == 200


@pytest.mark.parametrize(
    "otel",
    [
        pytest.param({}, id="no OTEL variable"),
        pytest.param({"OTEL_SDK_DISABLED": "true"}, id="OTEL_SDK_DISABLED"),
    ],
)
def test_serve_without_tracing_sends_nothing(
    database_url: str, username: str, collector: Collector, otel: dict[str, str]
) -> None:
    """Tracing off: no span is sent, to the collector or the console, and none is announced."""
    env = env_with(AUTHSVC_DATABASE_URL=database_url, **otel)
    for name in [k for k in env if k.startswith("OTEL_") and k not in otel]:
        del env[name]
    if otel:  # an exporter configured too, which the switch overrides
        env["OTEL_TRACES_EXPORTER"] = "otlp,console"
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{collector.port}"
    out, err, _ = run_server(env, functools.partial(one_rest_login, username))
    assert collector.bodies == []
    assert "tracing:" not in err
    assert '"trace_id"' not in out


def test_tracing_off_hooks_nothing() -> None:
    """In process, with tracing off (the default), no instrumentation is active and the hooks
    hand back what they were given."""
    assert not tracing.is_on()
    assert tracing.hash_job_observer() is None
    assert tracing.grpc_interceptors() == []
    assert tracing.http_middlewares() == []
    metadata = (("x-request-id", "r1"),)
    assert tracing.inject(metadata) is metadata

    async def call() -> None:
        pass

    coroutine = call()
    assert tracing.in_process(coroutine, "/a.B/C", None) is coroutine
    coroutine.close()
    assert web.Application.__module__ == "aiohttp.web_app"
    assert not hasattr(asyncpg.connection.Connection.fetch, "__wrapped__")


def test_unknown_exporter_is_one_line(database_url: str) -> None:
    """An exporter no installed package provides stops `serve` with one line naming it."""
    env = env_with(AUTHSVC_DATABASE_URL=database_url, OTEL_TRACES_EXPORTER="zipkin_json")
    # Ports of its own: the default ones may be in use on a developer's machine.
    env.update(AUTHSVC_GRPC_ADDR="127.0.0.1:0", AUTHSVC_HTTP_ADDR="127.0.0.1:0")
    result = cli(env, "serve")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("authsvc: OTEL_TRACES_EXPORTER: ") and "zipkin_json" in line
    assert "Traceback" not in result.stderr
