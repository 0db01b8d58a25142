"""How the gateway reaches the servicers: in process, or over a gRPC channel (grpc-gateway's
`Register...HandlerServer` and `Register...HandlerFromEndpoint`).

`authsvc serve` dispatches in process: the servicer's method is awaited with an
`InProcessContext` (the part of `grpc.aio.ServicerContext` the servicers use, with its semantics),
in a task of its own (its own context variables, as each gRPC call has), cancelled at the
deadline. `authsvc gateway --grpc-target` calls a server elsewhere over a channel and tells it
the client's address in `x-forwarded-for` metadata. Either way a failure is an `RpcFailure`
(code, details, trailing metadata) for errors.py, so both answer alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from service.client_address import ClientAddress
from service.gateway.errors import RpcFailure
from service.observability import tracing

log = logging.getLogger(__name__)

Metadata = tuple[tuple[str, str | bytes], ...]
Methods = Mapping[str, tuple[type[Message], type[Message]]]  # path -> request, reply classes
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_CLASSES = (health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse)
# Come back quickly after the server restarts; the default backoff reaches two minutes.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
)


@dataclass(frozen=True, slots=True)
class Caller:
    """The REST client: its address (None if not an IP peer) and its HTTP connection."""

    address: ClientAddress | None
    transport: asyncio.BaseTransport | None


class Dispatcher(Protocol):
    async def open(self, methods: Methods) -> None: ...

    async def close(self) -> None: ...

    async def call(
        self, path: str, request: Message, metadata: Metadata, seconds: float, caller: Caller
    ) -> tuple[Message, Metadata]:
        """The reply and its initial metadata within `seconds`; `RpcFailure` otherwise."""
        ...


class ChannelDispatcher:
    """Calls over a gRPC channel to `target` (TLS with `credentials`, plaintext without)."""

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target, self._credentials = target, credentials
        self._options = (*_CHANNEL_OPTIONS, *channel_options)
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[str, Any] = {}

    def __str__(self) -> str:
        return f"gRPC {self.target}"

    async def open(self, methods: Methods) -> None:
        if self._credentials is None:
            channel = grpc.aio.insecure_channel(self.target, options=self._options)
        else:
            channel = grpc.aio.secure_channel(self.target, self._credentials, options=self._options)
        self._channel = channel
        self._calls = {
            path: channel.unary_unary(path, request.SerializeToString, reply.FromString)
            for path, (request, reply) in methods.items()
        }

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def call(
        self, path: str, request: Message, metadata: Metadata, seconds: float, caller: Caller
    ) -> tuple[Message, Metadata]:
        if caller.address is not None:  # the address the gateway resolved, never the header;
            # the server believes it only from a peer among its trusted proxies
            metadata = (*metadata, ("x-forwarded-for", str(caller.address.ip)))
        call = self._calls[path](request, metadata=tracing.inject(metadata), timeout=seconds)
        try:
            reply = await call
            initial = await call.initial_metadata()
        except grpc.aio.AioRpcError as exc:
            trailing = exc.trailing_metadata() or ()
            raise RpcFailure(exc.code().name, exc.details(), trailing) from None
        return reply, tuple(initial or ())


Handler = Callable[[Message, "InProcessContext"], Any]


class InProcessDispatcher:
    """Awaits the servicers' methods directly. `servicers` maps a service's full proto name
    (`authsvc.v1.AuthService`, `grpc.health.v1.Health`) to the object whose methods, named as
    the RPCs, serve it, as the gRPC server has them registered."""

    def __init__(self, servicers: Mapping[str, object]) -> None:
        self._servicers = dict(servicers)
        self._handlers: dict[str, Handler] = {}

    def __str__(self) -> str:
        return "in-process servicers"

    async def open(self, methods: Methods) -> None:
        self._handlers = {}
        for path in methods:
            service, _, name = path[1:].partition("/")
            if callable(handler := getattr(self._servicers.get(service), name, None)):
                self._handlers[path] = handler

    async def close(self) -> None:
        self._handlers = {}

    async def call(
        self, path: str, request: Message, metadata: Metadata, seconds: float, caller: Caller
    ) -> tuple[Message, Metadata]:
        handler = self._handlers.get(path)
        if handler is None:  # as a gRPC server answers for a service it does not have
            raise RpcFailure("UNIMPLEMENTED", "Method not found!", ())
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        # With tracing on, the REST span's traceparent crosses the hop in the metadata, and the
        # call has its server span, as the gRPC server's interceptor gives a network call.
        context = InProcessContext(tracing.inject(metadata), end, caller)
        deadline = asyncio.timeout_at(end)
        try:
            async with deadline:  # a cancelled wait cancels the task, and waits for it
                call = tracing.in_process(_serve(handler, request, context, path), path, context)
                reply = await loop.create_task(call)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise RpcFailure("DEADLINE_EXCEEDED", "Deadline Exceeded", ()) from None
        except InProcessAbort as abort:
            raise RpcFailure(abort.code.name, abort.details, abort.trailing_metadata) from None
        return reply, context.sent_initial_metadata


async def _serve(handler: Handler, request: Message, context: InProcessContext, path: str) -> Any:
    """One call as grpc.aio runs it: a reply is OK unless the servicer set another code; an
    exception but an abort is logged and becomes UNKNOWN (or the code the servicer set)."""
    try:
        reply = await handler(request, context)
    except InProcessAbort:
        raise
    except Exception as exc:
        log.exception("Unexpected [%s] raised by servicer method [%s]", type(exc).__name__, path)
        code = context.code() or grpc.StatusCode.UNKNOWN
        code = grpc.StatusCode.UNKNOWN if code is grpc.StatusCode.OK else code
        details = f"Unexpected {type(exc)}: {exc}"
        raise InProcessAbort(code, details, context.trailing_metadata()) from None
    code = context.code()
    if code is not None and code is not grpc.StatusCode.OK:
        raise InProcessAbort(code, context.details() or "", context.trailing_metadata())
    return reply


class InProcessAbort(Exception):
    """A servicer ended its call with a status (grpc.aio's `AbortError`)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Metadata) -> None:
        super().__init__(code, details)
        self.code, self.details, self.trailing_metadata = code, details, trailing_metadata


class InProcessContext:
    """One in-process call's context. `peer()` is the REST client as gRPC names a peer,
    `auth_context()` its TLS certificate as gRPC reports one."""

    in_process = True  # the call came through the gateway, which logs it (observability/calls.py)

    def __init__(self, metadata: Metadata, deadline: float, caller: Caller) -> None:
        self._metadata, self._deadline, self._caller = metadata, deadline, caller
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._trailing: Metadata = ()
        self.sent_initial_metadata: Metadata = ()

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return self._caller.address.grpc_peer() if self._caller.address else "unknown"

    def auth_context(self) -> dict[str, list[bytes]]:
        transport = self._caller.transport
        return auth_context(transport.get_extra_info("peercert") if transport else None)

    def time_remaining(self) -> float:
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def send_initial_metadata(self, initial_metadata: Sequence[tuple[str, Any]]) -> None:
        self.sent_initial_metadata = tuple(initial_metadata)

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, Any]]) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str | None:
        return self._details

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()
    ) -> NoReturn:
        # As grpc.aio: empty trailing metadata keeps what set_trailing_metadata set.
        raise InProcessAbort(code, details, tuple(trailing_metadata) or self._trailing)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)


def auth_context(peercert: Any) -> dict[str, list[bytes]]:
    """What grpc's `ServicerContext.auth_context()` gives for a verified TLS client certificate
    (`ssl.SSLSocket.getpeercert()`), {} when there is none."""
    if not peercert:
        return {}
    subject = peercert.get("subject", ())
    names = [value.encode() for rdn in subject for key, value in rdn if key == "commonName"]
    sans = [value.encode() for _, value in peercert.get("subjectAltName", ())]
    context = {"transport_security_type": [b"ssl"]}
    if names:
        context["x509_common_name"] = names
    if sans:
        context["x509_subject_alternative_name"] = sans
    return context
