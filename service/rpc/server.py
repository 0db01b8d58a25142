"""The grpc.aio server: servicers registered, bounded message sizes, one listening address."""

from __future__ import annotations

import grpc
from authsvc.v1 import auth_service_pb2_grpc, password_service_pb2_grpc, token_service_pb2_grpc
from grpc_health.v1 import health_pb2_grpc

from service.rpc.health import HealthServicer
from service.rpc.servicers import AuthServicer, PasswordServicer, TokenServicer

# Requests are a few fields of at most 4 KiB each; refuse anything much larger before parsing.
MAX_MESSAGE_BYTES = 64 * 1024


def build_grpc_server(
    auth: AuthServicer,
    passwords: PasswordServicer,
    tokens: TokenServicer,
    health: HealthServicer,
    address: str,
) -> tuple[grpc.aio.Server, int]:
    """Return the server, not yet started, and the port it is bound to (for ':0')."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(auth, server)
    password_service_pb2_grpc.add_PasswordServiceServicer_to_server(passwords, server)
    token_service_pb2_grpc.add_TokenServiceServicer_to_server(tokens, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port
