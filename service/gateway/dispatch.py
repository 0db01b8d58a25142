"""How the gateway reaches the servicers: in process, or over a gRPC channel.

grpc-gateway offers the same two (`Register...HandlerServer` and `Register...HandlerFromEndpoint`).
`authsvc serve` dispatches in process: the gateway awaits the servicer's method itself with an
`InProcessContext`, in a task of its own (its own context variables, as each gRPC call has),
cancelled at the deadline as gRPC would. `authsvc gateway --grpc-target` calls a server elsewhere
over a channel, and tells it the client's address in `x-forwarded-for` metadata. Either way a
failure is an `RpcFailure` (code, details, trailing metadata), which `errors.py` turns into HTTP,
so both answer alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from service.gateway.client_address import ClientAddress
from service.gateway.context import InProcessAbort, InProcessContext, Metadata
from service.gateway.errors import RpcFailure
from service.observability import tracing

log = logging.getLogger(__name__)

FORWARDED_FOR_KEY = "x-forwarded-for"
_CHANNEL_OPTIONS = (
    # Come back quickly after the server restarts; the default backoff reaches two minutes.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
)


@dataclass(frozen=True)
class RpcMethod:
    """One unary method the gateway calls: `/package.Service/Method` and its message classes."""

    path: str
    request_class: type[Message]
    response_class: type[Message]

    @property
    def service(self) -> str:
        return self.path[1:].partition("/")[0]

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]


HEALTH_CHECK = RpcMethod(
    f"/{health_pb2.DESCRIPTOR.services_by_name['Health'].full_name}/Check",
    health_pb2.HealthCheckRequest,
    health_pb2.HealthCheckResponse,
)


@dataclass(frozen=True, slots=True)
class Caller:
    """The REST client: its address (None if not an IP peer) and its HTTP connection."""

    address: ClientAddress | None
    transport: asyncio.BaseTransport | None


class CallFailed(Exception):
    """The call ended with a status other than OK."""

    def __init__(self, failure: RpcFailure) -> None:
        super().__init__(failure.code)
        self.failure = failure


class Dispatcher(Protocol):
    async def open(self, methods: Sequence[RpcMethod]) -> None: ...

    async def close(self) -> None: ...

    async def call(
        self, path: str, request: Message, metadata: Metadata, seconds: float, caller: Caller
    ) -> tuple[Message, Metadata]:
        """The reply and its initial metadata, within `seconds` (the deadline); `CallFailed`
        otherwise."""
        ...


class ChannelDispatcher:
    """Calls over a gRPC channel to `target` (TLS with `credentials`, plaintext without)."""

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self._credentials = credentials
        self._options = (*_CHANNEL_OPTIONS, *channel_options)
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[str, Any] = {}

    def __str__(self) -> str:
        return f"gRPC {self.target}"

    async def open(self, methods: Sequence[RpcMethod]) -> None:
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
        else:
            self._channel = grpc.aio.secure_channel(
                self.target, self._credentials, options=self._options
            )
        self._calls = {
            method.path: self._channel.unary_unary(
                method.path,
                request_serializer=method.request_class.SerializeToString,
                response_deserializer=method.response_class.FromString,
            )
            for method in methods
        }

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def call(
        self, path: str, request: Message, metadata: Metadata, seconds: float, caller: Caller
    ) -> tuple[Message, Metadata]:
        if caller.address is not None:
            # The address the gateway resolved, never the client's own header; the server
            # believes it only from a peer in its trusted proxies.
            metadata = (*metadata, (FORWARDED_FOR_KEY, str(caller.address.ip)))
        call = self._calls[path](request, metadata=tracing.inject(metadata), timeout=seconds)
        try:
            reply = await call
            initial = await call.initial_metadata()
        except grpc.aio.AioRpcError as exc:
            failure = RpcFailure(exc.code().name, exc.details(), exc.trailing_metadata() or ())
            raise CallFailed(failure) from None
        return reply, tuple(initial or ())


Handler = Callable[[Message, InProcessContext], Any]


class InProcessDispatcher:
    """Awaits the servicers' methods directly. `servicers` maps a service's full proto name
    (`authsvc.v1.AuthService`, `grpc.health.v1.Health`) to the object whose methods, named as
    the RPCs, serve it, as the gRPC server has them registered."""

    def __init__(self, servicers: Mapping[str, object]) -> None:
        self._servicers = dict(servicers)
        self._handlers: dict[str, Handler] = {}

    def __str__(self) -> str:
        return "in-process servicers"

    async def open(self, methods: Sequence[RpcMethod]) -> None:
        handlers = {}
        for method in methods:
            handler = getattr(self._servicers.get(method.service), method.name, None)
            if callable(handler):
                handlers[method.path] = handler
        self._handlers = handlers

    async def close(self) -> None:
        self._handlers = {}

    async def call(
        self, path: str, request: Message, metadata: Metadata, seconds: float, caller: Caller
    ) -> tuple[Message, Metadata]:
        handler = self._handlers.get(path)
        if handler is None:  # as a gRPC server answers for a service it does not have
            raise CallFailed(RpcFailure("UNIMPLEMENTED", "Method not found!", ()))
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        # With tracing on, the REST span's traceparent crosses the hop in the metadata, and the
        # call has its server span, as the gRPC server's interceptor gives a network call.
        context = InProcessContext(tracing.inject(metadata), end, caller.address, caller.transport)
        task = loop.create_task(
            tracing.in_process(_serve(handler, request, context, path), path, context)
        )
        deadline = asyncio.timeout_at(end)
        try:
            async with deadline:
                reply = await task  # a cancelled wait cancels the task, and waits for it
        except TimeoutError:
            if not deadline.expired():
                raise
            context.finish(cancelled=True)
            raise CallFailed(RpcFailure("DEADLINE_EXCEEDED", "Deadline Exceeded", ())) from None
        except InProcessAbort as abort:
            failure = RpcFailure(abort.code.name, abort.details, abort.trailing_metadata)
            raise CallFailed(failure) from None
        return reply, context.initial_metadata()


async def _serve(handler: Handler, request: Message, context: InProcessContext, path: str) -> Any:
    """One call as the grpc.aio server runs it: a returned reply is OK unless the servicer set
    another code; an exception other than an abort is logged and becomes UNKNOWN (or the code
    the servicer set)."""
    try:
        reply = await handler(request, context)
    except InProcessAbort:
        raise
    except Exception as exc:
        log.exception("Unexpected [%s] raised by servicer method [%s]", type(exc).__name__, path)
        code = context.code()
        if code is None or code is grpc.StatusCode.OK:
            code = grpc.StatusCode.UNKNOWN
        raise InProcessAbort(
            code, f"Unexpected {type(exc)}: {exc}", context.trailing_metadata()
        ) from None
    finally:
        context.finish()
    code = context.code()
    if code is not None and code is not grpc.StatusCode.OK:
        raise InProcessAbort(code, context.details() or "", context.trailing_metadata())
    return reply
