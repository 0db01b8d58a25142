"""Python clients for authsvc over gRPC, on the generated stubs in `authsvc.v1`.

Two clients with the same methods: `AuthClient` blocks, `AsyncAuthClient` is for asyncio
(`grpc.aio`), its methods coroutines::

    from authsvc.client import AuthClient, AuthsvcError, RetryPolicy

    with AuthClient("127.0.0.1:50051", retry=RetryPolicy()) as client:
        token = client.authorize("alice", "alice pw", ttl=600)
        client.add_password("alice", "alice pw", "next pw")
        assert client.verify_token(token).active
        jwks = client.get_jwks()  # an RFC 7517 JWK Set, for jwt.PyJWKSet(jwks["keys"])

    async with AsyncAuthClient("127.0.0.1:50051") as client:
        token = await client.authorize("alice", "next pw")

Every failure raises `AuthsvcError`: the gRPC `code`, the server's `reason` (the
`google.rpc.ErrorInfo` reason, e.g. "INVALID_CREDENTIALS"), `retry_after` (seconds, from
`google.rpc.RetryInfo`, when the server says when to try again) and `request_id` (the
`x-request-id` the server logged the call under; the client sends one with every call).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from authsvc.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    password_service_pb2,
    password_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)

__all__ = [
    "ApiToken",
    "AsyncAuthClient",
    "AuthClient",
    "AuthsvcError",
    "Introspection",
    "RetryPolicy",
    "basic_metadata",
    "tls_credentials",
]

REQUEST_ID_KEY = "x-request-id"
TOO_MANY_ATTEMPTS = "TOO_MANY_ATTEMPTS"
SERVICES = ("authsvc.v1.AuthService", "authsvc.v1.PasswordService", "authsvc.v1.TokenService")
Metadata = tuple[tuple[str, str], ...]
R = TypeVar("R")


class AuthsvcError(Exception):
    """A failed call.

    Attributes: `code` (grpc.StatusCode), `reason` (ErrorInfo.reason, "" when the status carried
    none, e.g. a connection failure), `message`, `retry_after` (seconds to wait before trying
    again, from RetryInfo; None when the server gave none), `request_id` (the call's
    `x-request-id`), `domain` and `metadata` (the rest of the ErrorInfo).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        retry_after: float | None = None,
        request_id: str | None = None,
        domain: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{reason or code.name}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.request_id = request_id
        self.domain = domain
        self.metadata = metadata or {}


@dataclass(frozen=True)
class RetryPolicy:
    """Optional retries (off unless a policy is given to the client).

    UNAVAILABLE (the server is unreachable or overloaded and refused the call unprocessed) is
    retried by gRPC itself, through the channel's service-config `retryPolicy`: up to
    `max_attempts` attempts with exponential backoff from `initial_backoff` to `max_backoff`
    seconds, jittered, within the call's timeout.

    TOO_MANY_ATTEMPTS (a login that came before its name's failed-login delay was over) is
    retried here, not by gRPC: gRPC's policy keys on status codes alone (it would retry every
    RESOURCE_EXHAUSTED) and waits its own jittered backoff; the only server pushback it reads is
    the `grpc-retry-pushback-ms` trailer, never `google.rpc.RetryInfo`. So the client waits the
    RetryInfo delay itself, when it is at most `max_retry_after` seconds and fits in what is left
    of the call's timeout, up to `max_attempts` attempts in all.
    """

    max_attempts: int = 3
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    backoff_multiplier: float = 2.0
    retry_too_many_attempts: bool = True
    max_retry_after: float = 10.0

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= 5:  # gRPC caps a retryPolicy at 5 attempts
            raise ValueError("max_attempts must be between 2 and 5")

    def service_config(self) -> str:
        """The gRPC service config (JSON) that retries UNAVAILABLE on every authsvc method."""
        return json.dumps(
            {
                "methodConfig": [
                    {
                        "name": [{"service": name} for name in SERVICES],
                        "retryPolicy": {
                            "maxAttempts": self.max_attempts,
                            "initialBackoff": f"{self.initial_backoff:.3f}s",
                            "maxBackoff": f"{self.max_backoff:.3f}s",
                            "backoffMultiplier": self.backoff_multiplier,
                            "retryableStatusCodes": ["UNAVAILABLE"],
                        },
                    }
                ]
            }
        )


