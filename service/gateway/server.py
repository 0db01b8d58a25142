"""The aiohttp application: one handler that routes by the table, calls the RPC, answers JSON.

The call goes through a dispatcher (dispatch.py): in process to the servicers (`authsvc serve`)
or over a gRPC channel (`authsvc gateway`). Request headers reach the servicer only as
`authorization` (printable ASCII, else 400) and `x-request-id` (the client's `X-Request-Id` when
it is 1..128 printable ASCII characters, else a new one); no other header is forwarded, so a
client cannot set `grpc-*` or any other metadata. The servicer learns the client's address from
the context's `peer()` in process, from `x-forwarded-for` metadata over a channel: the address
the gateway resolved (client_address.py), never the client's header. The request id comes back
in `X-Request-Id` on every answer, errors included. Each call carries a deadline (`timeout`,
10 s by default).

Replies are `Cache-Control: no-store` (they carry tokens) unless the servicer sent a
`cache-control` in its initial metadata (the JWKS); no other reply metadata becomes a header.

Bodies: at most `body_limit` bytes (64 KiB), checked against Content-Length and while reading, so a
chunked body cannot slip past (413). An empty body is `{}` whatever its Content-Type (the newer
Redis contract sends `POST /v1/users/authorize` with Basic credentials and nothing else). A
non-empty body must be JSON: `Content-Type: application/json` (or `application/*+json`), with no
charset or UTF-8, or no Content-Type at all; anything else, notably curl's default
`application/x-www-form-urlencoded`, is 415 rather than a guess at what the client meant.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from grpc_health.v1 import health_pb2
from multidict import CIMultiDictProxy

from service.addresses import split_address
from service.gateway import errors
from service.gateway.client_address import IPNetwork, client_address
from service.gateway.dispatch import HEALTH_CHECK, Caller, CallFailed, Dispatcher, RpcMethod
from service.gateway.errors import GatewayError, bad_request
from service.apidocs.openapi import openapi_document
from service.gateway.routes import ErrorStyle, Route, build_routes, service_files
from service.gateway.transcoding import NO_BODY, TranscodeError, build_request, message_to_json
from service.observability.http import ROUTE, AccessLogger

log = logging.getLogger(__name__)

DEFAULT_BODY_LIMIT = 64 * 1024
DEFAULT_TIMEOUT = 10.0
DEFAULT_READY_TIMEOUT = 2.0
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
# How long an unread request body (after a 413, 404, ...) is read and dropped before the
# connection is closed: long enough for the client to read the answer; aiohttp's default is 10 s.
LINGERING_SECONDS = 1.0
# Seconds from a request's first byte to the end of its headers (slowloris); nginx's
# client_header_timeout is 60 s, a few small headers need far less.
DEFAULT_HEADER_TIMEOUT = 10.0
REQUEST_ID_HEADER = "X-Request-Id"
# The gRPC wire format of a deadline (PROTOCOL-HTTP2.md), which grpc-gateway also takes from
# HTTP clients: "1S", "500m", ...
GRPC_TIMEOUT_HEADER = "Grpc-Timeout"
_GRPC_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")
_GRPC_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
REQUEST_ID_KEY = "x-request-id"
REQUEST_ID_MAX = 128
# nginx's status for a request whose client went away: only the access log sees it.
CLIENT_CLOSED_REQUEST = 499
_READ_CHUNK = 16 * 1024
# Reply metadata that becomes an HTTP header (metadata key -> header). Replies are otherwise
# `Cache-Control: no-store`: they carry tokens.
FORWARDED_RESPONSE_METADATA = {"cache-control": "Cache-Control"}
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf request_id=%{X-Request-Id}o'

Handler = Callable[[web.Request], Awaitable[web.Response]]
GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway")


@dataclass(frozen=True)
class Discovery:
    """What the discovery documents (OpenID Connect Discovery 1.0, RFC 8414) say of authsvc:
    the tokens' `iss`, their signing algorithm, and the public base URL of the absolute
    `jwks_uri` and `introspection_endpoint` (None: the request's scheme and Host)."""

    issuer: str
    algorithm: str
    public_url: str | None = None
    max_age: int = 3600


DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
JWKS_METHOD = "authsvc.v1.TokenService.GetJwks"
INTROSPECTION_METHOD = "authsvc.v1.TokenService.VerifyToken"
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")


@dataclass(frozen=True)
class _Builtin:
    """A gateway endpoint that is not an RPC."""

    path: str
    handler: Handler


class Gateway:
    """Routes HTTP requests to the servicers through `dispatcher` (in process, or a channel)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        routes: Sequence[Route],
        *,
        body_limit: int,
        timeout: float,
        ready_timeout: float,
        trusted_proxies: Sequence[IPNetwork] = (),
        discovery: Discovery | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._discovery = discovery
        self._routes = list(routes)
        self._body_limit = body_limit
        self._timeout = timeout
        self._ready_timeout = ready_timeout
        self._trusted_proxies = tuple(trusted_proxies)
        # Requests being handled, and whether the shutdown grace has run out (`expire`).
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._expired = False
        self._openapi = openapi_document(self._routes)
        self._builtins = {
            b.path: b
            for b in (
                _Builtin("/healthz", self._healthz),
                _Builtin("/readyz", self._readyz),
                _Builtin("/openapi.json", self._openapi_json),
                *(_Builtin(p, self._discovery_json) for p in DISCOVERY_PATHS if discovery),
            )
        }
        # The gateway's own paths win over a wildcard template; an RPC bound to one exactly
        # would never be reached, so that is a start-up error.
        for route in self._routes:
            if route.template.text in self._builtins:
                raise ValueError(f"{route.method.full_name}: {route.template.text} is reserved")

    def __str__(self) -> str:
        return str(self._dispatcher)

    async def open(self) -> None:
        methods = {
            r.grpc_path: RpcMethod(r.grpc_path, r.request_class, r.response_class)
            for r in self._routes
        }
        methods[HEALTH_CHECK.path] = HEALTH_CHECK
        await self._dispatcher.open(list(methods.values()))

    async def close(self) -> None:
        await self._dispatcher.close()

    def expire(self) -> None:
        """The shutdown grace has run out: every request still in hand is cancelled, and
        answered 503 (aiohttp would close its connection with no answer)."""
        self._expired = True
        for task in self._in_flight:
            task.cancel()

    async def handle(self, request: web.Request) -> web.Response:
        request_id = _request_id(request)
        style = ErrorStyle.ERROR_CODE
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            route, path_values, style = self._resolve(request)
            request[ROUTE] = route.path if isinstance(route, _Builtin) else route.template.text
            if isinstance(route, _Builtin):
                response = await route.handler(request)
            else:
                response = await self._call(route, path_values, request, request_id)
        except GatewayError as error:
            response = errors.gateway_error_response(error, style)
            if error.status == 413:
                # The rest of the body is not wanted: close the connection after the answer
                # (aiohttp then reads on for LINGERING_SECONDS at most, so the client can read
                # the 413 before the connection is reset).
                response.force_close()
        except ClientGone:
            log.info("client closed the connection mid-request (request id %s)", request_id)
            response = errors.error_response(
                CLIENT_CLOSED_REQUEST, "client_closed_request", "the client went away", style
            )
        except asyncio.CancelledError:
            if self._expired:
                task.uncancel()
                log.warning("shutdown grace over: answered 503 (request id %s)", request_id)
                response = errors.error_response(
                    503, "unavailable", "the service is shutting down; try again", style
                )
                response.force_close()
                response.headers[REQUEST_ID_HEADER] = request_id
                return response
            # The client hung up (aiohttp cancels the handler, and with it the call): nobody to
            # answer, and no access-log line follows.
            log.info("client closed the connection mid-request (request id %s)", request_id)
            raise
        except Exception:
            log.exception("unexpected error in the gateway (request id %s)", request_id)
            response = errors.internal_error_response(style)
        finally:
            self._in_flight.discard(task)
        response.headers[REQUEST_ID_HEADER] = request_id
        return response

    def _resolve(self, request: web.Request) -> tuple[Route | _Builtin, dict[str, str], ErrorStyle]:
        """The route for the request, its raw path values and its error style; or 404/405."""
        path = request.rel_url.raw_path
        # HEAD is GET without the body (RFC 9110 9.3.2); aiohttp leaves the body out.
        method = "GET" if request.method == "HEAD" else request.method
        builtin = self._builtins.get(path)
        if builtin is not None:
            if method != "GET":
                raise GatewayError(
                    405,
                    "method_not_allowed",
                    f"{request.method} is not allowed on {path}; allowed: GET, HEAD",
                    {"Allow": "GET, HEAD"},
                )
            return builtin, {}, ErrorStyle.ERROR_CODE
        matches = [(r, v) for r in self._routes if (v := r.template.match(path)) is not None]
        if not matches:
            raise GatewayError(404, "not_found", f"no such path: {request.path}")
        for route, values in matches:
            if route.http_method == method:
                return route, values, route.error_style
        styles = {r.error_style for r, _ in matches}
        style = styles.pop() if len(styles) == 1 else ErrorStyle.ERROR_CODE
        methods = {r.http_method for r, _ in matches}
        if "GET" in methods:
            methods.add("HEAD")
        allowed = ", ".join(sorted(methods))
        raise GatewayError(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.path}; allowed: {allowed}",
            {"Allow": allowed},
            style=style,
        )

    async def _call(
        self, route: Route, path_values: Mapping[str, str], request: web.Request, request_id: str
    ) -> web.Response:
        metadata = call_metadata(request.headers, request_id)
        body = await self._read_json(request) if route.body else NO_BODY
        try:
            message = build_request(route, path_values, request.rel_url.query.items(), body)
        except TranscodeError as exc:
            raise bad_request(str(exc)) from None
        try:
            reply, initial = await self._dispatcher.call(
                route.grpc_path, message, metadata, self._deadline(request), self._caller(request)
            )
        except CallFailed as failed:
            return errors.rpc_error_response(failed.failure, route.error_style, request_id)
        headers = response_headers(initial)
        return errors.json_response(message_to_json(reply, route.response_body), headers=headers)

    def _deadline(self, request: web.Request) -> float:
        """Seconds the call may take: the client's `Grpc-Timeout` header (as grpc-gateway reads
        it) when shorter than the gateway's own timeout. A login that could not be checked
        within it is then not checked at all (service/domain/passwords.py)."""
        raw = request.headers.get(GRPC_TIMEOUT_HEADER)
        if raw is None:
            return self._timeout
        match = _GRPC_TIMEOUT.fullmatch(raw.strip())
        if match is None:
            raise bad_request(
                f"{GRPC_TIMEOUT_HEADER} must be 1 to 8 digits and a unit (H, M, S, m, u, n)"
            )
        return min(self._timeout, int(match[1]) * _GRPC_TIMEOUT_UNITS[match[2]])

    def _caller(self, request: web.Request) -> Caller:
        """Who is calling: the TCP peer, or whom trusted proxies name (client_address.py)."""
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        headers = request.headers
        address = client_address(
            (peer[0], peer[1]) if isinstance(peer, tuple) else None,
            headers.getall(hdrs.X_FORWARDED_FOR, ()),
            headers.getall(hdrs.FORWARDED, ()),
            self._trusted_proxies,
        )
        return Caller(address, transport)

    async def _read_json(self, request: web.Request) -> Any:
        """The parsed JSON body, or NO_BODY when it is empty."""
        limit = self._body_limit
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(limit)
        chunks, size = [], 0
        try:
            while chunk := await request.content.read(_READ_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
        except ConnectionError:
            raise ClientGone from None
        raw = b"".join(chunks)
        if not raw.strip(b" \t\r\n"):
            return NO_BODY
        _check_content_type(request)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("the request body is not UTF-8") from None
        try:
            return json.loads(text, object_pairs_hook=_object, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise bad_request(
                f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
        except _DuplicateKey as exc:
            raise bad_request(f"malformed JSON: key {exc.args[0]!r} appears twice") from None
        except (ValueError, RecursionError):
            raise bad_request("malformed JSON") from None

    async def _healthz(self, request: web.Request) -> web.Response:
        return errors.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        check = health_pb2.HealthCheckRequest(service="")
        try:
            reply, _ = await self._dispatcher.call(
                HEALTH_CHECK.path, check, (), self._ready_timeout, self._caller(request)
            )
        except CallFailed as failed:
            message = f"gRPC health check failed: {failed.failure.code}"
            return errors.json_response({"status": "unavailable", "message": message}, 503)
        assert isinstance(reply, health_pb2.HealthCheckResponse)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            message = f"gRPC server is {name}"
            return errors.json_response({"status": "unavailable", "message": message}, 503)
        return errors.json_response({"status": "ok"})

    async def _openapi_json(self, request: web.Request) -> web.Response:
        return errors.json_response(self._openapi)

    async def _discovery_json(self, request: web.Request) -> web.Response:
        """The discovery document: only what is true of authsvc (no authorization or token
        endpoint in the OAuth sense, so none is named)."""
        discovery = self._discovery
        assert discovery is not None
        base = discovery.public_url
        if base is None:
            if not _HOST.fullmatch(request.host):
                raise bad_request("the Host header is not a host name or address")
            base = f"{request.scheme}://{request.host}"
        paths = {
            r.method.full_name: r.template.text
            for r in self._routes
            if r.http_method in ("GET", "POST")
        }
        document: dict[str, Any] = {"issuer": discovery.issuer}
        if JWKS_METHOD in paths:
            document["jwks_uri"] = base + paths[JWKS_METHOD]
        if INTROSPECTION_METHOD in paths:
            document["introspection_endpoint"] = base + paths[INTROSPECTION_METHOD]
            document["introspection_endpoint_auth_methods_supported"] = ["none"]
        document["id_token_signing_alg_values_supported"] = [discovery.algorithm]
        cache = f"public, max-age={discovery.max_age}"
        return errors.json_response(document, headers={"Cache-Control": cache})


class ClientGone(Exception):
    """The client closed the connection before its request was read."""


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, "payload_too_large", f"the request body is larger than {limit} bytes")


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_content_type(request: web.Request) -> None:
    raw = request.headers.get(hdrs.CONTENT_TYPE, "").strip()
    if not raw:
        return  # no Content-Type: the body is parsed as JSON, or refused as malformed
    mime = request.content_type
    json_like = mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )
    charset = request.charset
    if not json_like or (charset is not None and charset.lower() not in ("utf-8", "utf8")):
        raise GatewayError(
            415,
            "unsupported_media_type",
            f"unsupported Content-Type {raw!r}: send application/json (UTF-8)",
        )


def response_headers(metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    """The HTTP headers a reply's initial metadata asks for: only those in
    FORWARDED_RESPONSE_METADATA (a servicer's Cache-Control for the JWKS, say), never others."""
    headers = {}
    for key, value in metadata:
        name = FORWARDED_RESPONSE_METADATA.get(key)
        if name is not None and isinstance(value, str) and _printable_ascii(value):
            headers[name] = value
    return headers


def call_metadata(headers: CIMultiDictProxy[str], request_id: str) -> tuple[tuple[str, str], ...]:
    """The gRPC metadata for a request: its request id and its Authorization header(s), nothing
    else. An Authorization value that is not printable ASCII cannot be metadata: 400."""
    metadata = [(REQUEST_ID_KEY, request_id)]
    for value in headers.getall(hdrs.AUTHORIZATION, []):
        if not _printable_ascii(value):
            raise bad_request("the Authorization header must be printable ASCII")
        metadata.append(("authorization", value))
    return tuple(metadata)


def _printable_ascii(value: str) -> bool:
    return all(" " <= char <= "~" for char in value)


def _request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "").strip()
    if 0 < len(given) <= REQUEST_ID_MAX and _printable_ascii(given):
        return given
    return uuid.uuid4().hex


