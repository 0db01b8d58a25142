"""The only place an error becomes a gRPC status (AIP-193).

Each failure is a google.rpc.Status carrying exactly one ErrorInfo(reason, domain="authsvc"), plus
a RetryInfo when the caller should wait; grpcio-status (`rpc_status.to_status`) puts it into the
trailing metadata. Anything that is not an AuthError is a bug: it is logged
with the request id and the caller gets INTERNAL with no detail.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from service import request_context
from service.errors import ERROR_DOMAIN, AuthError, Reason, invalid_argument
from service.observability import calls
from service.request_context import REQUEST_ID_KEY, given_request_id

log = logging.getLogger(__name__)

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
    status = status_pb2.Status(code=code.value[0], message=error.message)
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason=error.reason.value, domain=ERROR_DOMAIN)
    )
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(error.retry_after * 1000))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = rpc_status.to_status(status)
    return _Status(
        code=packed.code,
        details=packed.details,
        trailing_metadata=(*packed.trailing_metadata, (REQUEST_ID_KEY, request_id)),
    )


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's `x-request-id` (as `given_request_id` takes one), else a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and (given := given_request_id(value)) is not None:
            return given
    return uuid.uuid4().hex


# The server stops waiting for the database this share of the caller's time before its deadline
# (at most DEADLINE_MARGIN_MAX seconds), so the caller is answered (DEADLINE_EXCEEDED: its time
# ran out before the database's timeout did) while it still listens, instead of only seeing its
# deadline pass.
DEADLINE_MARGIN_SHARE = 0.2
DEADLINE_MARGIN_MAX = 0.5


def set_deadline(context: grpc.aio.ServicerContext) -> None:
    """Put the call's deadline, less the margin, into the request context for the store."""
    remaining = context.time_remaining()
    if remaining is not None:
        margin = min(remaining * DEADLINE_MARGIN_SHARE, DEADLINE_MARGIN_MAX)
        request_context.deadline.set(time.monotonic() + remaining - margin)


def rpc_method(method: Method[Req, Resp]) -> Method[Req, Resp]:
    """Wrap a servicer method: request id and deadline into the request context, errors into
    statuses."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        started = time.perf_counter()
        call = calls.started(type(self), method.__name__)
        request_id = request_id_of(context)
        request_context.request_id.set(request_id)
        set_deadline(context)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        try:
            reply = await method(self, request, context)
        except AuthError as error:
            failure = error
        except asyncio.CancelledError:
            call.ended(context, request_id, "CANCELLED", None, started)
            raise
        except Exception:
            log.exception("unexpected error in %s (request id %s)", method.__name__, request_id)
            failure = AuthError(Reason.INTERNAL, "internal error")
        else:
            call.ended(context, request_id, "OK", None, started)
            return reply
        call.ended(context, request_id, failure.grpc_code, failure.reason.value, started)
        await context.abort_with_status(error_status(failure, request_id))
        raise AssertionError("abort_with_status returned")  # pragma: no cover

    return wrapper


class _Malformed:
    """Stands in for a request whose bytes did not parse, until the handler refuses it."""


_MALFORMED = _Malformed()


def lenient_handler(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` such that bytes that are not a valid request message answer INVALID_ARGUMENT.

    grpcio turns a failing request deserializer into UNKNOWN with the exception's class and
    text, and logs a traceback as for a bug. Here the deserializer of a unary-request method
    keeps the failure as a marker instead, and the wrapped handler refuses it like any other
    bad input: one log line, and the status `error_status` builds. Wrapped once, at
    registration (`rpc/server.py`), not per call as a server interceptor would.
    """
    if handler.request_streaming or handler.request_deserializer is None:
        return handler
    parse = handler.request_deserializer

    def lenient(data: bytes) -> object:
        try:
            return parse(data)
        except DecodeError:
            return _MALFORMED

    if handler.response_streaming:
        unary_stream = _refusing_stream(method, handler.unary_stream)
        if unary_stream is None:
            return handler
        return handler._replace(request_deserializer=lenient, unary_stream=unary_stream)
    unary = handler.unary_unary

    async def unary_unary(request: object, context: grpc.aio.ServicerContext) -> Any:
        if request is _MALFORMED:
            await _refuse_malformed(method, context)
        return await unary(request, context)

    return handler._replace(request_deserializer=lenient, unary_unary=unary_unary)


def _refusing_stream(method: str, stream: Any) -> Any:
    """`stream` refusing the marker first, of the same kind (grpcio dispatches on whether a
    handler is a coroutine or an async generator function); None for a kind grpc.aio servicers
    do not use here."""
    if inspect.isasyncgenfunction(stream):

        async def generator(request: object, context: grpc.aio.ServicerContext) -> Any:
            if request is _MALFORMED:
                await _refuse_malformed(method, context)
            async for reply in stream(request, context):
                yield reply

        return generator
    if inspect.iscoroutinefunction(stream):

        async def writer(request: object, context: grpc.aio.ServicerContext) -> Any:
            if request is _MALFORMED:
                await _refuse_malformed(method, context)
            return await stream(request, context)

        return writer
    return None


async def _refuse_malformed(method: str, context: grpc.aio.ServicerContext) -> None:
    request_id = request_id_of(context)
    log.warning("malformed request message to %s (request id %s)", method, request_id)
    error = invalid_argument("the request is not a valid message for this method")
    await context.abort_with_status(error_status(error, request_id))
