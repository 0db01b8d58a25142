"""Server reflection: a client with no proto files lists, describes and calls every service, over
grpc.reflection.v1alpha (grpcio-reflection's own client) and grpc.reflection.v1."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from service.observability import metrics

SERVICES = {
    "authsvc.v1.AuthService",
    "authsvc.v1.PasswordService",
    "authsvc.v1.TokenService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


def _reflect(target: str) -> tuple[list[str], descriptor_pool.DescriptorPool, grpc.Channel]:
    channel = grpc.insecure_channel(target)
    database = ProtoReflectionDescriptorDatabase(channel)
    return list(database.get_services()), descriptor_pool.DescriptorPool(database), channel


async def test_v1alpha_lists_every_service(grpc_target: str) -> None:
    """grpcio-reflection's client lists the authsvc services, health and reflection itself."""
    services, _, channel = await asyncio.to_thread(_reflect, grpc_target)
    channel.close()
    assert set(services) == SERVICES


async def test_describe_and_call_from_reflected_descriptors(grpc_target: str) -> None:
    """A method described only through reflection (no generated code) can be called: Authorize
    with wrong credentials answers UNAUTHENTICATED, GetJwks answers the keys."""

    def call() -> tuple[list[str], grpc.StatusCode, int]:
        _, pool, channel = _reflect(grpc_target)
        try:
            authorize = pool.FindServiceByName("authsvc.v1.AuthService").methods_by_name[
                "Authorize"
            ]
            fields = [f.name for f in authorize.input_type.fields]
            request_class = message_factory.GetMessageClass(authorize.input_type)
            reply_class = message_factory.GetMessageClass(authorize.output_type)
            stub = channel.unary_unary(
                "/authsvc.v1.AuthService/Authorize",
                request_serializer=request_class.SerializeToString,
                response_deserializer=reply_class.FromString,
            )
            try:
                stub(request_class(username="nobody", password="not-it-at-all"), timeout=10)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
            jwks = pool.FindServiceByName("authsvc.v1.TokenService").methods_by_name["GetJwks"]
            jwks_call = channel.unary_unary(
                "/authsvc.v1.TokenService/GetJwks",
                request_serializer=message_factory.GetMessageClass(
                    jwks.input_type
                ).SerializeToString,
                response_deserializer=message_factory.GetMessageClass(jwks.output_type).FromString,
            )
            keys = jwks_call(message_factory.GetMessageClass(jwks.input_type)(), timeout=10)
            return fields, code, len(keys.keys)
        finally:
            channel.close()

    fields, code, key_count = await asyncio.to_thread(call)
    assert {"username", "password", "ttl"} <= set(fields)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert key_count >= 1


async def test_health_is_described(grpc_target: str) -> None:
    """Health's Check and Watch are described through reflection."""
    _, pool, channel = await asyncio.to_thread(_reflect, grpc_target)
    try:
        health = await asyncio.to_thread(pool.FindServiceByName, "grpc.health.v1.Health")
        assert {"Check", "Watch"} <= {m.name for m in health.methods}
    finally:
        channel.close()


async def test_v1_answers_as_grpcurl_asks_first(channel: grpc.aio.Channel) -> None:
    """The v1 service (what grpcurl asks first) lists the services and returns the file of a
    symbol, here v1 reflection's own."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection"
        ),
    ]
    replies = [reply async for reply in call(iter(requests), timeout=10)]
    assert {s.name for s in replies[0].list_services_response.service} == SERVICES
    assert replies[1].WhichOneof("message_response") == "file_descriptor_response"
    assert replies[1].file_descriptor_response.file_descriptor_proto


async def test_unknown_symbol_is_not_found(channel: grpc.aio.Channel) -> None:
    """Asking for a symbol the server does not have answers NOT_FOUND in the reply, not a file."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Service")
    replies = [reply async for reply in call(iter([request]), timeout=10)]
    assert replies[0].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_a_method_is_found_by_its_full_name(channel: grpc.aio.Channel) -> None:
    """A method's full name (grpcurl's `describe authsvc.v1.AuthService.Authorize`) returns the
    file that defines it, for authsvc's services and health alike."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    symbols = ["authsvc.v1.AuthService.Authorize", "grpc.health.v1.Health.Check"]
    requests = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=s) for s in symbols]
    replies = [reply async for reply in call(iter(requests), timeout=10)]
    for symbol, reply in zip(symbols, replies, strict=True):
        assert reply.WhichOneof("message_response") == "file_descriptor_response"
        file = descriptor_pb2.FileDescriptorProto.FromString(
            reply.file_descriptor_response.file_descriptor_proto[0]
        )
        package, service, method = symbol.rsplit(".", 2)
        assert file.package == package
        assert method in {m.name for s in file.service if s.name == service for m in s.method}


async def test_reflection_calls_are_counted(channel: grpc.aio.Channel) -> None:
    """A reflection stream is counted like every RPC, under the service name it was called by."""
    labels = {
        "grpc_type": "bidi_stream",
        "grpc_service": "grpc.reflection.v1.ServerReflection",
        "grpc_method": "ServerReflectionInfo",
    }
    before = metrics.REGISTRY.get_sample_value("grpc_server_started_total", labels) or 0.0
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    assert [reply async for reply in call(iter([request]), timeout=10)]
    handled = {**labels, "grpc_code": "OK"}
    for _ in range(100):  # the server counts the stream's end a moment after the client sees it
        if metrics.REGISTRY.get_sample_value("grpc_server_handled_total", handled):
            break
        await asyncio.sleep(0.02)
    after = metrics.REGISTRY.get_sample_value("grpc_server_started_total", labels)
    assert after == before + 1
    assert metrics.REGISTRY.get_sample_value("grpc_server_handled_total", handled)
