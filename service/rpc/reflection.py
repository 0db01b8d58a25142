"""gRPC server reflection, so that grpcurl, grpcui and Postman list, describe and call every
service with no proto files at hand.

grpcio-reflection serves `grpc.reflection.v1alpha.ServerReflection`. Current clients (grpcurl
since 1.8.8, Postman) ask for `grpc.reflection.v1` first; grpcio-reflection does not ship it yet,
but v1 is v1alpha renamed, message for message and field number for field number (the gRPC
project says so in reflection.proto). So the same servicer answers both names: on the v1 path
its v1alpha messages are the very bytes a v1 client expects. The v1 file is added to the
descriptor pool (v1alpha's, renamed) so that v1 too can be described.

protobuf's upb pool does not find a method by its full name (`FindFileContainingSymbol(
"authsvc.v1.AuthService.Authorize")` is a KeyError, while grpcurl's `describe` of a method asks
exactly that), so the servicer reads the pool through `_MethodAwarePool`, which falls back to
`FindMethodByName`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

from service.observability import calls
from service.rpc.status import request_id_of

V1ALPHA_SERVICE = reflection.SERVICE_NAME
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_METHOD = "ServerReflectionInfo"


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """Put grpc/reflection/v1/reflection.proto into `pool`, built from v1alpha's file."""
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    old = reflection_pb2.DESCRIPTOR.package
    file.name = _V1_FILE
    file.package = V1_PACKAGE
    file.ClearField("options")
    for message in file.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(f".{old}.", f".{V1_PACKAGE}.")
    for service in file.service:
        for method in service.method:
            method.input_type = method.input_type.replace(f".{old}.", f".{V1_PACKAGE}.")
            method.output_type = method.output_type.replace(f".{old}.", f".{V1_PACKAGE}.")
    pool.Add(file)


class _MethodAwarePool:
    """The default pool, whose file-containing-symbol look-up also finds methods."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            return self._pool.FindMethodByName(symbol).containing_service.file


# ServerReflectionRequest in, ServerReflectionResponse out (their stubs carry no types).
Info = Callable[[AsyncIterable[Any], grpc.aio.ServicerContext], AsyncIterator[Any]]


def _observed(service: str, info: Info) -> Info:
    """`info` counted and logged as every RPC is (a stream, under `service`'s name)."""

    async def observed(
        requests: AsyncIterable[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        with calls.stream(service, _METHOD, "bidi_stream", context, lambda: request_id_of(context)):
            async for reply in info(requests, context):
                yield reply

    return observed


def enable_reflection(server: grpc.aio.Server, services: Iterable[str]) -> None:
    """Serve reflection (v1 and v1alpha) on `server` for `services` and for itself."""
    pool = descriptor_pool.Default()
    _add_v1_descriptor(pool)
    names = (*services, V1_SERVICE, V1ALPHA_SERVICE)
    servicer = reflection.aio.ReflectionServicer(names, pool=_MethodAwarePool(pool))
    for service in (V1ALPHA_SERVICE, V1_SERVICE):
        handler = grpc.stream_stream_rpc_method_handler(
            _observed(service, servicer.ServerReflectionInfo),
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {_METHOD: handler}),)
        )
