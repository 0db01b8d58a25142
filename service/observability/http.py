"""The REST gateway's line per request and its metrics, as aiohttp's access logger (called once
per answered request, after the answer: no middleware layer on the request path)."""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from service.observability import logs, metrics

# The route template the gateway matched (`/v1/users/authorize`), or a built-in path; set by the
# gateway, read here. Never the raw path, which is unbounded and may carry a query.
ROUTE = web.RequestKey("authsvc_route", str)
UNMATCHED = "unmatched"


class AccessLogger(AbstractAccessLogger):
    """One `authsvc.access` line and the HTTP metrics for each request."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        route = request.get(ROUTE, UNMATCHED)
        metrics.observe_http(route, request.method, response.status, time)
        logs.log_call(
            "http",
            f"{request.method} {route}",
            str(response.status),
            _reason(response),
            time,
            response.headers.get("X-Request-Id", ""),
            request.remote or "unknown",
        )


def _reason(response: StreamResponse) -> str | None:
    """The error body's `error_code` (the reason in lower case), upper-cased as on gRPC."""
    if response.status < 400 or not isinstance(response, web.Response):
        return None
    body = response.body
    if not isinstance(body, bytes) or len(body) > 4096:
        return None
    try:
        code = json.loads(body).get("error_code")
    except (ValueError, AttributeError):
        return None
    return code.upper() if isinstance(code, str) else None
