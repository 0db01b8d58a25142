"""A thin Python client for authsvc over gRPC, on the generated stubs in `authsvc.v1`.

    from authsvc.client import AuthClient

    with AuthClient("127.0.0.1:50051") as client:
        token = client.authorize("alice", "alice pw", ttl=600)
        client.add_password("alice", "alice pw", "next pw")

Failures raise `AuthsvcError` with the server's `reason` (e.g. "INVALID_CREDENTIALS"), taken
from the google.rpc.ErrorInfo the server attaches to every error.
"""

from __future__ import annotations

import base64
from types import TracebackType

import grpc
from google.rpc import error_details_pb2, status_pb2

from authsvc.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    password_service_pb2,
    password_service_pb2_grpc,
)

_DETAILS_KEY = "grpc-status-details-bin"


class AuthsvcError(Exception):
    """A failed call: the gRPC code, the ErrorInfo reason ("" if none) and the message."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(f"{reason or code.name}: {message}")
        self.code = code
        self.reason = reason
        self.message = message


def _reason(error: grpc.Call) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == _DETAILS_KEY:
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return str(info.reason)
    return ""


def basic_metadata(username: str, password: str) -> tuple[tuple[str, str], ...]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return (("authorization", f"Basic {token}"),)


class AuthClient:
    """Blocking client; one channel, reused. `timeout` is each call's deadline in seconds."""

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 10,
    ) -> None:
        self._channel = (
            grpc.secure_channel(target, credentials)
            if credentials is not None
            else grpc.insecure_channel(target)
        )
        self._auth = auth_service_pb2_grpc.AuthServiceStub(self._channel)
        self._passwords = password_service_pb2_grpc.PasswordServiceStub(self._channel)
        self._timeout = timeout

    def __enter__(self) -> AuthClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(
        self, method: grpc.UnaryUnaryMultiCallable, request: object, username: str, password: str
    ) -> object:
        try:
            return method(
                request, metadata=basic_metadata(username, password), timeout=self._timeout
            )
        except grpc.RpcError as error:
            call = error if isinstance(error, grpc.Call) else None
            if call is None:
                raise
            raise AuthsvcError(call.code(), _reason(call), call.details() or "") from None

    def authorize(self, username: str, password: str, ttl: int | None = None) -> str:
        """A signed JWT for the user, valid `ttl` seconds (server default 300)."""
        request = (
            auth_service_pb2.AuthorizeRequest(ttl=ttl)
            if ttl is not None
            else auth_service_pb2.AuthorizeRequest()
        )
        reply = self._call(self._auth.Authorize, request, username, password)
        assert isinstance(reply, auth_service_pb2.AuthorizeResponse)
        return reply.access_token

    def replace_passwords(self, username: str, password: str, new_password: str) -> None:
        request = password_service_pb2.ReplacePasswordsRequest(new_password=new_password)
        self._call(self._passwords.ReplacePasswords, request, username, password)

    def add_password(self, username: str, password: str, new_password: str) -> None:
        request = password_service_pb2.AddPasswordRequest(new_password=new_password)
        self._call(self._passwords.AddPassword, request, username, password)

    def delete_password(self, username: str, password: str, old_password: str) -> None:
        request = password_service_pb2.DeletePasswordRequest(old_password=old_password)
        self._call(self._passwords.DeletePassword, request, username, password)
