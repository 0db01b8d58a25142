"""PasswordService over a real gRPC channel: replace, add, delete, never the last."""

from __future__ import annotations

import grpc
import pytest
from authsvc.v1 import password_service_pb2 as pb
from authsvc.v1 import password_service_pb2_grpc

from service import app
from tests.support import authorize, basic, error_info, new_user


def stub(channel: grpc.aio.Channel) -> password_service_pb2_grpc.PasswordServiceStub:
    return password_service_pb2_grpc.PasswordServiceStub(channel)


async def can_login(channel: grpc.aio.Channel, username: str, password: str) -> bool:
    try:
        await authorize(channel, username, password)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        return False
    return True


async def test_add_password_makes_both_valid(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """After AddPassword, the old and the new password both log in."""
    user = await new_user(services, "first-pw")
    await stub(channel).AddPassword(
        pb.AddPasswordRequest(new_password="second-pw"), metadata=basic(user.username, "first-pw")
    )
    assert await can_login(channel, user.username, "first-pw")
    assert await can_login(channel, user.username, "second-pw")


async def test_replace_leaves_only_the_new_password(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """ReplacePasswords turns a list of two into a list of one: the new password."""
    user = await new_user(services, "one-pw")
    s = stub(channel)
    await s.AddPassword(
        pb.AddPasswordRequest(new_password="two-pw"), metadata=basic(user.username, "one-pw")
    )
    await s.ReplacePasswords(
        pb.ReplacePasswordsRequest(new_password="three-pw"), metadata=basic(user.username, "two-pw")
    )
    assert not await can_login(channel, user.username, "one-pw")
    assert not await can_login(channel, user.username, "two-pw")
    assert await can_login(channel, user.username, "three-pw")


async def test_delete_removes_one_password(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """DeletePassword removes the named password and keeps the others."""
    user = await new_user(services, "keep-pw")
    s = stub(channel)
    await s.AddPassword(
        pb.AddPasswordRequest(new_password="drop-pw"), metadata=basic(user.username, "keep-pw")
    )
    await s.DeletePassword(
        pb.DeletePasswordRequest(old_password="drop-pw"), metadata=basic(user.username, "keep-pw")
    )
    assert await can_login(channel, user.username, "keep-pw")
    assert not await can_login(channel, user.username, "drop-pw")


async def test_a_password_may_delete_itself(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """A caller may delete the very password it authenticated with, if another remains."""
    user = await new_user(services, "a-pw")
    s = stub(channel)
    await s.AddPassword(
        pb.AddPasswordRequest(new_password="b-pw"), metadata=basic(user.username, "a-pw")
    )
    await s.DeletePassword(
        pb.DeletePasswordRequest(old_password="a-pw"), metadata=basic(user.username, "a-pw")
    )
    assert not await can_login(channel, user.username, "a-pw")
    assert await can_login(channel, user.username, "b-pw")


async def test_cannot_delete_the_last_password(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Deleting the only password is FAILED_PRECONDITION, CANNOT_DELETE_LAST_PASSWORD."""
    user = await new_user(services, "only-pw")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(channel).DeletePassword(
            pb.DeletePasswordRequest(old_password="only-pw"),
            metadata=basic(user.username, "only-pw"),
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(caught.value).reason == "CANNOT_DELETE_LAST_PASSWORD"
    assert await can_login(channel, user.username, "only-pw")


async def test_delete_unknown_password_is_not_found(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Deleting a password that is not on the list is FAILED_PRECONDITION, PASSWORD_NOT_FOUND."""
    user = await new_user(services, "mine-pw")
    s = stub(channel)
    await s.AddPassword(
        pb.AddPasswordRequest(new_password="mine2"), metadata=basic(user.username, "mine-pw")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await s.DeletePassword(
            pb.DeletePasswordRequest(old_password="not-mine"),
            metadata=basic(user.username, "mine-pw"),
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(caught.value).reason == "PASSWORD_NOT_FOUND"


@pytest.mark.parametrize("method", ["AddPassword", "ReplacePasswords"])
async def test_new_password_equal_to_an_existing_one(
    channel: grpc.aio.Channel, services: app.Services, method: str
) -> None:
    """A new password equal to any on the list is INVALID_ARGUMENT, NEW_PASSWORD_SAME_AS_CURRENT."""
    user = await new_user(services, "p1")
    s = stub(channel)
    await s.AddPassword(
        pb.AddPasswordRequest(new_password="p2"), metadata=basic(user.username, "p1")
    )
    request = (
        pb.AddPasswordRequest(new_password="p1")
        if method == "AddPassword"
        else pb.ReplacePasswordsRequest(new_password="p1")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(s, method)(request, metadata=basic(user.username, "p2"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "NEW_PASSWORD_SAME_AS_CURRENT"


@pytest.mark.parametrize("new_password", ["", "x" * 4097])
async def test_empty_or_overlong_new_password(
    channel: grpc.aio.Channel, services: app.Services, new_password: str
) -> None:
    """An empty or over-4-KiB new password is INVALID_ARGUMENT."""
    user = await new_user(services, "pw")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(channel).AddPassword(
            pb.AddPasswordRequest(new_password=new_password), metadata=basic(user.username, "pw")
        )
    assert error_info(caught.value).reason == "INVALID_ARGUMENT"


async def test_password_of_4096_bytes_is_accepted(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Exactly 4 KiB of UTF-8 is allowed (multi-byte characters count as bytes)."""
    user = await new_user(services, "pw")
    long_password = "é" * 2048
    await stub(channel).AddPassword(
        pb.AddPasswordRequest(new_password=long_password), metadata=basic(user.username, "pw")
    )
    assert await can_login(channel, user.username, long_password)


async def test_password_calls_require_basic_credentials(channel: grpc.aio.Channel) -> None:
    """Without Basic metadata a password call is UNAUTHENTICATED, CREDENTIALS_REQUIRED."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(channel).AddPassword(pb.AddPasswordRequest(new_password="x"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(caught.value).reason == "CREDENTIALS_REQUIRED"


async def test_password_calls_require_the_right_password(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """A wrong password cannot change the list."""
    user = await new_user(services, "pw")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(channel).ReplacePasswords(
            pb.ReplacePasswordsRequest(new_password="mine now"),
            metadata=basic(user.username, "bad"),
        )
    assert error_info(caught.value).reason == "INVALID_CREDENTIALS"
    assert await can_login(channel, user.username, "pw")


async def test_removing_passwords_bumps_the_credential_version(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Replace and delete bump the user's credential version (the revocation hook); add does not."""
    user = await new_user(services, "v1")
    s = stub(channel)
    await s.AddPassword(
        pb.AddPasswordRequest(new_password="v2"), metadata=basic(user.username, "v1")
    )
    after_add = await services.users.get(user.username)
    await s.DeletePassword(
        pb.DeletePasswordRequest(old_password="v1"), metadata=basic(user.username, "v2")
    )
    after_delete = await services.users.get(user.username)
    await s.ReplacePasswords(
        pb.ReplacePasswordsRequest(new_password="v3"), metadata=basic(user.username, "v2")
    )
    after_replace = await services.users.get(user.username)
    assert after_add is not None and after_delete is not None and after_replace is not None
    assert after_add.credential_version == user.credential_version
    assert after_delete.credential_version == after_add.credential_version + 1
    assert after_replace.credential_version == after_delete.credential_version + 1
