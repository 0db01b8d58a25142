"""Request bytes that are not a valid message of the method's type answer INVALID_ARGUMENT with
the service's ErrorInfo and log one line, on every method (the probe's `b'\\x0a\\x02\\xff\\xfe'`:
a string field holding bad UTF-8)."""

from __future__ import annotations

import logging

import grpc
import pytest
from authsvc.v1 import auth_service_pb2, password_service_pb2, token_service_pb2
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2

from tests.support import error_info

SERVICES = [
    auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"],
    password_service_pb2.DESCRIPTOR.services_by_name["PasswordService"],
    token_service_pb2.DESCRIPTOR.services_by_name["TokenService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
]


def bad_utf8(method) -> bytes | None:
    """The request with its first string field set to invalid UTF-8, or None if it has none."""
    for field in method.input_type.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            return bytes([field.number << 3 | 2, 2, 0xFF, 0xFE])
    return None


METHODS = [
    (f"/{service.full_name}/{method.name}", method.server_streaming, payload)
    for service in SERVICES
    for method in service.methods
    if (payload := bad_utf8(method)) is not None
]


def raw_call(channel: grpc.aio.Channel, path: str, streaming: bool):
    """A callable that sends bytes as they are and returns the reply's bytes."""
    make = channel.unary_stream if streaming else channel.unary_unary
    return make(path, request_serializer=None, response_deserializer=None)


async def call_with_bytes(channel, path: str, streaming: bool, payload: bytes) -> None:
    call = raw_call(channel, path, streaming)(payload, timeout=10)
    if streaming:
        async for _ in call:
            pass
    else:
        await call


@pytest.mark.parametrize(
    ("path", "streaming", "payload"),
    [*METHODS, ("/authsvc.v1.TokenService/VerifyToken", False, b"\x0a\x05ab")],
    ids=[*(m[0] for m in METHODS), "truncated-field"],
)
async def test_malformed_request_is_invalid_argument(
    channel: grpc.aio.Channel, caplog, path, streaming, payload
) -> None:
    """Bad bytes answer INVALID_ARGUMENT with ErrorInfo(INVALID_ARGUMENT, authsvc), no class
    name in the message, and one log line without a traceback."""
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_with_bytes(channel, path, streaming, payload)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    info = error_info(error)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "authsvc")
    assert "Error" not in (error.details() or "")
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None and path in lines[0].getMessage()


async def test_well_formed_request_still_reaches_the_method(channel: grpc.aio.Channel) -> None:
    """The same method with valid bytes is answered by the servicer (here: token inactive)."""
    payload = token_service_pb2.VerifyTokenRequest(token="not.a.token").SerializeToString()
    reply = await raw_call(channel, "/authsvc.v1.TokenService/VerifyToken", False)(payload)
    assert not token_service_pb2.VerifyTokenResponse.FromString(reply).active
