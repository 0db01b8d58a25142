"""AuthService.Authorize and IssueApiToken over a real gRPC channel."""

from __future__ import annotations

import base64
import time

import grpc
import jwt
import pytest
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc

from service import app
from service.store.db import Database
from tests.support import authorize, basic, error_info, new_user


async def claims_of(token: str, services: app.Services) -> dict[str, object]:
    """Verify `token` independently with the service's published public key; return its claims."""
    header = jwt.get_unverified_header(token)
    published = {key.kid: key for key in await services.keys.published()}
    key = jwt.PyJWK(published[header["kid"]].public_jwk)
    return jwt.decode(token, key, algorithms=["ES256"], issuer="authsvc", audience="authsvc")


async def test_basic_credentials_give_a_signed_token(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Basic metadata with the right password returns an ES256 JWT (the default algorithm)
    with the documented claims."""
    user = await new_user(services, "s3cret pass")
    reply = await authorize(channel, user.username, "s3cret pass")
    header = jwt.get_unverified_header(reply.access_token)
    assert header["alg"] == "ES256" and header["kid"]
    claims = await claims_of(reply.access_token, services)
    assert claims["sub"] == str(user.id)
    assert claims["username"] == user.username
    assert claims["exp"] - claims["iat"] == 300
    assert set(claims) >= {"iss", "aud", "sub", "username", "iat", "exp", "jti"}
    assert header["typ"] == "at+jwt"


async def test_body_credentials_give_a_token(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """The older Redis contract: username and password in the request fields."""
    user = await new_user(services, "body pass")
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    reply = await stub.Authorize(pb.AuthorizeRequest(username=user.username, password="body pass"))
    assert (await claims_of(reply.access_token, services))["sub"] == str(user.id)


async def test_each_token_has_its_own_jti(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Two tokens for one user differ in jti."""
    user = await new_user(services, "pw")
    first = await authorize(channel, user.username, "pw")
    second = await authorize(channel, user.username, "pw")
    assert (await claims_of(first.access_token, services))["jti"] != (
        await claims_of(second.access_token, services)
    )["jti"]


async def test_wrong_password_is_unauthenticated_with_error_info(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """A wrong password is UNAUTHENTICATED with ErrorInfo(INVALID_CREDENTIALS, authsvc)."""
    user = await new_user(services, "right-pw")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await authorize(channel, user.username, "wrong")
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    info = error_info(caught.value)
    assert (info.reason, info.domain) == ("INVALID_CREDENTIALS", "authsvc")


async def test_unknown_user_looks_like_a_wrong_password(channel: grpc.aio.Channel) -> None:
    """An unknown username gets exactly the answer a wrong password gets."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await authorize(channel, "nobody-here", "whatever")
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == "invalid username or password"
    assert error_info(caught.value).reason == "INVALID_CREDENTIALS"


async def test_username_lookup_ignores_case(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """The same account answers to any case of its name."""
    user = await new_user(services, "pw", prefix="MiXeD")
    reply = await authorize(channel, user.username.upper(), "pw")
    assert (await claims_of(reply.access_token, services))["sub"] == str(user.id)


@pytest.mark.parametrize("ttl", [1, 86400])
async def test_ttl_bounds_are_accepted(
    channel: grpc.aio.Channel, services: app.Services, ttl: int
) -> None:
    """ttl 1 and 86400 are the inclusive bounds."""
    user = await new_user(services, "pw")
    reply = await authorize(channel, user.username, "pw", ttl=ttl)
    claims = await claims_of(reply.access_token, services)
    assert claims["exp"] - claims["iat"] == ttl


@pytest.mark.parametrize("ttl", [0, -1, 86401, 2**31 - 1])
async def test_ttl_out_of_range_is_invalid_argument(
    channel: grpc.aio.Channel, services: app.Services, ttl: int
) -> None:
    """A ttl outside 1..86400 (0 included) is INVALID_ARGUMENT."""
    user = await new_user(services, "pw")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await authorize(channel, user.username, "pw", ttl=ttl)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "INVALID_ARGUMENT"


async def test_credentials_in_header_and_body_are_refused(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Credentials in both places are ambiguous: INVALID_ARGUMENT."""
    user = await new_user(services, "pw")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await authorize(channel, user.username, "pw", username=user.username, password="pw")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_no_credentials_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    """No header and no fields: UNAUTHENTICATED with CREDENTIALS_REQUIRED."""
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Authorize(pb.AuthorizeRequest(ttl=60))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(caught.value).reason == "CREDENTIALS_REQUIRED"


def _raw_auth(value: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", value),)


@pytest.mark.parametrize(
    "header",
    [
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    ],
    ids=["bad-base64", "no-colon", "not-utf8"],
)
async def test_malformed_basic_header_is_invalid_argument(
    channel: grpc.aio.Channel, header: str
) -> None:
    """A Basic header that cannot be decoded is INVALID_ARGUMENT, not a server error."""
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Authorize(pb.AuthorizeRequest(), metadata=_raw_auth(header))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_other_scheme_is_credentials_required(channel: grpc.aio.Channel) -> None:
    """A Bearer header is not a password: UNAUTHENTICATED, CREDENTIALS_REQUIRED."""
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Authorize(pb.AuthorizeRequest(), metadata=_raw_auth("Bearer abc"))
    assert error_info(caught.value).reason == "CREDENTIALS_REQUIRED"


async def test_password_with_colons_and_utf8(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Everything after the first ':' is the password, in any UTF-8."""
    password = "pä:ss:wörd 🔑"
    user = await new_user(services, password, prefix="ünïcode")
    reply = await authorize(channel, user.username, password)
    assert (await claims_of(reply.access_token, services))["username"] == user.username


async def test_overlong_password_is_refused_before_hashing(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """A password over 4 KiB is INVALID_ARGUMENT, whatever the user."""
    user = await new_user(services, "pw")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await authorize(channel, user.username, "x" * 4097)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "4096" in caught.value.details()


async def test_locked_account_is_told_only_with_the_right_password(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """A locked user with the right password gets ACCOUNT_LOCKED; a wrong one gets the usual."""
    user = await new_user(services, "pw")
    await services.users.set_locked(user.username, True)
    with pytest.raises(grpc.aio.AioRpcError) as right:
        await authorize(channel, user.username, "pw")
    assert right.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(right.value).reason == "ACCOUNT_LOCKED"
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await authorize(channel, user.username, "nope")
    assert error_info(wrong.value).reason == "INVALID_CREDENTIALS"
    await services.users.set_locked(user.username, False)
    assert (await authorize(channel, user.username, "pw")).access_token


async def test_expired_account_is_permission_denied(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """An expired account with the right password is PERMISSION_DENIED, ACCOUNT_EXPIRED."""
    from datetime import UTC, datetime, timedelta

    user = await new_user(services, "pw")
    await services.users.set_expiry(user.username, datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await authorize(channel, user.username, "pw")
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(caught.value).reason == "ACCOUNT_EXPIRED"
    await services.users.set_expiry(user.username, None)
    assert (await authorize(channel, user.username, "pw")).access_token


async def test_densify_dialect_returns_token_expiry_and_status(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """IssueApiToken answers apiToken, expires (epoch ms, 5 minutes ahead) and status 200."""
    user = await new_user(services, "pw")
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    before = time.time()
    reply = await stub.IssueApiToken(pb.IssueApiTokenRequest(user_name=user.username, pwd="pw"))
    assert reply.status == 200
    claims = await claims_of(reply.api_token, services)
    assert reply.expires == claims["exp"] * 1000
    assert before + 299 <= reply.expires / 1000 <= time.time() + 301


async def test_densify_dialect_wrong_password(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """IssueApiToken with a wrong password is UNAUTHENTICATED like Authorize."""
    user = await new_user(services, "pw")
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.IssueApiToken(pb.IssueApiTokenRequest(user_name=user.username, pwd="no"))
    assert error_info(caught.value).reason == "INVALID_CREDENTIALS"


async def test_request_id_is_echoed(channel: grpc.aio.Channel, services: app.Services) -> None:
    """The x-request-id a caller sends comes back in the trailing metadata."""
    user = await new_user(services, "pw")
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    call = stub.Authorize(
        pb.AuthorizeRequest(), metadata=(*basic(user.username, "pw"), ("x-request-id", "rid-42"))
    )
    await call
    assert ("x-request-id", "rid-42") in tuple(await call.trailing_metadata())


async def test_a_request_id_with_a_space_is_replaced(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """An x-request-id holding a space (it could pass for other fields of a log line) is not
    passed on: the call gets a new one, as over REST."""
    user = await new_user(services, "pw")
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    forged = "rid status=OK"
    call = stub.Authorize(
        pb.AuthorizeRequest(), metadata=(*basic(user.username, "pw"), ("x-request-id", forged))
    )
    await call
    given = dict(await call.trailing_metadata())["x-request-id"]
    assert given != forged and len(given) == 32


async def test_old_argon2_parameters_are_rehashed_on_login(
    channel: grpc.aio.Channel, services: app.Services, db: Database
) -> None:
    """A hash made with other parameters and its own salt (argon2-cffi's default) is replaced on
    the next successful login by one with the current parameters and the user's salt, which
    logs the same password in again and no other."""
    import argon2

    old_hash = argon2.PasswordHasher(time_cost=2, memory_cost=128, parallelism=1).hash("pw")
    user = await new_user(services, "pw")
    await db.execute("UPDATE passwords SET hash = $2 WHERE user_id = $1", user.id, old_hash)
    await authorize(channel, user.username, "pw")
    row = await db.fetchrow(
        "SELECT p.hash, u.password_salt FROM passwords p JOIN users u ON u.id = p.user_id"
        " WHERE p.user_id = $1",
        user.id,
    )
    assert row is not None and row["hash"] != old_hash
    assert "m=64,t=1,p=1" in row["hash"]
    salt_b64 = base64.b64encode(row["password_salt"]).decode().rstrip("=")
    assert row["hash"].split("$")[4] == salt_b64
    assert (await authorize(channel, user.username, "pw")).access_token
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await authorize(channel, user.username, "pw2")
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_bearer_header_does_not_hide_body_credentials(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """A non-Basic authorization header (a stale Bearer token) is ignored for body credentials."""
    user = await new_user(services, "pw")
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    reply = await stub.Authorize(
        pb.AuthorizeRequest(username=user.username, password="pw"),
        metadata=_raw_auth("Bearer stale.token.here"),
    )
    assert reply.access_token
