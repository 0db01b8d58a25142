"""The Python clients (blocking and asyncio) against a real server: every RPC, the errors'
reason / retry_after / request id, per-call timeouts, retries, TLS and mTLS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import jwt
import pytest
from authsvc.client import (
    AsyncAuthClient,
    AuthClient,
    AuthsvcError,
    RetryPolicy,
    tls_credentials,
)
from authsvc.v1 import token_service_pb2, token_service_pb2_grpc

from service import app
from service.config import TlsFiles
from tests.pki import Pki, make_pki
from tests.support import new_user, serving_target


def claims_of(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


async def test_blocking_client_covers_every_rpc(grpc_target: str, services: app.Services) -> None:
    """The blocking client's seven calls work against the server, and errors carry the reason."""
    user = await new_user(services, "c1")

    def scenario() -> None:
        with AuthClient(grpc_target) as client:
            token = client.authorize(user.username, "c1", ttl=60)
            claims = claims_of(token)
            assert claims["exp"] - claims["iat"] == 60  # type: ignore[operator]
            seen = client.verify_token(token)
            assert (seen.active, seen.sub, seen.username) == (True, str(user.id), user.username)
            assert client.verify_token("not.a.token").active is False
            jwks = client.get_jwks()
            kid = jwt.get_unverified_header(token)["kid"]
            key = jwt.PyJWKSet(jwks["keys"])[kid]
            assert jwt.decode(token, key, algorithms=[key.algorithm_name], audience="authsvc")
            api = client.issue_api_token(user.username, "c1")
            assert api.status == 200 and api.expires == claims_of(api.api_token)["exp"] * 1000  # type: ignore[operator]
            client.add_password(user.username, "c1", "c2")
            client.delete_password(user.username, "c2", "c1")
            with pytest.raises(AuthsvcError) as caught:
                client.authorize(user.username, "c1")
            assert caught.value.reason == "INVALID_CREDENTIALS"
            with pytest.raises(AuthsvcError) as last:
                client.delete_password(user.username, "c2", "c2")
            assert last.value.reason == "CANNOT_DELETE_LAST_PASSWORD"
            client.replace_passwords(user.username, "c2", "c3")
            assert client.verify_token(token).active is False
            assert client.authorize(user.username, "c3")

    await asyncio.to_thread(scenario)


async def test_async_client_covers_every_rpc(grpc_target: str, services: app.Services) -> None:
    """The asyncio client's seven calls work against the server, and errors carry the reason."""
    user = await new_user(services, "a1")
    async with AsyncAuthClient(grpc_target) as client:
        token = await client.authorize(user.username, "a1", ttl=90)
        claims = claims_of(token)
        assert claims["exp"] - claims["iat"] == 90  # type: ignore[operator]
        seen = await client.verify_token(token)
        assert (seen.active, seen.jti, seen.exp) == (True, claims["jti"], claims["exp"])
        jwks = await client.get_jwks()
        assert jwt.get_unverified_header(token)["kid"] in {k["kid"] for k in jwks["keys"]}
        api = await client.issue_api_token(user.username, "a1")
        assert claims_of(api.api_token)["username"] == user.username
        await client.add_password(user.username, "a1", "a2")
        assert await client.authorize(user.username, "a2")
        await client.delete_password(user.username, "a2", "a1")
        with pytest.raises(AuthsvcError) as caught:
            await client.authorize(user.username, "a1")
        assert caught.value.reason == "INVALID_CREDENTIALS"
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
        await client.replace_passwords(user.username, "a2", "a3")
        assert (await client.verify_token(token)).active is False
        assert await client.authorize(user.username, "a3")


async def test_error_carries_reason_domain_and_request_id(
    grpc_target: str, services: app.Services
) -> None:
    """A refusal carries ErrorInfo's reason and domain, no retry_after, and a request id that
    differs per call."""
    user = await new_user(services, "r1")
    async with AsyncAuthClient(grpc_target) as client:
        errors = []
        for _ in range(2):
            with pytest.raises(AuthsvcError) as caught:
                await client.authorize(user.username, "wrong")
            errors.append(caught.value)
    first, second = errors
    assert (first.reason, first.domain, first.retry_after) == (
        "INVALID_CREDENTIALS",
        "authsvc",
        None,
    )
    assert first.request_id and second.request_id and first.request_id != second.request_id


# -- retries -----------------------------------------------------------------------------------


async def test_too_many_attempts_carries_retry_after(delayed) -> None:
    """Without retries, a login within the delay fails with TOO_MANY_ATTEMPTS and its delay."""
    target, services = delayed
    user = await new_user(services, "right-pw")
    async with AsyncAuthClient(target) as client:
        with pytest.raises(AuthsvcError):
            await client.authorize(user.username, "wrong")
        with pytest.raises(AuthsvcError) as caught:
            await client.authorize(user.username, "right-pw")
    error = caught.value
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "TOO_MANY_ATTEMPTS"
    assert error.retry_after is not None and 0 < error.retry_after <= 0.4


