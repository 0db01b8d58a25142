"""The one error handler (grpc-gateway's `runtime/errors.go`): the only place a gRPC status, or
the gateway's own refusal, becomes HTTP: the status from `service.errors.HTTP_STATUS`, the body in
the route's style (`{"error_code", "message"}` or Densify's `{"status", "message"}`), the reason
from our `google.rpc.ErrorInfo`, `Retry-After` from a `RetryInfo`, a Basic challenge on 401. A
status without our ErrorInfo came from the gRPC library: its text may name internal addresses,
so the client gets a fixed message."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from multidict import CIMultiDict

from service.errors import DEADLINE_EXCEEDED_MESSAGE, ERROR_DOMAIN, HTTP_STATUS
from service.gateway.routes import ErrorStyle
from service.observability.http import REASON

log = logging.getLogger(__name__)

_dumps = partial(json.dumps, ensure_ascii=False, allow_nan=False)
BASIC_CHALLENGE = 'Basic realm="authsvc", charset="UTF-8"'
# What a client is told of a status with no ErrorInfo of ours (its text is for operators).
_LIBRARY_MESSAGES = {
    "CANCELLED": "the request was cancelled",
    "DEADLINE_EXCEEDED": DEADLINE_EXCEEDED_MESSAGE,
    "UNAVAILABLE": "the service is unavailable; try again later",
    "UNIMPLEMENTED": "this operation is not implemented by the service",
    "RESOURCE_EXHAUSTED": "the request is too large or the service is overloaded",
}


class GatewayError(Exception):
    """A refusal decided by the gateway itself (no route, bad JSON, body too large, ...)."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        style: ErrorStyle | None = None,  # the body style, when known where the error is raised
    ) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.headers, self.style = dict(headers or {}), style


def bad_request(message: str) -> GatewayError:
    return GatewayError(400, "invalid_argument", message)


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Every body of the gateway: JSON, UTF-8, not cached (replies carry tokens) unless
    `headers` say otherwise."""
    merged = CIMultiDict({"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
    merged.update(headers or {})
    return web.json_response(body, status=status, headers=merged, dumps=_dumps)


def error_response(
    status: int,
    reason: str,
    message: str,
    style: ErrorStyle,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"error_code": reason, "message": message}
    if style is ErrorStyle.STATUS:
        body = {"status": status, "message": message}
    challenge = {"WWW-Authenticate": BASIC_CHALLENGE} if status == 401 else {}
    response = json_response(body, status, {**(headers or {}), **challenge})
    response[REASON] = reason  # for the access line, whatever the body's style
    return response


def rpc_error_response(
    failure: grpc.aio.AioRpcError, style: ErrorStyle, request_id: str
) -> web.Response:
    """The HTTP answer for a failed gRPC call."""
    code = failure.code().name
    http_status = HTTP_STATUS.get(code, 500)
    reason, message = code.lower(), _LIBRARY_MESSAGES.get(code, "internal error")
    headers = {}
    try:
        status = rpc_status.from_call(failure)
    except (ValueError, TypeError, DecodeError):  # not a status, or not this call's
        status = None
    for detail in status.details if status is not None else ():
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN and info.reason:
            reason, message = info.reason.lower(), status.message or failure.details() or ""
        elif detail.Unpack(retry):
            seconds = math.ceil(retry.retry_delay.ToNanoseconds() / 1e9)
            headers["Retry-After"] = str(max(0, seconds))
    if http_status >= 500:
        log.warning("gRPC call failed: %s %r (request id %s)", code, failure.details(), request_id)
    return error_response(http_status, reason, message, style, headers)
