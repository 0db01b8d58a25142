"""The REST listener: aiohttp serving the gateway (service/gateway/) and the documents beside it
(/openapi.json, Swagger UI at /docs, the discovery documents), as grpc-gateway's users wrap its
mux in an `http.Server` with its timeouts.

A connection whose request head takes over `header_timeout` (slowloris) is closed; one aiohttp
cannot parse is a JSON 400/431 that echoes nothing of it. On exit the listener stops accepting,
lets requests in flight finish within `shutdown_timeout` (less 50 ms), then answers those left 503.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from service.addresses import split_address, with_port
from service.apidocs.discovery import Discovery, discovery_handlers
from service.apidocs.openapi import openapi_document
from service.apidocs.swagger_ui import swagger_ui_handlers
from service.gateway.dispatch import Dispatcher
from service.gateway.errors import error_response, json_response
from service.gateway.mux import REQUEST_ID_HEADER, Gateway
from service.gateway.routes import ErrorStyle, Route, build_routes, service_files
from service.observability.http import AccessLogger

log = logging.getLogger(__name__)

DEFAULT_SHUTDOWN_TIMEOUT = 10.0
DEFAULT_HEADER_TIMEOUT = 10.0  # nginx's client_header_timeout is 60 s; small heads need less
# How long the unread rest of a refused body is drained before the connection closes: enough
# for the client to read the answer (aiohttp's default is 10 s).
LINGERING_SECONDS = 1.0
EXPIRE_EARLY = 0.05  # seconds before aiohttp's shutdown wait ends that the gateway answers 503
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf request_id=%{X-Request-Id}o'


class _RequestHandler(RequestHandler):
    """aiohttp's connection handler, with a deadline for a request's head (aiohttp has none), and
    answering a request it cannot parse as the gateway answers: one JSON 400 (431 for an
    oversized line) logged as one line, echoing nothing (aiohttp's own text quotes the start of
    the offending header, which may be an Authorization header)."""

    header_timeout = DEFAULT_HEADER_TIMEOUT
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # A new connection's first head is due within the timeout, as nginx counts it: one
        # that sends nothing at all is closed too, not only one that stalls mid-head.
        self._head_timer = self._loop.call_later(self.header_timeout, self._head_too_slow)

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
        status, reason, text = 400, "bad_request", "malformed HTTP request"
        if isinstance(exc, LineTooLong):
            status, reason, text = 431, "header_too_large", "a request header line is too long"
        # Its one line is the access log's, under a request id of its own (the head that could
        # not be read may hold none).
        response = _with_request_id(error_response(status, reason, text, ErrorStyle.ERROR_CODE))
        response.force_close()
        return response


@web.middleware
async def _json_refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What aiohttp's router refuses before the gateway sees it (a CONNECT's authority, an
    `OPTIONS *`) is answered in the gateway's JSON, not aiohttp's plain text."""
    try:
        return await handler(request)
    except web.HTTPException as refused:
        if refused.status < 400:
            raise
        reason = refused.reason.lower().replace(" ", "_")
        return _with_request_id(
            error_response(refused.status, reason, refused.reason, ErrorStyle.ERROR_CODE)
        )


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` as aiohttp answers it; any other expectation a JSON 417 (aiohttp's
    own is plain text, and its handler is the only hook for it)."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version < HttpVersion11:  # HTTP/1.0 has no Expect: ignored, as aiohttp does
        return None
    if expect.lower() != "100-continue":
        message = "only Expect: 100-continue is understood"
        response = error_response(417, "expectation_failed", message, ErrorStyle.ERROR_CODE)
        response.force_close()
        return _with_request_id(response)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim answer is not the body's
    return None


def _with_request_id(response: web.Response) -> web.Response:
    """An answer made before the gateway's handler, under a request id of its own."""
    response.headers[REQUEST_ID_HEADER] = uuid.uuid4().hex
    return response


class _Server(web.Server):
    """aiohttp's Server names its handler class in `__call__`, with no option to choose another."""

    header_timeout = DEFAULT_HEADER_TIMEOUT

    def __call__(self) -> RequestHandler:
        handler = _RequestHandler(self, loop=self._loop, **self._kwargs)
        handler.header_timeout = self.header_timeout
        return handler


@asynccontextmanager
async def serving_gateway(
    dispatcher: Dispatcher,
    http_addr: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    middlewares: Sequence[Middleware] = (),
    routes: Sequence[Route] | None = None,
    discovery: Discovery | None = None,
    **options: Any,
) -> AsyncIterator[int]:
    """Serve the gateway on `http_addr` ("HOST:PORT"; port 0 picks one), over HTTPS with
    `ssl_context`, while the block runs; yields the bound port. On exit, stops accepting, lets
    requests in flight finish within `shutdown_timeout` seconds (less 50 ms), then answers 503.
    `middlewares`: tracing's, when on; `routes`: by default every annotated authsvc.v1 RPC;
    `discovery`: serve the OpenID / RFC 8414 documents; `options` go to `Gateway`."""
    host, port = split_address(http_addr)
    routes = build_routes(service_files()) if routes is None else routes
    openapi = openapi_document(routes)

    async def openapi_json(request: web.Request) -> web.Response:
        return json_response(openapi)

    paths = {"/openapi.json": openapi_json, **swagger_ui_handlers()}
    paths.update(discovery_handlers(discovery, routes) if discovery else {})
    gateway = Gateway(dispatcher, routes=routes, paths=paths, **options)
    app = web.Application(
        client_max_size=gateway.body_limit, middlewares=[*middlewares, _json_refusals]
    )
    app.router.add_route("*", "/{path:.*}", gateway.handle, expect_handler=_expect)
    runner = web.AppRunner(
        app,
        shutdown_timeout=shutdown_timeout,
        access_log_format=ACCESS_LOG_FORMAT,
        access_log_class=AccessLogger,
        lingering_time=LINGERING_SECONDS,
        # A client that hangs up cancels its call, as in gRPC: a login still queued for its hash
        # is dropped, not checked for nobody (one already hashing is finished and recorded).
        handler_cancellation=True,
        # No body is ever decoded (the gateway refuses one under a Content-Encoding unread):
        # not even the unread rest aiohttp drains, where a bad one would log a traceback.
        auto_decompress=False,
    )
    await runner.setup()
    assert runner.server is not None
    runner.server.__class__ = _Server
    runner.server.header_timeout = header_timeout  # type: ignore[attr-defined]
    await dispatcher.open()
    try:
        site = web.TCPSite(runner, host or None, port, ssl_context=ssl_context)
        await site.start()
        bound = runner.addresses[0][1]
        scheme = "https" if ssl_context is not None else "http"
        log.info("gateway serving %s on %s -> %s", scheme, with_port(http_addr, bound), dispatcher)
        yield int(bound)
    finally:
        # aiohttp waits `shutdown_timeout` for the handlers, then closes their connections
        # with no answer: the gateway answers them first, 50 ms before (a handler that ends in
        # the very loop turn aiohttp's wait does makes aiohttp log an InvalidStateError; a loop
        # stalled for 50 ms at that moment could still meet it).
        expiry = max(0.0, shutdown_timeout - EXPIRE_EARLY)
        timer = asyncio.get_running_loop().call_later(expiry, gateway.expire)
        try:
            await runner.cleanup()
        finally:
            timer.cancel()
            await dispatcher.close()


async def run_gateway(
    dispatcher: Dispatcher, http_addr: str, stop: asyncio.Event, **options: Any
) -> None:
    """Serve the gateway until `stop` is set (`authsvc gateway`); options as `serving_gateway`."""
    async with serving_gateway(dispatcher, http_addr, **options):
        await stop.wait()
