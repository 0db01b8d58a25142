"""The only place a gRPC status (or a gateway-level failure) becomes an HTTP answer.

The HTTP status comes from `service.errors.HTTP_STATUS` (grpc-gateway's HTTPStatusFromCode). The
body depends on the route's error body style (the `authsvc.v1.error_body_style` method option):
`{"error_code": reason in lower case, "message": text}` (Redis Enterprise) or
`{"status": N, "message": text}` (Densify). The reason is the status's single
`google.rpc.ErrorInfo` from our domain; a status without one was made by the gRPC library (server
unreachable, deadline, ...) and gets a fixed message, never the library's text, which may name
internal addresses. Every 401 carries a Basic challenge; a `google.rpc.RetryInfo` becomes
`Retry-After` in whole seconds, rounded up.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from service.errors import ERROR_DOMAIN, HTTP_STATUS
from service.gateway.routes import ErrorStyle

log = logging.getLogger(__name__)

STATUS_DETAILS_KEY = "grpc-status-details-bin"
BASIC_CHALLENGE = 'Basic realm="authsvc", charset="UTF-8"'
JSON_CONTENT_TYPE = "application/json"

# What a client is told when the status carries no ErrorInfo of ours (it came from the gRPC
# library or the network, and its own text is for operators, not for clients).
_LIBRARY_MESSAGES = {
    "CANCELLED": "the request was cancelled",
    "DEADLINE_EXCEEDED": "the service did not answer in time",
    "UNAVAILABLE": "the service is unavailable; try again later",
    "UNIMPLEMENTED": "this operation is not implemented by the service",
    "RESOURCE_EXHAUSTED": "the request is too large or the service is overloaded",
}
_DEFAULT_LIBRARY_MESSAGE = "internal error"


class GatewayError(Exception):
    """A failure decided by the gateway itself (no route, bad JSON, body too large, ...)."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        style: ErrorStyle | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = dict(headers or {})
        self.style = style  # the body style, when known where the error is raised


def bad_request(message: str) -> GatewayError:
    return GatewayError(400, "invalid_argument", message)


@dataclass(frozen=True)
class RpcFailure:
    """What the gateway needs from a failed call."""

    code: str  # grpc.StatusCode name, e.g. "UNAUTHENTICATED"
    details: str | None
    trailing_metadata: Iterable[tuple[str, str | bytes]]


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Every response body of the gateway is written here: JSON, UTF-8."""
    text = json.dumps(body, ensure_ascii=False, allow_nan=False)
    response = web.Response(
        text=text, status=status, content_type=JSON_CONTENT_TYPE, charset="utf-8"
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(
    status: int,
    reason: str,
    message: str,
    style: ErrorStyle,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any]
    if style is ErrorStyle.STATUS:
        body = {"status": status, "message": message}
    else:
        body = {"error_code": reason, "message": message}
    all_headers = dict(headers or {})
    if status == 401:
        all_headers["WWW-Authenticate"] = BASIC_CHALLENGE
    return json_response(body, status, all_headers)


def gateway_error_response(error: GatewayError, style: ErrorStyle) -> web.Response:
    """The answer for a gateway-level failure, in the error's own style if it has one."""
    return error_response(
        error.status, error.reason, error.message, error.style or style, error.headers
    )


def internal_error_response(style: ErrorStyle) -> web.Response:
    return error_response(500, "internal", "internal error", style)


def rpc_error_response(failure: RpcFailure, style: ErrorStyle, request_id: str) -> web.Response:
    """The HTTP answer for a failed gRPC call."""
    status = HTTP_STATUS.get(failure.code, 500)
    reason, message, retry_after = _decode_status(failure)
    if reason is None:
        reason = failure.code.lower()
        message = _LIBRARY_MESSAGES.get(failure.code, _DEFAULT_LIBRARY_MESSAGE)
    if status >= 500:
        log.warning(
            "gRPC call failed: %s %r (request id %s)", failure.code, failure.details, request_id
        )
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return error_response(status, reason, message or failure.details or "", style, headers)


def _decode_status(failure: RpcFailure) -> tuple[str | None, str | None, int | None]:
    """(reason in lower case, message, Retry-After seconds) from the status details, if any."""
    raw = next(
        (
            v
            for k, v in failure.trailing_metadata
            if k == STATUS_DETAILS_KEY and isinstance(v, bytes)
        ),
        None,
    )
    if raw is None:
        return None, None, None
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except DecodeError:
        return None, None, None
    reason: str | None = None
    retry_after: int | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN and info.reason:
                reason = info.reason.lower()
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
            retry_after = max(0, math.ceil(delay))
    if reason is None:
        return None, None, retry_after
    return reason, status.message or failure.details, retry_after
