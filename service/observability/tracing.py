"""OpenTelemetry tracing: off unless the standard OTEL_* variables name an exporter (config.py
decides), started by app.py; with it off nothing here runs on a call.

The spans of a call, most from the instrumentations kept for these libraries:
- a REST request: opentelemetry-instrumentation-aiohttp-server (a SERVER span; the client's
  `traceparent` continued), named by the gateway's route here (`_route_name`);
- an RPC over the network: opentelemetry-instrumentation-grpc's aio server interceptor (a
  SERVER span per method; the caller's `traceparent` from the metadata);
- an RPC the REST gateway dispatches in process: `in_process` below, since that path bypasses
  the grpc.aio server and so its interceptor; the gateway's `traceparent` crosses the hop in
  the call's metadata (`inject`), as it would over a channel, and the span mirrors the
  interceptor's;
- the status of either: `rpc_ended`, from the servicers' wrapper (rpc/status.py via calls.py),
  because servicers fail with `abort_with_status`, which the interceptor does not see;
- the argon2id job: a span per job, given to the hasher as its `on_job` (`hash_job_observer()`);
- each SQL statement: opentelemetry-instrumentation-asyncpg (the statement text: constants
  with `$n` placeholders, never the values);
- `authsvc gateway`'s calls over its channel carry the REST span's `traceparent` (`inject`) to
  the server's interceptor. (The gRPC client instrumentation would do it with a CLIENT span of
  its own, but only by patching every channel of the process.)

The SDK reads its own variables (OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_*, OTEL_TRACES_SAMPLER,
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*, OTEL_PROPAGATORS, ...): the one exception
to config.py reading the environment alone, so that they mean what the specification says.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import unquote

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.addresses import split_address
from service.config import ConfigError
from service.domain.passwords import Argon2Parameters
from service.observability.http import ROUTE

log = logging.getLogger(__name__)
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
_TRACE_CONTEXT = TraceContextTextMapPropagator()

T = TypeVar("T")
Metadata = tuple[tuple[str, str | bytes], ...]

DEFAULT_SERVICE_NAME = "authsvc"
# Attributes of an RPC span, as the gRPC instrumentation names them (OpenTelemetry semantic
# conventions for RPC), and the authsvc reason of a failure (service/errors.py).
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code"
REASON = "authsvc.reason"
# The codes that make a server span an error (semantic conventions, gRPC server spans): the
# others are the caller's mistake, not the server's.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
# Request headers that never become span attributes, even when an operator asks the aiohttp
# instrumentation to capture every header (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*).
_SECRET_HEADERS = ("authorization", "proxy_authorization", "cookie")
_REDACTED = ("[REDACTED]",)

# Set while tracing runs (`start`): the provider, and the tracer of the spans made here.
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


def provider_from_environment(exporters: Sequence[type[SpanExporter]]) -> TracerProvider:
    """A TracerProvider as the SDK configures one from the environment: its sampler, span limits
    and resource (OTEL_SERVICE_NAME, default `authsvc`) by TracerProvider itself, and a batch
    processor (OTEL_BSP_*) for each of `exporters`, each reading its own OTEL_EXPORTER_*
    variables."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter()))
    return provider


def trace_exporters() -> list[type[SpanExporter]]:
    """The exporter classes OTEL_TRACES_EXPORTER names (default `otlp`, over the protocol that
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL names), resolved as the
    SDK's auto-configuration (`opentelemetry-instrument`) resolves them: with its
    `_configuration` helpers, private but the SDK's one reading of these variables (names,
    `otlp` by protocol, entry points), which a copy here would drift from. Tracing is on only
    when an exporter is configured, so an unset variable (an OTLP endpoint alone) means the
    specification's default, `otlp`."""
    from opentelemetry.sdk._configuration import (
        _get_exporter_entry_point,
        _get_exporter_names,
        _import_exporters,
    )

    names = _get_exporter_names("traces") or [_get_exporter_entry_point("otlp", "traces")]
    exporters, _, _ = _import_exporters(names, [], [])
    return list(exporters.values())


def start(provider: TracerProvider) -> None:
    """Trace from now on into `provider`: the libraries' instrumentations switched on, and the
    hooks below active. Servers and the hasher built after this are traced."""
    global _provider, _tracer
    AsyncPGInstrumentor().instrument(tracer_provider=provider)
    with warnings.catch_warnings():
        # The instrumentation puts its middleware in every application by subclassing
        # web.Application, which aiohttp discourages with a warning; its middleware reads state
        # that only `instrument` sets, so this is the supported way in.
        warnings.filterwarnings("ignore", "Inheritance class", DeprecationWarning)
        AioHttpServerInstrumentor().instrument(tracer_provider=provider)
    _provider = provider
    _tracer = provider.get_tracer(__name__)


def stop() -> None:
    """Stop tracing: the instrumentations switched off (servers already built keep theirs)."""
    global _provider, _tracer
    _provider = _tracer = None
    for instrumentor in (
        AsyncPGInstrumentor(),
        AioHttpServerInstrumentor(),
    ):
        instrumentor.uninstrument()


@contextlib.contextmanager
def exporting(enabled: bool) -> Iterator[None]:
    """While the block runs, trace into the exporters the environment configures (when
    `enabled`); at its end, the spans still buffered are sent."""
    if not enabled:
        yield
        return
    try:
        exporters = trace_exporters()
    except RuntimeError as exc:  # a name no installed exporter registers, or a bad protocol
        raise ConfigError(f"OTEL_TRACES_EXPORTER: {exc}") from None
    provider = provider_from_environment(exporters)
    trace.set_tracer_provider(provider)
    start(provider)
    log.info("tracing: exporting spans to %s", ", ".join(type(e).__name__ for e in exporters))
    try:
        yield
    finally:
        stop()
        provider.shutdown()


