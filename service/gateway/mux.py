"""The gateway's mux (grpc-gateway's ServeMux): routes by the table, calls the RPC, answers JSON.

A call's metadata is the request id (the client's `X-Request-Id` if `given_request_id` takes it,
else a new one; it comes back on every answer) and `Authorization`, nothing else; its deadline
the gateway's `timeout` or the client's shorter `Grpc-Timeout`; its caller the client as
service/client_address.py resolves it. Of a reply's metadata only `cache-control` (the JWKS)
becomes a header. A body is at most `body_limit` bytes however sent (413), under no
Content-Encoding; an empty one is `{}` (the newer Redis contract posts Basic credentials and
nothing else), any other must be JSON in UTF-8 (`application/json`, `application/*+json` or no
Content-Type: 415 for curl's default form encoding rather than a guess).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
from aiohttp import hdrs, web
from grpc_health.v1 import health_pb2
from grpc_health.v1.health_pb2 import HealthCheckResponse
from multidict import CIMultiDictProxy

from service.client_address import IPNetwork, client_address
from service.gateway.dispatch import CallOptions, Dispatcher, Metadata
from service.gateway.errors import (
    GatewayError,
    bad_request,
    error_response,
    json_response,
    rpc_error_response,
)
from service.gateway.routes import ErrorStyle, Route, build_routes, service_files
from service.gateway.transcoding import build_request, message_to_json, parse_json
from service.observability.http import ROUTE
from service.request_context import given_request_id

log = logging.getLogger(__name__)

HEALTH_CHECK = health_pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name["Check"]
DEFAULT_BODY_LIMIT = 64 * 1024
DEFAULT_TIMEOUT = 10.0
DEFAULT_READY_TIMEOUT = 2.0
REQUEST_ID_HEADER = "X-Request-Id"
# The gRPC wire format of a deadline (PROTOCOL-HTTP2.md): "1S", "500m", ...
_GRPC_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")
_GRPC_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client gone: only the access log sees it

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gateway:
    """Routes HTTP requests to the servicers through `dispatcher` (in process, or a channel)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        routes: Sequence[Route] | None = None,
        body_limit: int = DEFAULT_BODY_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        trusted_proxies: Sequence[IPNetwork] = (),
        paths: Mapping[str, Handler] | None = None,
    ) -> None:
        """`routes`: by default every annotated authsvc.v1 RPC; `timeout` and `ready_timeout`
        (/readyz) in seconds; `trusted_proxies`: the peers whose X-Forwarded-For / Forwarded
        name the client; `paths`: more GET handlers (grpc-gateway's `HandlePath`). Whoever
        serves it opens `dispatcher` first and closes it after (service/http_server.py)."""
        self._dispatcher = dispatcher
        self.body_limit, self._timeout, self._ready_timeout = body_limit, timeout, ready_timeout
        self._trusted_proxies = tuple(trusted_proxies)
        self._in_flight: set[asyncio.Task[Any]] = set()  # cancelled, and answered 503, by expire
        self._expired = False
        builtins = {"/healthz": self._healthz, "/readyz": self._readyz, **(paths or {})}
        self._paths: dict[str, dict[str, Route | Handler]] = {
            p: {"GET": h} for p, h in builtins.items()
        }
        for route in build_routes(service_files()) if routes is None else routes:
            if route.path in builtins:
                raise ValueError(f"{route.method.full_name}: {route.path} is the gateway's")
            self._paths.setdefault(route.path, {})[route.http_method] = route

    def expire(self) -> None:
        """The shutdown grace has run out: every request still in hand is cancelled and answered
        503 (aiohttp would close its connection with no answer)."""
        self._expired = True
        for task in self._in_flight:
            task.cancel()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        request_id = _request_id(request)
        style = ErrorStyle.ERROR_CODE
        response: web.StreamResponse
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            path, route = self._resolve(request)
            request[ROUTE] = path  # one of the table's, never a client's own
            if isinstance(route, Route):
                style = route.error_style
                response = await self._call(route, request, request_id)
            else:
                response = await route(request)
        except GatewayError as error:
            response = error_response(
                error.status, error.reason, error.message, error.style or style, error.headers
            )
            if error.status in (408, 413, 415):  # the rest of the body is not wanted
                response.force_close()
        except asyncio.CancelledError:
            if not self._expired:  # aiohttp cancelled the handler, and the call: nobody to answer
                log.info("client closed the connection mid-request (request id %s)", request_id)
                raise
            task.uncancel()
            log.warning("shutdown grace over: answered 503 (request id %s)", request_id)
            text = "the service is shutting down; try again"
            response = error_response(503, "unavailable", text, style)
            response.force_close()
        except Exception:
            log.exception("unexpected error in the gateway (request id %s)", request_id)
            response = error_response(500, "internal", "internal error", style)
        finally:
            self._in_flight.discard(task)
        response.headers[REQUEST_ID_HEADER] = request_id
        return response

    def _resolve(self, request: web.Request) -> tuple[str, Route | Handler]:
        """The path and route (or GET handler) of `request`; or 404, or 405 naming the methods
        allowed. Messages quote the path as sent, at most 100 characters of it."""
        path = request.rel_url.raw_path
        shown = path if len(path) <= 100 else path[:100] + "..."
        if (routes := self._paths.get(path)) is None:
            raise GatewayError(404, "not_found", f"no such path: {shown}")
        method = "GET" if request.method == "HEAD" else request.method  # RFC 9110 9.3.2
        if method in routes:
            return path, routes[method]
        styles = {r.error_style for r in routes.values() if isinstance(r, Route)}
        allowed = ", ".join(sorted(routes.keys() | ({"HEAD"} if "GET" in routes else set())))
        message = f"{request.method} is not allowed on {shown}; allowed: {allowed}"
        style = styles.pop() if len(styles) == 1 else ErrorStyle.ERROR_CODE
        raise GatewayError(405, "method_not_allowed", message, {"Allow": allowed}, style=style)

    async def _call(self, route: Route, request: web.Request, request_id: str) -> web.Response:
        metadata = call_metadata(request.headers, request_id)
        seconds = self._deadline(request)
        end = asyncio.get_running_loop().time() + seconds
        body = await self._read_json(request, seconds) if route.body else {}
        message = build_request(route.request_class, body)
        left = end - asyncio.get_running_loop().time()  # the body's time came out of it
        options = self._options(request, metadata, left)
        try:
            reply, initial = await self._dispatcher.call(route.method, message, options)
        except grpc.aio.AioRpcError as failure:
            return rpc_error_response(failure, route.error_style, request_id)
        return json_response(message_to_json(reply), headers=response_headers(initial))

    def _deadline(self, request: web.Request) -> float:
        """Seconds the call may take: the gateway's timeout, or the client's shorter
        `Grpc-Timeout`. A login not checked within it is not checked at all."""
        raw = request.headers.get("Grpc-Timeout")
        if raw is None:
            return self._timeout
        if (match := _GRPC_TIMEOUT.fullmatch(raw.strip())) is None:
            raise bad_request("Grpc-Timeout must be 1 to 8 digits and a unit (H, M, S, m, u, n)")
        return min(self._timeout, int(match[1]) * _GRPC_TIMEOUT_UNITS[match[2]])

    def _options(self, request: web.Request, metadata: Metadata, seconds: float) -> CallOptions:
        """The call's options; its caller the TCP peer, or whom trusted proxies name."""
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        address = client_address(
            (peer[0], peer[1]) if isinstance(peer, tuple) else None,
            request.headers.getall(hdrs.X_FORWARDED_FOR, ()),
            request.headers.getall(hdrs.FORWARDED, ()),
            self._trusted_proxies,
        )
        return CallOptions(metadata, seconds, address, transport)

    async def _read_json(self, request: web.Request, seconds: float) -> Any:
        """The parsed JSON body, {} when empty; 408 if not in within `seconds`. A client gone
        mid-body cancels its handler; should the read see it first, 499 (for the access log)."""
        limit, unsupported = self.body_limit, "unsupported_media_type"
        too_large = f"the request body is larger than {limit} bytes"
        if (request.content_length or 0) > limit:
            raise GatewayError(413, "payload_too_large", too_large)
        # Refused unread, as grpc-gateway's net/http decodes none: aiohttp's decoders wait for
        # the deadline on an undecodable deflate body, and are where a decompression bomb goes off.
        coding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
        if coding not in ("identity", ""):
            raise GatewayError(415, unsupported, "send the request body without Content-Encoding")
        try:
            async with asyncio.timeout(seconds):
                raw = await request.read()  # at most client_max_size (the limit), however sent
        except TimeoutError:
            late = f"the request body did not arrive within {seconds:g} s"
            raise GatewayError(408, "request_timeout", late) from None
        except web.HTTPRequestEntityTooLarge:
            raise GatewayError(413, "payload_too_large", too_large) from None
        except ConnectionError:
            gone = "the client went away"
            raise GatewayError(CLIENT_CLOSED_REQUEST, "client_closed_request", gone) from None
        if not raw.strip(b" \t\r\n"):
            return {}
        given = request.headers.get(hdrs.CONTENT_TYPE, "").strip()
        mime, charset = request.content_type, (request.charset or "utf-8").lower()
        json_like = mime == "application/json" or re.fullmatch(r"application/.*\+json", mime)
        if given and (not json_like or charset not in ("utf-8", "utf8")):
            wanted = f"unsupported Content-Type {given!r}: send application/json (UTF-8)"
            raise GatewayError(415, unsupported, wanted)
        return parse_json(raw)

    async def _healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        check = health_pb2.HealthCheckRequest()
        options = self._options(request, (), self._ready_timeout)
        try:
            reply, _ = await self._dispatcher.call(HEALTH_CHECK, check, options)
        except grpc.aio.AioRpcError as failure:
            message = f"gRPC health check failed: {failure.code().name}"
        else:
            assert isinstance(reply, HealthCheckResponse)
            if reply.status == HealthCheckResponse.SERVING:
                return json_response({"status": "ok"})
            message = f"gRPC server is {HealthCheckResponse.ServingStatus.Name(reply.status)}"
        return json_response({"status": "unavailable", "message": message}, 503)


def response_headers(metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    """The HTTP headers a reply's initial metadata asks for: a servicer's Cache-Control only."""
    wanted = [v for k, v in metadata if k == "cache-control" and isinstance(v, str)]
    wanted = [v for v in wanted if _printable_ascii(v)]
    return {"Cache-Control": wanted[-1]} if wanted else {}


def call_metadata(headers: CIMultiDictProxy[str], request_id: str) -> Metadata:
    """The gRPC metadata of a request: its request id and Authorization header(s), nothing else;
    an Authorization that is not printable ASCII cannot be metadata: 400."""
    metadata = [("x-request-id", request_id)]
    for value in headers.getall(hdrs.AUTHORIZATION, []):
        if not _printable_ascii(value):
            raise bad_request("the Authorization header must be printable ASCII")
        metadata.append(("authorization", value))
    return tuple(metadata)


def _printable_ascii(value: str) -> bool:
    return all(" " <= char <= "~" for char in value)


def _request_id(request: web.Request) -> str:
    given = given_request_id(request.headers.get(REQUEST_ID_HEADER, "").strip())
    return uuid.uuid4().hex if given is None else given