def create_app(
    dispatcher: Dispatcher,
    *,
    routes: Sequence[Route] | None = None,
    body_limit: int = DEFAULT_BODY_LIMIT,
    timeout: float = DEFAULT_TIMEOUT,
    ready_timeout: float = DEFAULT_READY_TIMEOUT,
    trusted_proxies: Sequence[IPNetwork] = (),
    discovery: Discovery | None = None,
    middlewares: Sequence[Middleware] = (),
) -> web.Application:
    """The gateway as an aiohttp application; its dispatcher opens with the app's start-up.

    `dispatcher` is an `InProcessDispatcher` (the servicers of this process: `authsvc serve`) or
    a `ChannelDispatcher` (a gRPC server elsewhere: `authsvc gateway`). `routes` defaults to
    every annotated RPC of the authsvc.v1 `*_service_pb2` modules. `timeout` is each call's
    deadline and `ready_timeout` the /readyz health check's, in seconds. `trusted_proxies` are
    the peers whose X-Forwarded-For / Forwarded headers name the client. With `discovery`, the
    gateway serves the OpenID / RFC 8414 discovery documents. `middlewares`: tracing's, when on.
    """
    gateway = Gateway(
        dispatcher,
        build_routes(service_files()) if routes is None else routes,
        body_limit=body_limit,
        timeout=timeout,
        ready_timeout=ready_timeout,
        trusted_proxies=trusted_proxies,
        discovery=discovery,
    )
    app = web.Application(client_max_size=body_limit, middlewares=list(middlewares))

    async def dispatch(_: web.Application) -> AsyncIterator[None]:
        await gateway.open()
        yield
        await gateway.close()

    app[GATEWAY_KEY] = gateway
    app.cleanup_ctx.append(dispatch)
    app.router.add_route("*", "/{path:.*}", gateway.handle)
    return app


