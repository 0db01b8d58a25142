"""Password history and the list's bound, over real gRPC: off by default (a retired password may
come back), refused PASSWORD_REUSED for the last N retired ones when on; up to 32 passwords by
default, every one of which logs in."""

from __future__ import annotations

import itertools

import grpc
import pytest
from authsvc.v1 import password_service_pb2 as pb
from authsvc.v1 import password_service_pb2_grpc

from service.config import Settings
from service.store.db import Database
from tests.support import authorize, basic, error_info, new_user, serving


def stub(channel: grpc.aio.Channel) -> password_service_pb2_grpc.PasswordServiceStub:
    return password_service_pb2_grpc.PasswordServiceStub(channel)


async def replace(channel: grpc.aio.Channel, username: str, current: str, new: str) -> None:
    await stub(channel).ReplacePasswords(
        pb.ReplacePasswordsRequest(new_password=new), metadata=basic(username, current)
    )


async def test_history_is_off_by_default(db: Database, settings: Settings) -> None:
    """With the defaults, a password replaced away may be set again."""
    async with serving(db, settings, password_history=Settings().password_history) as (ch, svc):
        user = await new_user(svc, "first-Pass1")
        await replace(ch, user.username, "first-Pass1", "second-Pass2")
        await replace(ch, user.username, "second-Pass2", "first-Pass1")
        assert (await authorize(ch, user.username, "first-Pass1")).access_token


async def test_recent_passwords_are_refused_and_older_ones_come_back(
    db: Database, settings: Settings
) -> None:
    """With a history of 2, the last two retired passwords are refused PASSWORD_REUSED with a
    message naming the rule (not the password); the third-last is accepted again."""
    async with serving(db, settings, password_history=2) as (ch, svc):
        user = await new_user(svc, "pw-0-Aa")
        chain = ["pw-0-Aa", "pw-1-Bb", "pw-2-Cc", "pw-3-Dd"]
        for current, new in itertools.pairwise(chain):
            await replace(ch, user.username, current, new)
        for recent in ("pw-2-Cc", "pw-1-Bb"):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await replace(ch, user.username, "pw-3-Dd", recent)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_info(caught.value).reason == "PASSWORD_REUSED"
            assert "last 2 passwords" in caught.value.details()
            assert recent not in caught.value.details()
        await replace(ch, user.username, "pw-3-Dd", "pw-0-Aa")
        assert (await authorize(ch, user.username, "pw-0-Aa")).access_token


async def test_deleted_passwords_enter_the_history(db: Database, settings: Settings) -> None:
    """A password removed by DeletePassword cannot be added back while in the history."""
    async with serving(db, settings, password_history=3) as (ch, svc):
        user = await new_user(svc, "keep-Me-1")
        auth = basic(user.username, "keep-Me-1")
        await stub(ch).AddPassword(pb.AddPasswordRequest(new_password="gone-Soon-2"), metadata=auth)
        await stub(ch).DeletePassword(
            pb.DeletePasswordRequest(old_password="gone-Soon-2"), metadata=auth
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub(ch).AddPassword(
                pb.AddPasswordRequest(new_password="gone-Soon-2"), metadata=auth
            )
        assert error_info(caught.value).reason == "PASSWORD_REUSED"


async def test_a_list_holds_32_passwords_by_default_and_each_logs_in(
    db: Database, settings: Settings
) -> None:
    """With the defaults a user holds up to 32 passwords (the 33rd is TOO_MANY_PASSWORDS), and
    every one of them logs in: the oldest as well as the newest."""
    async with serving(db, settings, max_passwords=Settings().max_passwords) as (ch, svc):
        user = await new_user(svc, "pw-00")
        auth = basic(user.username, "pw-00")
        for i in range(1, 32):
            await stub(ch).AddPassword(
                pb.AddPasswordRequest(new_password=f"pw-{i:02}"), metadata=auth
            )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub(ch).AddPassword(pb.AddPasswordRequest(new_password="pw-32"), metadata=auth)
        assert error_info(caught.value).reason == "TOO_MANY_PASSWORDS"
        for password in ("pw-00", "pw-15", "pw-31"):
            assert (await authorize(ch, user.username, password)).access_token