@dataclass(frozen=True)
class ApiToken:
    """IssueApiToken's answer (Densify's dialect): the JWT, its expiry in milliseconds since
    the Unix epoch, and the status (200)."""

    api_token: str
    expires: int
    status: int


@dataclass(frozen=True)
class Introspection:
    """VerifyToken's answer (RFC 7662): `active`, and the claims only when active."""

    active: bool
    sub: str | None = None
    username: str | None = None
    exp: int | None = None
    iat: int | None = None
    jti: str | None = None
    iss: str | None = None


def basic_metadata(username: str, password: str) -> Metadata:
    """gRPC metadata carrying `authorization: Basic base64(username:password)` (UTF-8)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return (("authorization", f"Basic {token}"),)


def tls_credentials(
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> grpc.ChannelCredentials:
    """TLS channel credentials from PEM files: the CA to trust (None: the system's roots) and,
    for mTLS, the client's certificate chain and key."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("mTLS needs both cert_file and key_file")
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes() if ca_file is not None else None,
        private_key=Path(key_file).read_bytes() if key_file is not None else None,
        certificate_chain=Path(cert_file).read_bytes() if cert_file is not None else None,
    )


def _error(error: grpc.RpcError, sent_request_id: str) -> AuthsvcError | grpc.RpcError:
    """An AuthsvcError from a failed call (grpc.Call or grpc.aio.AioRpcError)."""
    if not isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        return error
    code, message = error.code(), error.details() or ""
    request_id = sent_request_id
    for key, value in error.trailing_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            request_id = value
    reason, domain, metadata, retry_after = "", "", {}, None
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # details that contradict the call's status: not to be trusted
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
    return AuthsvcError(
        code,
        reason,
        message,
        retry_after=retry_after,
        request_id=request_id,
        domain=domain,
        metadata=metadata,
    )


def _authorize_request(ttl: int | None) -> auth_service_pb2.AuthorizeRequest:
    if ttl is None:
        return auth_service_pb2.AuthorizeRequest()
    return auth_service_pb2.AuthorizeRequest(ttl=ttl)


def _api_token(reply: auth_service_pb2.IssueApiTokenResponse) -> ApiToken:
    return ApiToken(api_token=reply.api_token, expires=reply.expires, status=reply.status)


def _introspection(reply: token_service_pb2.VerifyTokenResponse) -> Introspection:
    def field(name: str) -> Any:
        return getattr(reply, name) if reply.HasField(name) else None

    return Introspection(
        active=reply.active,
        sub=field("sub"),
        username=field("username"),
        exp=field("exp"),
        iat=field("iat"),
        jti=field("jti"),
        iss=field("iss"),
    )


_JWK_OPTIONAL = ("crv", "x", "y", "n", "e")


def _jwks(reply: token_service_pb2.GetJwksResponse) -> dict[str, list[dict[str, str]]]:
    keys = []
    for key in reply.keys:
        jwk = {"kty": key.kty, "kid": key.kid, "use": key.use, "alg": key.alg}
        jwk.update({name: getattr(key, name) for name in _JWK_OPTIONAL if key.HasField(name)})
        keys.append(jwk)
    return {"keys": keys}