class _RequestHandler(RequestHandler):
    """aiohttp's connection handler, answering a request it cannot parse (request line or
    headers) as the gateway answers: one JSON 4xx, 431 for an oversized line, echoing nothing
    (aiohttp's own text/plain answer quotes the start of the offending header, which may be an
    Authorization header), logged as one line with no traceback."""

    header_timeout = DEFAULT_HEADER_TIMEOUT
    _head_timer: asyncio.TimerHandle | None = None

    # A request's head (request line and headers) must arrive within `header_timeout` of its
    # first byte, or the connection is closed (slowloris); aiohttp has no such timeout.

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._messages or self._request_in_progress:
            self._stop_head_timer()
        elif data and self._head_timer is None:
            self._head_timer = self._loop.call_later(self.header_timeout, self._head_too_slow)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._messages or self._request_in_progress:
            return
        peer = self.transport.get_extra_info("peername") if self.transport else None
        log.info("closed a connection from %s: request headers not received in time", peer)
        self.force_close()
        if self.transport is not None:
            self.transport.close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong):
            status, reason, text = 431, "header_too_large", "a request header line is too long"
        else:
            status, reason, text = 400, "bad_request", "malformed HTTP request"
        log.warning("refused an unreadable HTTP request from %s: %s", request.remote, reason)
        response = errors.error_response(status, reason, text, ErrorStyle.ERROR_CODE)
        response.force_close()
        return response


