"""The list of common and breached passwords over real gRPC and through `authsvc user create`:
on by default, refused with the reason and never an echo, and turned off by its setting."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from authsvc.v1 import password_service_pb2 as password_pb
from authsvc.v1 import password_service_pb2_grpc

from service import app
from service.config import Settings
from service.store.db import Database
from tests.support import authorize, basic, error_info, new_user, serving
from tests.test_cli import cli, env_with

CURRENT = "lantern-orbit-current-7"
UNCOMMON = "violet-quarry-41-tandem"
COMMON = ["password1", "Password1", "  qwerty123 "]
MESSAGE = (
    "new_password is too common: it appears in a list of common or breached passwords;"
    " choose another"
)


def stub(channel: grpc.aio.Channel) -> password_service_pb2_grpc.PasswordServiceStub:
    return password_service_pb2_grpc.PasswordServiceStub(channel)


def assert_refused_as_common(error: grpc.aio.AioRpcError, password: str) -> None:
    """INVALID_ARGUMENT, PASSWORD_NOT_COMPLEX, the message naming the reason, and the password
    nowhere in the status or its trailers."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "PASSWORD_NOT_COMPLEX"
    assert error.details() == MESSAGE
    trailers = b"".join(
        value if isinstance(value, bytes) else value.encode()
        for _, value in error.trailing_metadata() or ()
    )
    assert password.strip().encode() not in trailers
    assert password.strip().lower() not in (error.details() or "").lower()


@pytest.mark.parametrize("password", COMMON, ids=["lower", "capitalised", "spaces"])
async def test_add_password_refuses_a_common_password(
    channel: grpc.aio.Channel, services: app.Services, password: str
) -> None:
    """AddPassword with a listed password (any case, surrounding spaces) is refused; the
    current password still logs in and the common one does not."""
    user = await new_user(services, CURRENT)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(channel).AddPassword(
            password_pb.AddPasswordRequest(new_password=password),
            metadata=basic(user.username, CURRENT),
        )
    assert_refused_as_common(caught.value, password)
    assert (await authorize(channel, user.username, CURRENT)).access_token
    with pytest.raises(grpc.aio.AioRpcError) as login:
        await authorize(channel, user.username, password)
    assert error_info(login.value).reason == "INVALID_CREDENTIALS"


@pytest.mark.parametrize("password", COMMON, ids=["lower", "capitalised", "spaces"])
async def test_replace_refuses_a_common_password(
    channel: grpc.aio.Channel, services: app.Services, password: str
) -> None:
    """ReplacePasswords with a listed password is refused the same way."""
    user = await new_user(services, CURRENT)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(channel).ReplacePasswords(
            password_pb.ReplacePasswordsRequest(new_password=password),
            metadata=basic(user.username, CURRENT),
        )
    assert_refused_as_common(caught.value, password)


async def test_an_uncommon_password_is_accepted(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """A password not in the list is replaced in and then logs in."""
    user = await new_user(services, CURRENT)
    await stub(channel).ReplacePasswords(
        password_pb.ReplacePasswordsRequest(new_password=UNCOMMON),
        metadata=basic(user.username, CURRENT),
    )
    assert (await authorize(channel, user.username, UNCOMMON)).access_token


async def test_the_setting_turns_the_list_off(db: Database, settings: Settings) -> None:
    """With password_blocklist off, a listed password is added and logs in."""
    async with serving(db, settings, password_blocklist=False) as (channel, services):
        user = await new_user(services, CURRENT)
        await stub(channel).AddPassword(
            password_pb.AddPasswordRequest(new_password="password1"),
            metadata=basic(user.username, CURRENT),
        )
        assert (await authorize(channel, user.username, "password1")).access_token


def test_cli_user_create_refuses_a_common_password(database_url: str) -> None:
    """`authsvc user create` with a listed password: exit 1, one line naming the reason, no
    echo of the password, and no user created."""
    env = env_with(AUTHSVC_DATABASE_URL=database_url)
    result = cli(env, "user", "create", "gina", "--password-stdin", stdin="Qwerty123\n")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line == (
        "authsvc: password is too common: it appears in a list of common or breached"
        " passwords; choose another"
    )
    assert "qwerty123" not in (result.stdout + result.stderr).lower()
    listed = cli(env, "user", "list")
    assert listed.returncode == 0 and "gina" not in listed.stdout


def test_cli_user_create_accepts_it_with_the_list_off(database_url: str) -> None:
    """AUTHSVC_PASSWORD_BLOCKLIST=false lets `authsvc user create` take a listed password."""
    env = env_with(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_PASSWORD_BLOCKLIST="false")
    result = cli(env, "user", "create", "hal", "--password-stdin", stdin="qwerty123\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("created user hal ")


def test_cli_user_create_refuses_a_password_from_the_operators_list(
    database_url: str, tmp_path: Path
) -> None:
    """AUTHSVC_PASSWORD_BLOCKLIST_FILE's passwords are refused like the shipped ones."""
    ours = tmp_path / "ours.txt"
    ours.write_text("Acme-Winter-2024\n", encoding="utf-8")
    env = env_with(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_PASSWORD_BLOCKLIST_FILE=str(ours))
    result = cli(env, "user", "create", "ida", "--password-stdin", stdin="acme-winter-2024\n")
    assert result.returncode == 1
    assert "password is too common" in result.stderr
    assert cli(env, "user", "create", "ida", "--password-stdin", stdin=UNCOMMON).returncode == 0


def test_cli_stops_on_an_unreadable_list(database_url: str, tmp_path: Path) -> None:
    """A missing AUTHSVC_PASSWORD_BLOCKLIST_FILE stops the command: exit 2, one line naming the
    variable."""
    missing = tmp_path / "missing.txt"
    env = env_with(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_PASSWORD_BLOCKLIST_FILE=str(missing))
    result = cli(env, "user", "list")
    assert result.returncode == 2
    assert result.stderr.startswith("authsvc: AUTHSVC_PASSWORD_BLOCKLIST_FILE: cannot read")
    assert result.stderr.count("\n") == 1
