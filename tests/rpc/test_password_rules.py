"""Password complexity and maximum age over real gRPC, with both turned on through Settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc, password_service_pb2_grpc
from authsvc.v1 import password_service_pb2 as password_pb

from service import app
from service.errors import AuthError, Reason
from service.store.db import Database
from tests.support import authorize, basic, error_info, new_user, serving
from tests.test_cli import cli, env_with

CURRENT = "Current-Pass1"
STRONG = "Fresh&Strong42"
BACKDATE = "UPDATE passwords SET created_at = now() - $2::interval WHERE user_id = $1"


@pytest.fixture(scope="module")
async def rules(db, settings) -> AsyncIterator[tuple[grpc.aio.Channel, app.Services]]:
    """A server with complexity on (minimum 10 characters) and a 60 s maximum password age."""
    async with serving(
        db, settings, password_complexity=True, password_min_length=10, password_max_age=60
    ) as served:
        yield served


def passwords(channel: grpc.aio.Channel) -> password_service_pb2_grpc.PasswordServiceStub:
    return password_service_pb2_grpc.PasswordServiceStub(channel)


async def refusal(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


# -- complexity -------------------------------------------------------------------------------


async def test_add_password_breaking_a_rule_is_not_complex(rules) -> None:
    """AddPassword with a password breaking a rule is INVALID_ARGUMENT, PASSWORD_NOT_COMPLEX,
    and the message names the rule (each rule: tests/domain/test_password_policy.py)."""
    channel, services = rules
    user = await new_user(services, CURRENT, prefix="Complex")
    error = await refusal(
        passwords(channel).AddPassword(
            password_pb.AddPasswordRequest(new_password="Abc1xyzuvw"),
            metadata=basic(user.username, CURRENT),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "PASSWORD_NOT_COMPLEX"
    assert "must contain a special character" in error.details()


async def test_replace_with_a_simple_password_is_not_complex(rules) -> None:
    """ReplacePasswords applies the same rules, and the old password keeps working."""
    channel, services = rules
    user = await new_user(services, CURRENT)
    error = await refusal(
        passwords(channel).ReplacePasswords(
            password_pb.ReplacePasswordsRequest(new_password="password"),
            metadata=basic(user.username, CURRENT),
        )
    )
    assert error_info(error).reason == "PASSWORD_NOT_COMPLEX"
    assert (await authorize(channel, user.username, CURRENT)).access_token


async def test_complex_password_is_accepted(rules) -> None:
    """A password meeting every rule is added and then logs in."""
    channel, services = rules
    user = await new_user(services, CURRENT)
    await passwords(channel).AddPassword(
        password_pb.AddPasswordRequest(new_password=STRONG), metadata=basic(user.username, CURRENT)
    )
    assert (await authorize(channel, user.username, STRONG)).access_token


async def test_user_create_applies_the_rules(rules) -> None:
    """An administrator's first password for a user meets the same rules."""
    _, services = rules
    with pytest.raises(AuthError) as caught:
        await services.users.create("weak-admin-choice", "password1")
    assert caught.value.reason is Reason.PASSWORD_NOT_COMPLEX
    assert "upper-case" in caught.value.message


def test_cli_user_create_names_the_broken_rule(database_url: str) -> None:
    """`authsvc user create` with complexity on refuses a simple password: exit 1, one line."""
    env = env_with(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_PASSWORD_COMPLEXITY="on")
    result = cli(env, "user", "create", "frank", "--password-stdin", stdin="frank123\n")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "\n" not in line and "password is not complex enough" in line
    assert "must not contain the username" in line


# -- maximum age ------------------------------------------------------------------------------


async def test_old_password_gets_password_expired(rules, db: Database) -> None:
    """Authorize with a right password older than the maximum age: UNAUTHENTICATED,
    PASSWORD_EXPIRED."""
    channel, services = rules
    user = await new_user(services, CURRENT)
    await db.execute(BACKDATE, user.id, timedelta(minutes=2))
    error = await refusal(authorize(channel, user.username, CURRENT))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error).reason == "PASSWORD_EXPIRED"


async def test_old_password_gets_no_api_token_either(rules, db: Database) -> None:
    """The Densify dialect refuses an expired password the same way."""
    channel, services = rules
    user = await new_user(services, CURRENT)
    await db.execute(BACKDATE, user.id, timedelta(minutes=2))
    error = await refusal(
        auth_service_pb2_grpc.AuthServiceStub(channel).IssueApiToken(
            pb.IssueApiTokenRequest(user_name=user.username, pwd=CURRENT)
        )
    )
    assert error_info(error).reason == "PASSWORD_EXPIRED"


async def test_wrong_password_on_an_expired_one_is_invalid_credentials(rules, db: Database) -> None:
    """Expiry is told only after the password was verified right."""
    channel, services = rules
    user = await new_user(services, CURRENT)
    await db.execute(BACKDATE, user.id, timedelta(minutes=2))
    error = await refusal(authorize(channel, user.username, "Not-The-Pass1"))
    assert error_info(error).reason == "INVALID_CREDENTIALS"


async def test_password_younger_than_the_maximum_age_works(rules, db: Database) -> None:
    """A password just under the maximum age still gets a token."""
    channel, services = rules
    user = await new_user(services, CURRENT)
    await db.execute(BACKDATE, user.id, timedelta(seconds=50))
    assert (await authorize(channel, user.username, CURRENT)).access_token


async def test_expired_password_recovers_through_add_password(rules, db: Database) -> None:
    """The expired password authenticates AddPassword; the new password then gets a token,
    while the old one stays expired."""
    channel, services = rules
    user = await new_user(services, CURRENT)
    await db.execute(BACKDATE, user.id, timedelta(minutes=2))
    await passwords(channel).AddPassword(
        password_pb.AddPasswordRequest(new_password=STRONG), metadata=basic(user.username, CURRENT)
    )
    assert (await authorize(channel, user.username, STRONG)).access_token
    error = await refusal(authorize(channel, user.username, CURRENT))
    assert error_info(error).reason == "PASSWORD_EXPIRED"


async def test_expired_password_recovers_through_replace(rules, db: Database) -> None:
    """ReplacePasswords with the expired password leaves only the new one, which works."""
    channel, services = rules
    user = await new_user(services, CURRENT)
    await db.execute(BACKDATE, user.id, timedelta(minutes=2))
    await passwords(channel).ReplacePasswords(
        password_pb.ReplacePasswordsRequest(new_password=STRONG),
        metadata=basic(user.username, CURRENT),
    )
    assert (await authorize(channel, user.username, STRONG)).access_token