class _Settings:
    """What both clients share: the channel's options and the retry decision."""

    def __init__(self, timeout: float, retry: RetryPolicy | None) -> None:
        self.timeout = timeout
        self.retry = retry

    def channel_options(self, extra: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
        options = list(extra)
        if self.retry is not None:
            options += [
                ("grpc.enable_retries", 1),
                ("grpc.service_config", self.retry.service_config()),
            ]
        return options

    def wait_before_retry(self, error: AuthsvcError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before trying a TOO_MANY_ATTEMPTS call again, or None: give up."""
        policy = self.retry
        if (
            policy is None
            or not policy.retry_too_many_attempts
            or error.reason != TOO_MANY_ATTEMPTS
            or error.retry_after is None
            or attempt >= policy.max_attempts
            or error.retry_after > policy.max_retry_after
        ):
            return None
        # The next attempt still needs time of its own after the wait.
        if time.monotonic() + error.retry_after >= deadline:
            return None
        return error.retry_after


def _metadata(credentials: Metadata, request_id: str) -> Metadata:
    return (*credentials, (REQUEST_ID_KEY, request_id))


class AuthClient:
    """Blocking client on one channel, reused; safe to share between threads.

    `target` is "host:port". `credentials` makes the channel TLS (see `tls_credentials`);
    without it, plaintext. `timeout` is each call's default deadline in seconds (every method
    takes its own `timeout=` too), retries included. `retry` turns on retries (see
    `RetryPolicy`); `options` are extra gRPC channel arguments.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._settings = _Settings(timeout, retry)
        channel_options = self._settings.channel_options(options)
        self._channel = (
            grpc.secure_channel(target, credentials, options=channel_options)
            if credentials is not None
            else grpc.insecure_channel(target, options=channel_options)
        )
        self._auth = auth_service_pb2_grpc.AuthServiceStub(self._channel)
        self._passwords = password_service_pb2_grpc.PasswordServiceStub(self._channel)
        self._tokens = token_service_pb2_grpc.TokenServiceStub(self._channel)

    def __enter__(self) -> AuthClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _call(
        self,
        method: Callable[..., R],
        request: object,
        credentials: Metadata = (),
        timeout: float | None = None,
    ) -> R:
        deadline = time.monotonic() + (self._settings.timeout if timeout is None else timeout)
        request_id = uuid.uuid4().hex
        attempt = 1
        while True:
            try:
                return method(
                    request,
                    metadata=_metadata(credentials, request_id),
                    timeout=max(deadline - time.monotonic(), 0.0),
                )
            except grpc.RpcError as caught:
                error = _error(caught, request_id)
                if not isinstance(error, AuthsvcError):
                    raise
                wait = self._settings.wait_before_retry(error, attempt, deadline)
                if wait is None:
                    raise error from None
                time.sleep(wait)
                attempt += 1

    def authorize(
        self, username: str, password: str, ttl: int | None = None, *, timeout: float | None = None
    ) -> str:
        """A signed JWT for the user, valid `ttl` seconds (1..86400, server default 300)."""
        reply = self._call(
            self._auth.Authorize,
            _authorize_request(ttl),
            basic_metadata(username, password),
            timeout,
        )
        return str(reply.access_token)

    def issue_api_token(
        self, username: str, password: str, *, timeout: float | None = None
    ) -> ApiToken:
        """Densify's dialect of authorize: the credentials travel in the request body."""
        request = auth_service_pb2.IssueApiTokenRequest(user_name=username, pwd=password)
        return _api_token(self._call(self._auth.IssueApiToken, request, (), timeout))

    def replace_passwords(
        self, username: str, password: str, new_password: str, *, timeout: float | None = None
    ) -> None:
        """Replace the user's whole password list with `new_password`; earlier tokens stop
        verifying."""
        request = password_service_pb2.ReplacePasswordsRequest(new_password=new_password)
        self._call(
            self._passwords.ReplacePasswords, request, basic_metadata(username, password), timeout
        )

    def add_password(
        self, username: str, password: str, new_password: str, *, timeout: float | None = None
    ) -> None:
        """Add `new_password` to the user's list (for rotation: old and new both work)."""
        request = password_service_pb2.AddPasswordRequest(new_password=new_password)
        self._call(
            self._passwords.AddPassword, request, basic_metadata(username, password), timeout
        )

    def delete_password(
        self, username: str, password: str, old_password: str, *, timeout: float | None = None
    ) -> None:
        """Delete `old_password` from the user's list (never the last one)."""
        request = password_service_pb2.DeletePasswordRequest(old_password=old_password)
        self._call(
            self._passwords.DeletePassword, request, basic_metadata(username, password), timeout
        )

    def verify_token(self, token: str, *, timeout: float | None = None) -> Introspection:
        """Whether `token` is active now (signature, expiry, user, password changes), with its
        claims when it is."""
        request = token_service_pb2.VerifyTokenRequest(token=token)
        return _introspection(self._call(self._tokens.VerifyToken, request, (), timeout))

    def get_jwks(self, *, timeout: float | None = None) -> dict[str, list[dict[str, str]]]:
        """The public signing keys as an RFC 7517 JWK Set ({"keys": [...]})."""
        request = token_service_pb2.GetJwksRequest()
        return _jwks(self._call(self._tokens.GetJwks, request, (), timeout))


class AsyncAuthClient:
    """The asyncio twin of `AuthClient` (grpc.aio): the same arguments and methods, each a
    coroutine. Create and use it inside one running event loop."""

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._settings = _Settings(timeout, retry)
        channel_options = self._settings.channel_options(options)
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=channel_options)
            if credentials is not None
            else grpc.aio.insecure_channel(target, options=channel_options)
        )
        self._auth = auth_service_pb2_grpc.AuthServiceStub(self._channel)
        self._passwords = password_service_pb2_grpc.PasswordServiceStub(self._channel)
        self._tokens = token_service_pb2_grpc.TokenServiceStub(self._channel)

    async def __aenter__(self) -> AsyncAuthClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; pending calls fail with CANCELLED."""
        await self._channel.close()

    async def _call(
        self,
        method: Callable[..., Awaitable[R]],
        request: object,
        credentials: Metadata = (),
        timeout: float | None = None,
    ) -> R:
        deadline = time.monotonic() + (self._settings.timeout if timeout is None else timeout)
        request_id = uuid.uuid4().hex
        attempt = 1
        while True:
            try:
                return await method(
                    request,
                    metadata=_metadata(credentials, request_id),
                    timeout=max(deadline - time.monotonic(), 0.0),
                )
            except grpc.RpcError as caught:
                error = _error(caught, request_id)
                if not isinstance(error, AuthsvcError):
                    raise
                wait = self._settings.wait_before_retry(error, attempt, deadline)
                if wait is None:
                    raise error from None
                await asyncio.sleep(wait)
                attempt += 1

    async def authorize(
        self, username: str, password: str, ttl: int | None = None, *, timeout: float | None = None
    ) -> str:
        """A signed JWT for the user, valid `ttl` seconds (1..86400, server default 300)."""
        reply = await self._call(
            self._auth.Authorize,
            _authorize_request(ttl),
            basic_metadata(username, password),
            timeout,
        )
        return str(reply.access_token)

    async def issue_api_token(
        self, username: str, password: str, *, timeout: float | None = None
    ) -> ApiToken:
        """Densify's dialect of authorize: the credentials travel in the request body."""
        request = auth_service_pb2.IssueApiTokenRequest(user_name=username, pwd=password)
        return _api_token(await self._call(self._auth.IssueApiToken, request, (), timeout))

    async def replace_passwords(
        self, username: str, password: str, new_password: str, *, timeout: float | None = None
    ) -> None:
        """Replace the user's whole password list with `new_password`; earlier tokens stop
        verifying."""
        request = password_service_pb2.ReplacePasswordsRequest(new_password=new_password)
        await self._call(
            self._passwords.ReplacePasswords, request, basic_metadata(username, password), timeout
        )

    async def add_password(
        self, username: str, password: str, new_password: str, *, timeout: float | None = None
    ) -> None:
        """Add `new_password` to the user's list (for rotation: old and new both work)."""
        request = password_service_pb2.AddPasswordRequest(new_password=new_password)
        await self._call(
            self._passwords.AddPassword, request, basic_metadata(username, password), timeout
        )

    async def delete_password(
        self, username: str, password: str, old_password: str, *, timeout: float | None = None
    ) -> None:
        """Delete `old_password` from the user's list (never the last one)."""
        request = password_service_pb2.DeletePasswordRequest(old_password=old_password)
        await self._call(
            self._passwords.DeletePassword, request, basic_metadata(username, password), timeout
        )

    async def verify_token(self, token: str, *, timeout: float | None = None) -> Introspection:
        """Whether `token` is active now (signature, expiry, user, password changes), with its
        claims when it is."""
        request = token_service_pb2.VerifyTokenRequest(token=token)
        return _introspection(await self._call(self._tokens.VerifyToken, request, (), timeout))

    async def get_jwks(self, *, timeout: float | None = None) -> dict[str, list[dict[str, str]]]:
        """The public signing keys as an RFC 7517 JWK Set ({"keys": [...]})."""
        request = token_service_pb2.GetJwksRequest()
        return _jwks(await self._call(self._tokens.GetJwks, request, (), timeout))
