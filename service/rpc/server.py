"""The grpc.aio server: servicers registered, bounded message sizes, one listening address."""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from authsvc.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    password_service_pb2,
    password_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import TlsFiles
from service.rpc.health import HealthServicer
from service.rpc.reflection import enable_reflection
from service.rpc.servicers import AuthServicer, PasswordServicer, TokenServicer
from service.rpc.status import lenient_handler
from service.tls import grpc_server_credentials

# Requests are a few fields of at most 4 KiB each; refuse anything much larger before parsing.
MAX_MESSAGE_BYTES = 64 * 1024


def _listen(address: str, add_port: Callable[[], int]) -> int:
    """Bind, turning grpcio's ways of failing (0, or RuntimeError) into one OSError."""
    try:
        port = add_port()
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(errno.EADDRINUSE, f"cannot listen on {address}")
    return port


@dataclass(frozen=True)
class Servicers:
    """The servicers, built once and served both by the gRPC server and, in process, by the
    REST gateway."""

    auth: AuthServicer
    passwords: PasswordServicer
    tokens: TokenServicer
    health: HealthServicer

    def by_service(self) -> dict[str, object]:
        """Each servicer under its service's full proto name, as the gRPC server routes them."""
        return {
            _service_name(auth_service_pb2, "AuthService"): self.auth,
            _service_name(password_service_pb2, "PasswordService"): self.passwords,
            _service_name(token_service_pb2, "TokenService"): self.tokens,
            _service_name(health_pb2, "Health"): self.health,
        }


def _service_name(module: object, name: str) -> str:
    return str(module.DESCRIPTOR.services_by_name[name].full_name)  # type: ignore[attr-defined]


class _LenientRegistry:
    """Stands in for the server in the generated `add_*Servicer_to_server` functions: registers
    their handlers, each made lenient about malformed request bytes (`lenient_handler`) once."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, generic_handlers: object) -> None:
        """Replaced by the lenient copy `add_registered_method_handlers` makes of the same
        handlers (the generated code passes both the same table)."""

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        wrapped = {
            name: lenient_handler(f"/{service}/{name}", handler)
            for name, handler in handlers.items()
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, wrapped),)
        )
        self._server.add_registered_method_handlers(service, wrapped)


def build_grpc_server(
    servicers: Servicers,
    address: str,
    tls: TlsFiles | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> tuple[grpc.aio.Server, int]:
    """Return the server, not yet started, and the port it is bound to (for ':0').
    `interceptors`: tracing's, when on."""
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    lenient = _LenientRegistry(server)
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(servicers.auth, lenient)
    password_service_pb2_grpc.add_PasswordServiceServicer_to_server(servicers.passwords, lenient)
    token_service_pb2_grpc.add_TokenServiceServicer_to_server(servicers.tokens, lenient)
    health_pb2_grpc.add_HealthServicer_to_server(servicers.health, lenient)
    enable_reflection(server, servicers.by_service())
    port = _listen(
        address,
        lambda: (
            server.add_secure_port(address, grpc_server_credentials(tls))
            if tls is not None
            else server.add_insecure_port(address)
        ),
    )
    return server, port