class _Server(web.Server):
    header_timeout = DEFAULT_HEADER_TIMEOUT

    def __call__(self) -> RequestHandler:
        handler = _RequestHandler(self, loop=self._loop, **self._kwargs)
        handler.header_timeout = self.header_timeout
        return handler


class _AppRunner(web.AppRunner):
    """An AppRunner whose connections use `_RequestHandler` (aiohttp's `Server` names its
    handler class in `__call__`, with no option to choose another)."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server
        assert isinstance(server, _Server)
        server.header_timeout = self.header_timeout
        return server


@asynccontextmanager
async def serving_gateway(
    dispatcher: Dispatcher,
    http_addr: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    **options: Any,
) -> AsyncIterator[int]:
    """Serve the gateway on `http_addr` ("HOST:PORT"; port 0 picks one), over HTTPS when
    `ssl_context` is given, while the block runs; yields the bound port. On exit, stops accepting
    and lets in-flight requests finish within `shutdown_timeout` seconds, then answers those
    left 503 (their calls cancelled). A connection whose
    request headers take more than `header_timeout` seconds is closed. `options` go to
    `create_app` (`timeout`, `body_limit`, `ready_timeout`, `trusted_proxies`, `routes`,
    `discovery`, `middlewares`)."""
    host, port = split_address(http_addr)
    app = create_app(dispatcher, **options)
    runner = _AppRunner(
        app,
        shutdown_timeout=shutdown_timeout,
        access_log_format=ACCESS_LOG_FORMAT,
        access_log_class=AccessLogger,
        lingering_time=LINGERING_SECONDS,
        header_timeout=header_timeout,
        # A client that hangs up cancels its call, as in gRPC: a login still queued for its hash
        # is dropped, not checked for nobody (one already hashing is finished and recorded).
        handler_cancellation=True,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host or None, port, ssl_context=ssl_context)
        await site.start()
        bound = runner.addresses[0][1]
        scheme = "https" if ssl_context is not None else "http"
        log.info("gateway serving %s on %s:%d -> %s", scheme, host, bound, dispatcher)
        yield int(bound)
    finally:
        # aiohttp waits `shutdown_timeout` for the handlers (twice, the second time after
        # cancelling their request bodies), then closes the connections with no answer: the
        # gateway answers them first.
        timer = asyncio.get_running_loop().call_later(shutdown_timeout, app[GATEWAY_KEY].expire)
        try:
            await runner.cleanup()
        finally:
            timer.cancel()


async def run_gateway(
    dispatcher: Dispatcher, http_addr: str, stop: asyncio.Event, **options: Any
) -> None:
    """Serve the gateway until `stop` is set (`authsvc gateway`); `options` as for
    `serving_gateway`."""
    async with serving_gateway(dispatcher, http_addr, **options):
        await stop.wait()
