"""The only place an error becomes a gRPC status (AIP-193).

Each failure is a google.rpc.Status carrying exactly one ErrorInfo(reason, domain="authsvc"), plus
a RetryInfo when the caller should wait. Anything that is not an AuthError is a bug: it is logged
with the request id and the caller gets INTERNAL with no detail.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from service import request_context
from service.errors import ERROR_DOMAIN, AuthError, Reason

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Method = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def error_status(error: AuthError, request_id: str) -> grpc.Status:
    code = grpc.StatusCode[error.grpc_code]
    info = error_details_pb2.ErrorInfo(reason=error.reason.value, domain=ERROR_DOMAIN)
    details = [_pack(info)]
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(error.retry_after * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    return _Status(
        code=code,
        details=error.message,
        trailing_metadata=(
            (STATUS_DETAILS_KEY, status.SerializeToString()),
            (REQUEST_ID_KEY, request_id),
        ),
    )


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex


def rpc_method(method: Method[Req, Resp]) -> Method[Req, Resp]:
    """Wrap a servicer method: request id and deadline into the request context, errors into
    statuses."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        request_id = _request_id(context)
        request_context.request_id.set(request_id)
        remaining = context.time_remaining()
        if remaining is not None:
            request_context.deadline.set(time.monotonic() + remaining)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        try:
            return await method(self, request, context)
        except AuthError as error:
            failure = error
        except Exception:
            log.exception("unexpected error in %s (request id %s)", method.__name__, request_id)
            failure = AuthError(Reason.INTERNAL, "internal error")
        await context.abort_with_status(error_status(failure, request_id))
        raise AssertionError("abort_with_status returned")  # pragma: no cover

    return wrapper