async def test_retry_waits_out_too_many_attempts(delayed) -> None:
    """With a RetryPolicy the same login waits the RetryInfo delay and then succeeds."""
    target, services = delayed
    user = await new_user(services, "right-pw")
    async with AsyncAuthClient(target, retry=RetryPolicy()) as client:
        with pytest.raises(AuthsvcError):
            await client.authorize(user.username, "wrong")
        started = time.monotonic()
        token = await client.authorize(user.username, "right-pw")
    assert claims_of(token)["username"] == user.username
    assert time.monotonic() - started >= 0.2


async def test_blocking_retry_gives_up_when_the_delay_exceeds_the_timeout(delayed) -> None:
    """The blocking client does not wait past the call's timeout: TOO_MANY_ATTEMPTS at once."""
    target, services = delayed
    user = await new_user(services, "right-pw")

    def scenario() -> AuthsvcError:
        with AuthClient(target, retry=RetryPolicy()) as client:
            with pytest.raises(AuthsvcError):
                client.authorize(user.username, "wrong")
            with pytest.raises(AuthsvcError) as caught:
                client.authorize(user.username, "right-pw", timeout=0.1)
            return caught.value

    assert (await asyncio.to_thread(scenario)).reason == "TOO_MANY_ATTEMPTS"


class FlakyTokens(token_service_pb2_grpc.TokenServiceServicer):  # type: ignore[misc]
    """A stand-in TokenService: UNAVAILABLE on every other GetJwks, slow VerifyToken."""

    def __init__(self) -> None:
        self.calls = 0

    async def GetJwks(self, request, context):
        self.calls += 1
        if self.calls % 2 == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return token_service_pb2.GetJwksResponse()

    async def VerifyToken(self, request, context):
        await asyncio.sleep(2)
        return token_service_pb2.VerifyTokenResponse(active=False)


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[str, FlakyTokens]]:
    server = grpc.aio.server()
    tokens = FlakyTokens()
    token_service_pb2_grpc.add_TokenServiceServicer_to_server(tokens, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", tokens
    finally:
        await server.stop(None)


async def test_unavailable_is_retried_only_with_a_policy(flaky) -> None:
    """UNAVAILABLE fails the call without a policy; with one, gRPC retries it and it succeeds."""
    target, tokens = flaky
    async with AsyncAuthClient(target) as client:
        with pytest.raises(AuthsvcError) as caught:
            await client.get_jwks()
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert caught.value.request_id
    tokens.calls = 0
    async with AsyncAuthClient(target, retry=RetryPolicy(initial_backoff=0.05)) as client:
        assert await client.get_jwks() == {"keys": []}
    assert tokens.calls == 2


async def test_per_call_timeout_overrides_the_default(flaky) -> None:
    """A call's own timeout bounds it (DEADLINE_EXCEEDED), whatever the client's default."""
    target, _ = flaky

    def scenario() -> AuthsvcError:
        with AuthClient(target, timeout=30) as client:
            with pytest.raises(AuthsvcError) as caught:
                client.verify_token("x", timeout=0.2)
            return caught.value

    started = time.monotonic()
    assert (await asyncio.to_thread(scenario)).code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5
    async with AsyncAuthClient(target, timeout=0.2) as client:
        with pytest.raises(AuthsvcError) as caught:
            await client.verify_token("x")
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert (await client.verify_token("x", timeout=10)).active is False


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
async def mtls_target(db, settings, pki: Pki) -> AsyncIterator[tuple[str, app.Services]]:
    tls = TlsFiles(pki.server_cert, pki.server_key, client_ca_file=pki.ca_cert)
    async with serving_target(db, settings, tls=tls) as served:
        yield served


async def test_mtls_with_a_client_certificate(mtls_target, pki: Pki) -> None:
    """Over mTLS a client presenting its certificate gets a token; both clients."""
    target, services = mtls_target
    user = await new_user(services, "tls")
    credentials = tls_credentials(pki.ca_cert, pki.client_cert, pki.client_key)
    async with AsyncAuthClient(target, credentials=credentials) as client:
        assert await client.authorize(user.username, "tls")

    def blocking() -> str:
        with AuthClient(target, credentials=credentials) as client:
            return client.authorize(user.username, "tls")

    assert await asyncio.to_thread(blocking)


async def test_mtls_without_a_client_certificate_is_refused(mtls_target, pki: Pki) -> None:
    """TLS credentials without the client certificate cannot call an mTLS server."""
    target, services = mtls_target
    user = await new_user(services, "tls")
    async with AsyncAuthClient(target, credentials=tls_credentials(pki.ca_cert)) as client:
        with pytest.raises(AuthsvcError) as caught:
            await client.authorize(user.username, "tls", timeout=5)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == ""


def test_mtls_needs_both_files(pki: Pki) -> None:
    """A client certificate without its key (or the reverse) is refused up front."""
    with pytest.raises(ValueError, match="both"):
        tls_credentials(pki.ca_cert, cert_file=pki.client_cert)