def is_on() -> bool:
    return _tracer is not None


def hash_job_observer() -> Callable[[Future[Any], Argon2Parameters, int], None] | None:
    """The hasher's `on_job` when tracing is on (None when off): a span for each argon2id job,
    the child of the caller's (the RPC's), ended when the job is: its wait for a worker and its
    computation. Nothing of the password is recorded."""
    if _provider is None:
        return None
    tracer = _provider.get_tracer("service.domain.passwords")

    def observe(work: Future[Any], params: Argon2Parameters, stored: int) -> None:
        span = tracer.start_span(
            "argon2id",
            attributes={
                "argon2.time_cost": params.time_cost,
                "argon2.memory_kib": params.memory_kib,
                "argon2.parallelism": params.parallelism,
                "authsvc.stored_passwords": stored,
            },
        )

        def end(done: Future[Any]) -> None:
            if done.cancelled():
                span.set_attribute("authsvc.hash.cancelled", True)
            elif (error := done.exception()) is not None:
                span.set_status(trace.StatusCode.ERROR, type(error).__name__)
            span.end()

        work.add_done_callback(end)

    return observe


def grpc_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The gRPC server's interceptors: the instrumentation's server span, when tracing is on."""
    if _provider is None:
        return []
    # Health's Watch writes with context.write (a coroutine, not an async generator), which the
    # interceptor's stream path cannot run: it is left out, as long-lived streams are anyway.
    return [
        aio_server_interceptor(
            tracer_provider=_provider,
            filter_=filters.negate(filters.full_method_name(HEALTH_WATCH)),
        )
    ]


def http_middlewares() -> list[Middleware]:
    """The gateway's middlewares when tracing is on: the REST span named by the route. (The
    instrumentation adds its own, outermost, to every application made after `start`.)"""
    return [] if _tracer is None else [_route_name]


@web.middleware
async def _route_name(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Name the REST span by the route the gateway matched (`POST /v1/users/authorize`): the
    application has one catch-all aiohttp route, which is all the instrumentation can see.
    The URL is recorded without its query (as the access log does), and a secret header never
    (a span keeps its attributes, so they are overwritten)."""
    try:
        return await handler(request)
    finally:
        span = trace.get_current_span()
        if span.is_recording():
            route = request.get(ROUTE)
            if route is not None:
                span.update_name(f"{request.method} {route}")
                span.set_attribute("http.route", route)
            recorded = getattr(span, "attributes", None) or {}
            if request.query_string:  # under the old and the stable HTTP conventions alike
                span.set_attribute("http.target", request.path)
                span.set_attribute("http.url", str(request.url.with_query(None)))
                if "url.query" in recorded:
                    span.set_attribute("url.query", "")
                if "url.full" in recorded:
                    span.set_attribute("url.full", str(request.url.with_query(None)))
            for header in _SECRET_HEADERS:
                if f"http.request.header.{header}" in recorded:
                    span.set_attribute(f"http.request.header.{header}", _REDACTED)


def inject(metadata: Metadata) -> Metadata:
    """`metadata` with the current span's W3C `traceparent` (and `tracestate`, baggage, as
    OTEL_PROPAGATORS says) added, for the gateway's call to a servicer, in process or over a
    channel. Unchanged when tracing is off."""
    if _tracer is None:
        return metadata
    carrier: dict[str, str] = {}
    _TRACE_CONTEXT.inject(carrier)  # the trace only: no client's baggage crosses into metadata
    return (*metadata, *carrier.items())


def in_process(call: Coroutine[Any, Any, T], path: str, context: Any) -> Coroutine[Any, Any, T]:
    """`call` (one RPC dispatched in process) in a SERVER span of its own, the child of the
    `traceparent` in `context`'s metadata; `call` itself when tracing is off."""
    if _tracer is None:
        return call
    return _in_process_span(_tracer, call, path, context)


async def _in_process_span(
    tracer: trace.Tracer, call: Coroutine[Any, Any, T], path: str, context: Any
) -> T:
    # The attributes the gRPC server interceptor gives a call over the network.
    carrier = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
    service, _, method = path[1:].partition("/")
    attributes: dict[str, str | int] = {
        RPC_SYSTEM: "grpc",
        RPC_SERVICE: service,
        RPC_METHOD: method,
        RPC_GRPC_STATUS_CODE: grpc.StatusCode.OK.value[0],
    }
    kind, _, peer = unquote(str(context.peer())).partition(":")
    if kind in ("ipv4", "ipv6"):
        with contextlib.suppress(ValueError):  # no port: no peer attributes
            ip, port = split_address(peer)
            attributes.update({"net.peer.ip": ip, "net.peer.port": str(port)})
    with tracer.start_as_current_span(
        path,
        context=propagate.extract(carrier),
        kind=trace.SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            return await call
        except Exception as exc:
            # An abort (InProcessAbort) carries its code, as grpc.aio's status would.
            code = getattr(exc, "code", None)
            if isinstance(code, grpc.StatusCode):
                _set_code(span, code)
            raise


def rpc_ended(code: str, reason: str | None) -> None:
    """Record how the RPC in hand ended (a `grpc.StatusCode` name, and the authsvc reason of a
    failure) on its span. Called by the servicers' wrapper (calls.py) only while tracing is on."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    _set_code(span, grpc.StatusCode[code])
    if reason is not None:
        span.set_attribute(REASON, reason)


def _set_code(span: trace.Span, code: grpc.StatusCode) -> None:
    span.set_attribute(RPC_GRPC_STATUS_CODE, code.value[0])
    if code in _SERVER_ERRORS:
        span.set_status(trace.StatusCode.ERROR, code.name)
