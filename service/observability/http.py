"""The REST gateway's line per request and its metrics, as aiohttp's access logger (called once
per answered request, after the answer: no middleware layer on the request path)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from service.observability import logs, metrics

# The path of the route the gateway matched (`/v1/users/authorize`), or of a built-in; set by the
# gateway, read here. Never the request's own path, which is unbounded and may carry a query.
ROUTE = web.RequestKey("authsvc_route", str)
UNMATCHED = "unmatched"
# An error answer's reason (`invalid_credentials`), whatever its body style; set where the body
# is written (gateway/errors.py), read here.
REASON = web.ResponseKey("authsvc_reason", str)


class AccessLogger(AbstractAccessLogger):
    """One `authsvc.access` line and the HTTP metrics for each request."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        route = request.get(ROUTE, UNMATCHED)
        metrics.observe_http(route, request.method, response.status, time)
        logs.log_call(
            "http",
            f"{request.method} {route}",
            str(response.status),
            response.get(REASON, "").upper() or None,
            time,
            response.headers.get("X-Request-Id", ""),
            request.remote or "unknown",
        )
