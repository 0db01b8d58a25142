"""How the gateway reaches the servicers (grpc-gateway's `Register...HandlerServer` and
`...HandlerFromEndpoint`): in process for `authsvc serve`, each call a task of its own (its own
context variables, as each gRPC call has) running service/rpc/in_process.py; over a channel for
`authsvc gateway`. Either way a failure is grpc.aio's `AioRpcError`, so both answer alike."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from service.client_address import ClientAddress
from service.observability import tracing
from service.rpc.in_process import InProcessAbort, InProcessContext, serve

Metadata = tuple[tuple[str, str | bytes], ...]
# Come back quickly after the server restarts; the default backoff reaches two minutes.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
)


@dataclass(frozen=True, slots=True)
class CallOptions:
    """A call's metadata and seconds to run, and the REST client that makes it: its address
    (None if not an IP peer) and its HTTP connection."""

    metadata: Metadata
    seconds: float
    address: ClientAddress | None
    transport: asyncio.BaseTransport | None


class Dispatcher(abc.ABC):
    """How the gateway reaches the servicers: opened before the first call, closed after."""

    async def open(self) -> None:  # noqa: B027 - a hook: in process, nothing to open
        pass

    async def close(self) -> None:  # noqa: B027 - likewise
        pass

    @abc.abstractmethod
    async def call(
        self, method: MethodDescriptor, request: Message, options: CallOptions
    ) -> tuple[Message, Metadata]:
        """The reply and its initial metadata in time; `AioRpcError` otherwise."""


def grpc_path(method: MethodDescriptor) -> str:
    """The method's path in gRPC's wire format: `/authsvc.v1.AuthService/Authorize`."""
    return f"/{method.containing_service.full_name}/{method.name}"


def rpc_failure(
    code: grpc.StatusCode, details: str, trailing: Iterable[tuple[str, str | bytes]] = ()
) -> grpc.aio.AioRpcError:
    """A failed call as grpc.aio raises it, for one that did not go over a channel."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


class ChannelDispatcher(Dispatcher):
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

    def __str__(self) -> str:
        return f"gRPC {self.target}"

    async def open(self) -> None:
        if self._credentials is None:
            channel = grpc.aio.insecure_channel(self.target, options=self._options)
        else:
            channel = grpc.aio.secure_channel(self.target, self._credentials, options=self._options)
        self._channel = channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def call(
        self, method: MethodDescriptor, request: Message, options: CallOptions
    ) -> tuple[Message, Metadata]:
        assert self._channel is not None, "open() first"
        reply_class = message_factory.GetMessageClass(method.output_type)
        serialize = type(request).SerializeToString
        stub = self._channel.unary_unary(grpc_path(method), serialize, reply_class.FromString)
        metadata = options.metadata
        if options.address is not None:  # the address the gateway resolved, never the header;
            # the server believes it only from a peer among its trusted proxies
            metadata = (*metadata, ("x-forwarded-for", str(options.address.ip)))
        call = stub(request, metadata=tracing.inject(metadata), timeout=options.seconds)
        reply = await call
        return reply, tuple(await call.initial_metadata() or ())


class InProcessDispatcher(Dispatcher):
    """Awaits the servicers' methods directly. `servicers` maps a service's full proto name
    (`authsvc.v1.AuthService`, `grpc.health.v1.Health`) to the object whose methods, named as
    the RPCs, serve it, as the gRPC server has them registered."""

    def __init__(self, servicers: Mapping[str, object]) -> None:
        self._servicers = dict(servicers)

    def __str__(self) -> str:
        return "in-process servicers"

    async def call(
        self, method: MethodDescriptor, request: Message, options: CallOptions
    ) -> tuple[Message, Metadata]:
        servicer = self._servicers.get(method.containing_service.full_name)
        if not callable(handler := getattr(servicer, method.name, None)):
            # as a gRPC server answers for a method it does not have
            raise rpc_failure(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        loop = asyncio.get_running_loop()
        end = loop.time() + options.seconds
        # With tracing on, the REST span's traceparent crosses the hop in the metadata, and the
        # call has its server span, as the gRPC server's interceptor gives a network call.
        peer = options.address.grpc_peer() if options.address else "unknown"
        transport = options.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        context = InProcessContext(tracing.inject(options.metadata), end, peer, peercert)
        path = grpc_path(method)
        try:
            async with asyncio.timeout_at(end):  # cancelled, it cancels the task and waits for it
                call = tracing.in_process(serve(handler, request, context, path), path, context)
                reply = await loop.create_task(call)
        except TimeoutError:  # the deadline's: serve() turns the servicer's own into UNKNOWN
            raise rpc_failure(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except InProcessAbort as abort:
            raise rpc_failure(abort.code, abort.details, abort.trailing_metadata) from None
        return reply, context.sent_initial_metadata
